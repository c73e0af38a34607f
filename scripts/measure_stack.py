"""Measure the local stack: DB migration, start to healthy, scheduler latency per day, memory, idle CPU.

Starts a throwaway stack (tmp home, free ports) with a two-task DAG whose tasks do nothing, so a day's wall
time is the orchestration floor of the real DAG. Everything it starts is stopped at the end.

    .venv/bin/python scripts/measure_stack.py [--days 10] [--no-preload] [--env AIRFLOW__X__Y=value ...]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from devstack import airflow_api, config, processes, startup
from devstack import backfill as bf

TINY_DAG = """
import pendulum
from airflow.sdk import dag, task


@dag(schedule="@daily", start_date=pendulum.datetime(2013, 1, 1, tz="UTC"), catchup=False, max_active_runs=1)
def measure_tiny():
    @task
    def extract() -> int:
        return 1

    @task
    def load(value: int) -> int:
        return value + 1

    load(extract())


measure_tiny()
"""


def _cpu_seconds(cfg: config.StackConfig) -> float:
    import psutil

    total = 0.0
    for pid in processes.running(cfg).values():
        root = psutil.Process(pid)
        for proc in [root, *root.children(recursive=True)]:
            try:
                times = proc.cpu_times()
                total += times.user + times.system
            except psutil.NoSuchProcess:
                pass
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=10)
    parser.add_argument("--no-preload", action="store_true", help="plain fork: no ML libraries preloaded")
    parser.add_argument("--env", action="append", default=[], help="extra KEY=VALUE for every component")
    args = parser.parse_args()
    extra = dict(item.split("=", 1) for item in args.env)

    with tempfile.TemporaryDirectory(prefix="driftwatch-measure-") as tmp:
        dags = Path(tmp) / "dags"
        dags.mkdir()
        (dags / "measure_tiny.py").write_text(TINY_DAG)
        overrides = {"preload_modules": ()} if args.no_preload else {}
        cfg = config.StackConfig.for_tests(Path(tmp) / "home", dags_folder=dags, extra_env=extra, **overrides)
        out: dict = {"ports": cfg.ports, "parallelism": cfg.parallelism, "preload": bool(cfg.preload_modules)}
        try:
            out["migrate_s"] = round(startup.init(cfg, quiet=True), 1)
            out["start_s"] = startup.start(cfg, quiet=True)
            airflow_api.wait_for_dag(cfg, "measure_tiny")
            out["memory_mib_after_start"] = {k: round(v) for k, v in processes.memory(cfg).items()}
            last = f"2013-01-{args.days:02d}" if args.days <= 31 else "2013-01-31"
            result = bf.backfill(cfg, "measure_tiny", "2013-01-01", last, progress=False, timeout=900)
            per_run = [r["seconds"] for r in result["runs"]]
            out["backfill"] = {
                "runs": result["total"],
                "failed": result["failed"],
                "wall_s": result["seconds"],
                "first_run_s": round(per_run[0], 2),
                "median_run_s": round(statistics.median(per_run[1:] or per_run), 2),
            }
            out["memory_mib_after_backfill"] = {k: round(v) for k, v in processes.memory(cfg).items()}
            out["memory_mib_total"] = round(sum(out["memory_mib_after_backfill"].values()))
            time.sleep(3)
            c0 = _cpu_seconds(cfg)
            time.sleep(20)
            out["idle_cpu_percent_of_one_core"] = round(100 * (_cpu_seconds(cfg) - c0) / 20, 1)
        finally:
            t0 = time.monotonic()
            processes.stop(cfg, quiet=True)
            out["stop_s"] = round(time.monotonic() - t0, 1)
        print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
