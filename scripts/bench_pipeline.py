"""Benchmark the real DAG under the real scheduler: a backfill on a fresh stack, and where each day's time goes.

Starts a throwaway stack (tmp home, free ports, the embedded default: LocalExecutor on SQLite, MLflow on
SQLite), backfills the range, then reads every run and task instance back from the Airflow API and prints:

- wall time of the backfill and per run, by kind of day (collect, monitored without retrain, retrain,
  quarantined);
- per run: the sum of the task durations Airflow recorded vs the run's wall time (the rest is scheduling:
  the time between one task ending and the next starting);
- per task: mean duration, and the mean in-process time of the same step (`--steps`, measured by running the
  steps in this process on a copy of the history) to split a task's duration into its work and the cost of
  being a task (fork, task runner start-up, reading settings, opening the DBs, loading the model again).

    .venv/bin/python scripts/bench_pipeline.py --from 2013-01-01 --to 2013-12-31      # the year (~30 min)
    .venv/bin/python scripts/bench_pipeline.py --from 2013-01-25 --to 2013-02-14      # a quick look

Prints markdown tables (docs/benchmarks.md keeps the figures). Everything it starts is stopped at the end.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from devstack import airflow_api, config, processes, startup
from devstack import backfill as bf
from ml.config import REPO_ROOT

DAG_ID = "retraining_pipeline"


def _ts(value: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def _kind(row: dict[str, Any] | None) -> str:
    if row is None:
        return "unknown"
    if row.get("status") == "quarantined":
        return "quarantined"
    if row.get("decision") in ("retrain", "bootstrap"):
        return "retrain"
    if row.get("decision") == "collect":
        return "collect"
    return "monitored"


def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def collect(cfg: config.StackConfig, settings: Any) -> dict[str, Any]:
    from ml.history import History

    rows = {r["day"]: r for r in History(settings.history_url).days(settings.name)}
    runs = []
    for run in airflow_api.dag_runs(cfg, DAG_ID):
        start, end = _ts(run.get("start_date")), _ts(run.get("end_date"))
        tis = airflow_api.task_instances(cfg, DAG_ID, run["dag_run_id"])
        tasks, spans = {}, []
        for ti in tis:
            t0, t1 = _ts(ti.get("start_date")), _ts(ti.get("end_date"))
            if ti["state"] == "success" and t0 and t1:
                tasks[ti["task_id"]] = (t1 - t0).total_seconds()
                if start:  # seconds from the run's start: where the time between tasks goes
                    spans.append((ti["task_id"], (t0 - start).total_seconds(), (t1 - start).total_seconds()))
        day = run["logical_date"][:10]
        runs.append(
            {
                "day": day,
                "state": run["state"],
                "kind": _kind(rows.get(day)),
                "wall": (end - start).total_seconds() if start and end else None,
                "tasks": tasks,
                "task_sum": sum(tasks.values()),
                "n_tasks": len(tasks),
                "spans": sorted(spans, key=lambda x: x[1]),
            }
        )
    return {"runs": sorted(runs, key=lambda r: r["day"])}


def report(data: dict[str, Any], total_s: float, in_process: dict[str, dict[str, float]] | None) -> str:
    runs = [r for r in data["runs"] if r["wall"] is not None]
    by_kind: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in runs:
        by_kind[r["kind"]].append(r)
    out = [
        f"Backfill of {len(runs)} runs in {total_s:.0f} s ({total_s / 60:.1f} min), "
        f"{total_s / max(1, len(runs)):.1f} s per run; failed runs: "
        f"{sum(r['state'] != 'success' for r in data['runs'])}.",
        "",
    ]
    out.append("| day kind | runs | wall s mean | p50 | p90 | tasks run | task s (sum) | scheduling s |")
    out.append("|---|---:|---:|---:|---:|---:|---:|---:|")
    for kind in ("collect", "monitored", "retrain", "quarantined", "unknown"):
        rs = by_kind.get(kind)
        if not rs:
            continue
        walls = [r["wall"] for r in rs]
        sums = [r["task_sum"] for r in rs]
        out.append(
            f"| {kind} | {len(rs)} | {statistics.mean(walls):.1f} | {_pct(walls, 0.5):.1f} | {_pct(walls, 0.9):.1f} "
            f"| {statistics.mean(r['n_tasks'] for r in rs):.1f} | {statistics.mean(sums):.1f} "
            f"| {statistics.mean(w - s for w, s in zip(walls, sums, strict=True)):.1f} |"
        )
    per_task: dict[str, list[float]] = defaultdict(list)
    for r in runs:
        if r["kind"] in ("monitored", "retrain"):
            for task, sec in r["tasks"].items():
                per_task[task].append(sec)
    out += [
        "",
        "| task (monitored + retrain days) | runs | duration s mean | p90 | in-process step s |",
        "|---|---:|---:|---:|---:|",
    ]
    for task, secs in sorted(per_task.items(), key=lambda kv: -statistics.mean(kv[1])):
        ip = (in_process or {}).get(task, {}).get("mean")  # profile_steps keys its figures by task id
        out.append(
            f"| {task} | {len(secs)} | {statistics.mean(secs):.2f} | {_pct(secs, 0.9):.2f} | "
            f"{'' if ip is None else f'{ip:.2f}'} |"
        )
    return "\n".join(out)


def in_process_steps(home: Path, frm: dt.date, to: dt.date, lake: Path) -> dict[str, dict[str, float]]:
    """Run the same days in this process (fresh home, same lake), timing each step after a warm-up."""
    import subprocess
    import sys

    env = {
        **os.environ,
        "DRIFTWATCH_HOME": str(home),
        "DRIFTWATCH_LAKE": str(lake),
        "MLFLOW_TRACKING_URI": "",
    }
    env.pop("MLFLOW_TRACKING_URI")
    out = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "profile_steps.py"), frm.isoformat(), to.isoformat()],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    per_step: dict[str, list[float]] = defaultdict(list)
    for line in out.splitlines():
        if line[:4].isdigit() and " s  " in line and ("monitored" in line or "retrain" in line):
            for part in line.split(" s  ", 1)[1].split():
                name, value = part.split("=")
                per_step[name].append(float(value))
    return {k: {"mean": statistics.mean(v)} for k, v in per_step.items()}


def storage(reports: Path, artifacts: Path, data: dict[str, Any]) -> str:
    """What the backfilled days left on disk: the report store and the MLflow artifacts, per day run."""

    def size(root: Path, pattern: str = "*") -> int:
        return sum(f.stat().st_size for f in root.rglob(pattern) if f.is_file()) if root.is_dir() else 0

    days = max(1, len(data.get("runs") or []))
    per_version = ("model.skops", "reference.parquet", "reference_scores.parquet", "holdout_scores.parquet")
    parts = {
        "report store": size(reports),
        "of which drift.html": size(reports, "drift.html"),
        "MLflow artifacts": size(artifacts),
        "of which the versions' model and data": sum(size(artifacts, name) for name in per_version),
    }
    shown = "; ".join(f"{k} {v / 1e6:.1f} MB ({v / 1e6 / days:.3f} MB/day)" for k, v in parts.items())
    return f"Storage after {days} days: {shown}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--from", dest="frm", default="2013-01-01")
    parser.add_argument("--to", default="2013-12-31")
    parser.add_argument("--steps", action="store_true", help="also time the steps in-process (adds a replay)")
    parser.add_argument("--lake", help="an existing prepared lake (default: prepare one in the tmp home)")
    parser.add_argument("--json", help="write the raw figures here")
    parser.add_argument("--history-png", help="also copy the model-history plot of the backfilled range here")
    args = parser.parse_args()
    frm, to = dt.date.fromisoformat(args.frm), dt.date.fromisoformat(args.to)

    tmp = Path(tempfile.mkdtemp(prefix="dw-bench-"))
    lake = Path(args.lake) if args.lake else tmp / "lake"
    cfg = config.StackConfig.for_tests(tmp / "home", extra_env={"DRIFTWATCH_LAKE": str(lake)})
    os.environ.update(
        {
            "DRIFTWATCH_HOME": str(cfg.home),
            "DRIFTWATCH_LAKE": str(lake),
            "MLFLOW_TRACKING_URI": cfg.mlflow_tracking_uri,
            "MLFLOW_DISABLE_TELEMETRY": "true",
        }
    )
    from ml.config import load_settings

    settings = load_settings("flights")
    if not args.lake:
        from ml.datasets.nycflights13 import prepare

        prepare(settings)
    try:
        startup.init(cfg, quiet=True)
        t0 = time.monotonic()
        startup.start(cfg, quiet=True)
        started = time.monotonic() - t0
        airflow_api.wait_for_dag(cfg, DAG_ID)
        t0 = time.monotonic()
        result = bf.backfill(cfg, DAG_ID, frm, to, progress=True, timeout=4 * 3600)
        total = time.monotonic() - t0
        data = collect(cfg, settings)
        memory = processes.memory(cfg)
    finally:
        processes.stop(cfg, quiet=True)
    in_process = in_process_steps(tmp / "inprocess", frm, to, lake) if args.steps else None
    print(f"\nStack start to healthy: {started:.1f} s; memory (PSS) at the end: {memory}")
    print(storage(settings.paths.reports / settings.name, cfg.mlflow_artifacts, data))
    print(f"Backfill result: {result['success']} succeeded, {result['failed']} failed.\n")
    print(report(data, total, in_process))
    from ml.plots import write_history

    png = write_history(settings)["png"]
    print(f"\nHistory plot: {png}")
    if args.history_png:
        import shutil

        shutil.copyfile(png, args.history_png)
    if args.json:
        Path(args.json).write_text(json.dumps({**data, "total_s": total, "in_process": in_process}, indent=1))


if __name__ == "__main__":
    main()
