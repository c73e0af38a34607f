"""Where a day's task work goes: run days in-process (ml.pipeline.run_day, the DAG's steps in the DAG's order)
and print the mean wall seconds per step, for monitored days and retrain days.

    DRIFTWATCH_HOME=/tmp/prof python scripts/profile_steps.py 2013-01-01 2013-02-15

Uses (and fills) the lake and MLflow store of DRIFTWATCH_HOME; run `driftwatch prepare flights` first.
"""

from __future__ import annotations

import collections
import datetime as dt
import functools
import sys
import time

from ml import pipeline, steps

STEPS = (
    "batch_ready",
    "validate",
    "quarantine",
    "score",
    "monitor",
    "detect",
    "decide",
    "train",
    "evaluate",
    "promote",
    "reject",
    "record",
)


def main(frm: str, to: str, dataset: str = "flights") -> None:
    spent: dict[str, float] = {}
    for name in STEPS:
        original = getattr(steps, name)

        @functools.wraps(original)
        def timed(*args, _f=original, _n=name, **kwargs):
            t0 = time.perf_counter()
            try:
                return _f(*args, **kwargs)
            finally:
                spent[_n] = spent.get(_n, 0.0) + time.perf_counter() - t0

        setattr(steps, name, timed)
    by_kind: dict[str, list[dict[str, float]]] = collections.defaultdict(list)
    day, last = dt.date.fromisoformat(frm), dt.date.fromisoformat(to)
    while day <= last:
        spent.clear()
        t0 = time.perf_counter()
        out = pipeline.run_day(dataset, day)
        total = time.perf_counter() - t0
        kind = (
            "retrain"
            if "train" in out
            else (
                "collect"
                if "drift" in out and out["drift"].get("skipped")
                else "monitored"
                if "drift" in out
                else "other"
            )
        )
        by_kind[kind].append({**spent, "total": total})
        print(
            f"{day} {kind:9s} {total:6.2f} s  " + " ".join(f"{k}={v:.2f}" for k, v in spent.items()),
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
