"""What the DAG file needs at parse time, and nothing more: the datasets and their schedule keys.

Imported by dags/ at parse time, so it reads the small YAML files with PyYAML only (no pandas, no full
settings validation). The environment overrides (`DRIFTWATCH__SECTION__KEY=value`) apply here as in
`load_settings`, and the sections the DAG reads (wait, retries, thresholds) take their defaults from the
same dataclasses as the settings, so the DAG, its docs and the tasks agree. A broken file is reported by
`load_settings` when a task runs, and raised here as a clear import error.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import asdict, dataclass
from typing import Any

from ml.config import datasets_dir
from ml.schema import Retries, Thresholds, apply_env_overrides, read_promotion, read_wait, read_yaml, section


@dataclass(frozen=True)
class DagSpec:
    dataset: str
    dag_id: str
    start_date: dt.date
    description: str
    wait_timeout_s: float
    poke_s: float
    earlier_days_timeout_s: float
    late_after_s: float | None  # the DAG's Deadline Alert (wait.late_after_hours); None: none
    retries: int
    retry_delay_s: float
    thresholds: dict[str, Any]
    monitoring: dict[str, Any]
    label_delay_days: int
    approval_timeout_s: float | None = (
        None  # promotion.approval: manual: the approval task's timeout; else None
    )


def dag_specs() -> list[DagSpec]:
    specs = []
    for path in sorted(datasets_dir().glob("*.yaml")):
        raw = apply_env_overrides(read_yaml(path.read_text()) or {}, os.environ)
        name = str(raw.get("name") or path.stem)
        window = raw.get("original_window") or {}
        start = raw.get("start_date") or window.get("start")
        if isinstance(start, str):
            start = dt.date.fromisoformat(start)
        if not isinstance(start, dt.date):
            raise ValueError(f"{path}: start_date (or original_window.start) must be a date YYYY-MM-DD")
        wait = read_wait(raw, str(path))
        retries: Retries = section(raw, "retries", Retries, str(path))
        thresholds: Thresholds = section(raw, "thresholds", Thresholds, str(path))
        promotion = read_promotion(raw, str(path))
        specs.append(
            DagSpec(
                dataset=name,
                dag_id=str(raw.get("dag_id") or f"retraining_pipeline__{name}"),
                start_date=start,
                description=" ".join(str(raw.get("description", "")).split()),
                wait_timeout_s=wait.timeout_minutes * 60,
                poke_s=wait.poke_seconds,
                earlier_days_timeout_s=wait.earlier_days_timeout_minutes * 60,
                late_after_s=None if wait.late_after_hours is None else float(wait.late_after_hours) * 3600,
                retries=retries.count,
                retry_delay_s=retries.delay_seconds,
                thresholds={
                    **asdict(thresholds),
                    "min_new_days": thresholds.min_new_days
                    if thresholds.min_new_days is not None
                    else int(raw.get("holdout_days") or 0),
                },
                monitoring={
                    k: dict(v) for k, v in (raw.get("monitoring") or {}).items() if isinstance(v, dict)
                },
                label_delay_days=int(raw.get("label_delay_days") or 0),
                approval_timeout_s=promotion.approval_timeout_hours * 3600
                if promotion.approval == "manual"
                else None,
            )
        )
    return specs
