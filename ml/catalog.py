"""What the DAG file needs at parse time, and nothing more: the datasets and their schedule keys.

Imported by dags/ at parse time, so it reads the small YAML files with PyYAML only (no pandas, no
settings validation); a broken file is reported by `load_settings` when a task runs, and listed here so the
DAG file can raise a clear import error for it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from ml.config import datasets_dir, read_yaml


@dataclass(frozen=True)
class DagSpec:
    dataset: str
    dag_id: str
    start_date: dt.date
    description: str
    wait_timeout_s: float
    poke_s: float
    thresholds: dict[str, Any]
    monitoring: dict[str, Any]
    label_delay_days: int


def dag_specs() -> list[DagSpec]:
    specs = []
    for path in sorted(datasets_dir().glob("*.yaml")):
        raw = read_yaml(path.read_text()) or {}
        name = str(raw.get("name") or path.stem)
        window = raw.get("original_window") or {}
        start = raw.get("start_date") or window.get("start")
        if isinstance(start, str):
            start = dt.date.fromisoformat(start)
        if not isinstance(start, dt.date):
            raise ValueError(f"{path}: start_date (or original_window.start) must be a date YYYY-MM-DD")
        wait = raw.get("wait") or {}
        specs.append(
            DagSpec(
                dataset=name,
                dag_id=str(raw.get("dag_id") or f"retraining_pipeline__{name}"),
                start_date=start,
                description=" ".join(str(raw.get("description", "")).split()),
                wait_timeout_s=float(wait.get("timeout_minutes", 60)) * 60,
                poke_s=float(wait.get("poke_seconds", 30)),
                thresholds=dict(raw.get("thresholds") or {}),
                monitoring={k: dict(v) for k, v in (raw.get("monitoring") or {}).items() if isinstance(v, dict)},
                label_delay_days=int(raw.get("label_delay_days") or 0),
            )
        )
    return specs
