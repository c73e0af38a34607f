"""Where a day's task work goes: run days in-process (`ml.runner`, the daily flow of ml/flow.py, as the DAG
runs it) and print the mean wall seconds per step, for collecting, monitored and retrain days.

    DRIFTWATCH_HOME=/tmp/prof python scripts/profile_steps.py 2013-01-01 2013-02-15

Uses (and fills) the lake and MLflow store of DRIFTWATCH_HOME; run `driftwatch prepare flights` first.
"""

from __future__ import annotations

import collections
import datetime as dt
import sys
import time

from ml import flow, runner

STEPS = [s.id for s in flow.STEPS if s.kind != "empty"]


def main(frm: str, to: str, dataset: str = "flights") -> None:
    by_kind: dict[str, list[dict[str, float]]] = collections.defaultdict(list)
    day, last = dt.date.fromisoformat(frm), dt.date.fromisoformat(to)
    while day <= last:
        t0 = time.perf_counter()
        out = runner.run_day(dataset, day)
        total = time.perf_counter() - t0
        drift = out.output("detect_drift") or {}
        kind = (
            "retrain"
            if "train_challenger" in out.outputs
            else ("collect" if drift.get("skipped") else "monitored")
        )
        by_kind[kind].append({**out.wall_s, "total": total})
        print(
            f"{day} {kind:9s} {total:6.2f} s  " + " ".join(f"{k}={v:.2f}" for k, v in out.wall_s.items()),
            flush=True,
        )
        day += dt.timedelta(days=1)
    print("\n| kind | days | " + " | ".join(STEPS) + " | total |")
    print("|---|---:|" + "---:|" * (len(STEPS) + 1))
    for kind, rows in by_kind.items():
        means = [sum(r.get(s, 0.0) for r in rows) / len(rows) for s in (*STEPS, "total")]
        print(f"| {kind} | {len(rows)} | " + " | ".join(f"{m:.2f}" for m in means) + " |")


if __name__ == "__main__":
    main(*sys.argv[1:])
