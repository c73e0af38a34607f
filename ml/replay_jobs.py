"""Replays in isolation: one process and one throwaway DRIFTWATCH_HOME per replay (its own history DB, MLflow
store, reports and a hard-linked copy of the lake), several at a time. `driftwatch replay` and `make bench`
start them; each process runs `ml.replay.replay` (`python -m ml.replay_jobs SPEC`).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ml import policy as policies
from ml.exceptions import BatchMissingError
from ml.replay import LOG_FILE, RESULT_FILE, replay

log = logging.getLogger(__name__)


# ---- isolation: one process and one DRIFTWATCH_HOME per replay ------------------------------------------
def link_lake(source: Path, target: Path, days: Iterable[dt.date]) -> int:
    """Give a replay its own lake: hard links of the days' data files (copies across filesystems).

    Only data files are linked (driftwatch's own `_` files are not), so the replay starts unscored.
    Returns the number of partitions linked.
    """
    from ml.data import batch_files

    n = 0
    for day in days:
        files = batch_files(source / f"date={day.isoformat()}")
        if not files:
            continue
        part = target / f"date={day.isoformat()}"
        part.mkdir(parents=True, exist_ok=True)
        for f in files:
            try:
                os.link(f, part / f.name)
            except OSError:
                shutil.copy2(f, part / f.name)
        n += 1
    return n


def isolated_env(
    home: Path, lake: Path, overrides: Mapping[str, Any] | None = None, datasets: Path | None = None
) -> dict[str, str]:
    """The environment of a replay process: every store under `home`, one OpenMP thread, no alerts.

    `overrides` are YAML keys as dotted paths (`thresholds.drift_share`), passed as DRIFTWATCH__A__B."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DRIFTWATCH_DB_URL", "MLFLOW_TRACKING_URI", "DRIFTWATCH_ALERT_TARGET")
    }
    env.update(
        DRIFTWATCH_HOME=str(home),
        DRIFTWATCH_LAKE=str(lake),
        DRIFTWATCH_DB_URL=f"sqlite:///{home / 'driftwatch.db'}",
        MLFLOW_TRACKING_URI=f"sqlite:///{home / 'mlflow' / 'mlflow.db'}",
        MLFLOW_DISABLE_TELEMETRY="true",
        DO_NOT_TRACK="true",
        OMP_NUM_THREADS="1",
        DRIFTWATCH_TASK_THREADS="1",
        PYTHONWARNINGS="ignore",
    )
    if datasets is not None:
        env["DRIFTWATCH_DATASETS"] = str(datasets)
    for key, value in (overrides or {}).items():
        env["DRIFTWATCH__" + "__".join(p.upper() for p in key.split("."))] = json.dumps(value)
    return env


@dataclass(frozen=True)
class Job:
    """One replay to run in its own process: a dataset, a policy, a day range, YAML overrides."""

    key: str  # unique name of the job: its work folder and its key in the results
    dataset: str
    policy: str
    start: dt.date
    end: dt.date
    overrides: Mapping[str, Any] | None = None
    datasets: Path | None = None  # DRIFTWATCH_DATASETS for this job (e.g. generated synthetic variants)
    source_lake: Path | None = None  # where the partitions are (default: the settings' lake)


