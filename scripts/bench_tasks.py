"""The regression and multiclass flights datasets (issue 18) replayed under the retraining policies.

`ml/datasets/flights_delay_minutes.yaml` (arrival delay in minutes) and `flights_lateness.yaml` (on time /
late / very late): the same flights as flights.yaml, no tuning (calibrated drift thresholds, the defaults).
Each is replayed day by day without Airflow (`ml.replay`, the real tasks in-process) under the
drift-triggered policy, every 7 days and never; the table gives each policy's mean daily primary metric
(RMSE: lower is better; macro F1: higher is better) over the days all of them scored, retrains and
promotions.

    .venv/bin/python scripts/bench_tasks.py [--from 2013-01-01] [--to 2013-12-31] [--parallel 2]

Writes the section between `<!-- bench:tasks:start -->` and `<!-- bench:tasks:end -->` of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from ml import replay, replay_jobs, replay_report  # noqa: E402
from ml.config import Paths, load_settings  # noqa: E402

DATASETS = ("flights_delay_minutes", "flights_lateness")
POLICIES = ("drift", "every-7", "never")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--from", dest="start", default="2013-01-01")
    p.add_argument("--to", dest="end", default="2013-12-31")
    p.add_argument("--parallel", type=int, default=2)
    p.add_argument("--workdir", default=str(Paths.from_env().home / "bench-tasks"))
    p.add_argument("--doc", default=str(REPO / "docs" / "benchmarks.md"))
    args = p.parse_args(argv)
    start, end = dt.date.fromisoformat(args.start), dt.date.fromisoformat(args.end)
    started = time.perf_counter()
    for name in DATASETS:
        s = load_settings(name)
        if not (s.lake_dir / f"date={end.isoformat()}").is_dir():
            from ml.datasets.nycflights13 import prepare

            prepare(s, progress=False)
    jobs = [
        replay_jobs.Job(f"{name}-{policy}", name, policy, start, end)
        for name in DATASETS
        for policy in POLICIES
    ]
    jobs.sort(key=lambda j: replay.cost_rank(replay.parse_policy(j.policy)))
    results = replay_jobs.run_jobs(jobs, Path(args.workdir), parallel=args.parallel, echo=print)
    lines = [
        "### Other tasks: regression and multiclass (`make bench-tasks`)",
        "",
        f"{start}..{end}, replayed without Airflow (`ml.replay`), {len(jobs)} replays in "
        f"{time.perf_counter() - started:.0f} s on 2 cores. The datasets are YAML only and untuned: calibrated "
        "drift thresholds, `quality_drop` 0.05 (macro F1 drop; relative RMSE increase) beyond the day's noise, "
        "cooldown 7 days. RMSE: lower is better; `mean accuracy` is n/a for a regression.",
        "",
    ]
    for name in DATASETS:
        mine = {k: r for k, r in results.items() if r["dataset"] == name}
        same = replay.common_days(mine.values())
        summaries = [replay.summarize(mine[f"{name}-{p}"], scored_on=same) for p in POLICIES]
        metric = next(iter(mine.values())).get("metric", "AUC")
        lines += [
            f"`{name}` (primary metric: {metric})",
            "",
            replay_report.format_table(summaries, metric),
            "",
        ]
    section = "\n".join(lines)
    doc = Path(args.doc)
    doc.write_text(replay_report.replace_section(doc.read_text(), "tasks", section))
    print(section)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
