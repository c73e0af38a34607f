"""Golden files of the platform's decisions: what a replay of a day range decided, day by day.

A refactor must not change a decision by accident. `tests/integration/test_golden.py` replays the demo range
(2013-01-01..03-31: bootstrap on Jan 31, champion v4, holdout AUC 0.7010, 4 retrains: 3 promoted, 1
rejected) and compares every day with tests/golden/flights_2013-01-01_2013-03-31.json. When a change is
meant to change decisions, say why in its commit and rewrite the file:

    .venv/bin/python tests/golden_decisions.py --write     # ~5 min on 2 cores
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

GOLDEN = Path(__file__).resolve().parent / "golden"
DATASET = "flights"
START, END = dt.date(2013, 1, 1), dt.date(2013, 3, 31)
# what a day decided, and the numbers it decided on (rounded: the last digits of a float are not a decision)
DAY_KEYS = (
    "status",
    "champion",
    "decision",
    "trained",
    "bootstrap",
    "version",
    "promoted",
    "rejected",
    "failed",
)
ROUNDED = {"drift_share": 4, "quality_drop": 4, "auc": 4, "champion_holdout_auc": 4}


def golden_path(start: dt.date = START, end: dt.date = END) -> Path:
    return GOLDEN / f"{DATASET}_{start}_{end}.json"


def decisions(result: dict[str, Any]) -> dict[str, Any]:
    """The golden content of a replay result (ml.replay's result.json)."""
    days = {}
    for d in result["days"]:
        row = {k: d.get(k) for k in DAY_KEYS}
        row.update({k: None if d.get(k) is None else round(float(d[k]), n) for k, n in ROUNDED.items()})
        days[d["day"]] = row
    trained = [d for d in result["days"] if d.get("trained")]
    last = max(
        (d for d in result["days"] if d.get("champion") is not None), key=lambda d: d["day"], default=None
    )
    return {
        "dataset": result["dataset"],
        "policy": result["policy"],
        "from": result["from"],
        "to": result["to"],
        "summary": {
            "retrains": len(trained),
            "promoted": sum(bool(d.get("promoted")) for d in trained),
            "rejected": sum(bool(d.get("rejected")) for d in trained),
            "retrain_days": [d["day"] for d in trained],
            "champion_on_last_day": last["champion"] if last else None,
            "its_holdout_auc": round(float(last["champion_holdout_auc"]), 4) if last else None,
        },
        "days": days,
    }


def replay(
    workdir: Path, start: dt.date = START, end: dt.date = END, source_lake: Path | None = None
) -> dict:
    """Replay the range under the drift-triggered policy in a fresh home (its own process) and return the
    result; the partitions come from `source_lake` (default: this process's lake)."""
    from ml.replay_jobs import Job, run_jobs

    job = Job(key="golden", dataset=DATASET, policy="drift", start=start, end=end, source_lake=source_lake)
    out = run_jobs([job], workdir, echo=lambda *a, **k: None)["golden"]
    if "days" not in out:
        log = workdir / "golden" / "replay.log"
        raise RuntimeError(f"the replay failed: {out}\n{log.read_text()[-4000:] if log.is_file() else ''}")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--write", action="store_true", help="replay and rewrite the golden file")
    p.add_argument(
        "--from-result", type=Path, help="take an existing replay result.json instead of replaying"
    )
    p.add_argument("--workdir", type=Path, default=Path("/tmp/driftwatch-golden"))
    args = p.parse_args(argv)
    result = json.loads(args.from_result.read_text()) if args.from_result else replay(args.workdir)
    got = decisions(result)
    path = golden_path()
    if args.write:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
        print(f"wrote {path}: {got['summary']}")
        return 0
    want = json.loads(path.read_text())
    changed = sorted(day for day in want["days"] if want["days"][day] != got["days"].get(day))
    print(f"{len(changed)} days differ from {path}" + (f": {changed[:10]}" if changed else ""))
    return 1 if changed or want["summary"] != got["summary"] else 0


if __name__ == "__main__":
    sys.exit(main())