def _start(job: Job, workdir: Path) -> tuple[subprocess.Popen, Path]:
    from ml.config import Paths, load_settings
    from ml.data import daterange

    env = isolated_env(workdir / "home", workdir / "lake", job.overrides, job.datasets)
    s = load_settings(
        job.dataset if job.datasets is None else job.datasets / f"{job.dataset}.yaml", environ=env
    )
    # the partitions come from this process's lake (DRIFTWATCH_LAKE or <home>/lake), not the replay's
    source = (job.source_lake or Paths.from_env().lake) / s.name
    if workdir.exists():
        shutil.rmtree(workdir)
    # from the original window's start even when the replay starts later: the first champion trains on it,
    # as a backfill of a later range finds those days in the lake
    linked = link_lake(
        source, workdir / "lake" / s.name, daterange(min(job.start, s.original_start), job.end)
    )
    if not linked:
        raise BatchMissingError(
            f"replay {job.key}: no partitions of {s.name} in {source} for {job.start}..{job.end}. "
            f"Write them first (`driftwatch prepare {job.dataset}`) or set DRIFTWATCH_LAKE."
        )
    spec = {
        "dataset": job.dataset,
        "policy": job.policy,
        "from": job.start.isoformat(),
        "to": job.end.isoformat(),
        "out": str(workdir / RESULT_FILE),
    }
    logf = (workdir / LOG_FILE).open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "ml.replay_jobs", json.dumps(spec)],
        env=env,
        stdout=logf,
        stderr=subprocess.STDOUT,
    )
    return proc, workdir / RESULT_FILE


def run_jobs(jobs: Sequence[Job], root: Path, *, parallel: int = 1, echo=print) -> dict[str, dict[str, Any]]:
    """Run replays in separate processes, `parallel` at a time, in the given order (put the longest first).

    Returns {job.key: result} with `process_wall_s` (spawn to exit) added. Raises RuntimeError naming the
    log of a replay that failed, after the others finished.
    """
    pending = list(jobs)
    running: list[tuple[Job, subprocess.Popen, Path, float]] = []
    results: dict[str, dict[str, Any]] = {}
    failed: list[str] = []
    while pending or running:
        while pending and len(running) < max(1, parallel):
            job = pending.pop(0)
            proc, out = _start(job, root / job.key)
            running.append((job, proc, out, time.perf_counter()))
            echo(f"replay {job.key}: started ({job.dataset}, {job.policy}, {job.start}..{job.end})")
        time.sleep(0.5)
        for item in list(running):
            job, proc, out, t0 = item
            if proc.poll() is None:
                continue
            running.remove(item)
            if proc.returncode != 0 or not out.is_file():
                log_path = out.parent / LOG_FILE
                error = last_error(log_path)
                failed.append(
                    f"{job.key} (exit {proc.returncode}: {error or 'no error line'}; log {log_path})"
                )
                echo(f"replay {job.key}: FAILED: {error or 'no error line in the log'} (see {log_path})")
                continue
            result = json.loads(out.read_text())
            result["process_wall_s"] = round(time.perf_counter() - t0, 1)
            results[job.key] = result
            echo(f"replay {job.key}: done in {result['process_wall_s']:.0f} s")
    if failed:
        raise RuntimeError("replays failed: " + "; ".join(failed))
    return results


def last_error(log: Path) -> str | None:
    """The last exception line of a replay's log ("ModelError: ..."), so a failure says what failed."""
    import re

    if not log.is_file():
        return None
    lines = log.read_text(errors="replace").splitlines()
    pattern = re.compile(r"^(?:[\w.]+\.)?\w*(?:Error|Exception|Exit|Interrupt)\b(?::\s.*)?$")
    found = next((line for line in reversed(lines) if pattern.match(line.strip())), None)
    return None if found is None else found.strip()[:500]


def _worker(spec: Mapping[str, Any]) -> None:
    """Entry point of a replay process (`python -m ml.replay_jobs SPEC`): the environment is already isolated."""
    from ml import data as lake
    from ml.day import settings_for

    s = settings_for(spec["dataset"])
    start, end = dt.date.fromisoformat(spec["from"]), dt.date.fromisoformat(spec["to"])
    days = lake.daterange(start, end)
    result = replay(spec["dataset"], policies.parse(spec["policy"]), days, progress=True)
    result["settings"] = {"yaml": str(s.yaml_path), "lake": str(s.paths.lake), "home": str(s.paths.home)}
    out = Path(spec["out"])
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(json.dumps(result, default=str))
    tmp.replace(out)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print(
            "usage: python -m ml.replay_jobs SPEC_JSON (started by run_jobs; use `driftwatch replay`)",
            file=sys.stderr,
        )
        return 2
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    _worker(json.loads(args[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
