"""Defaults on other shapes: what driftwatch does with a dataset nobody tuned, by batch size.

Two parts, both with the defaults only (a dataset YAML without `thresholds`, `validation` or `drift`):

1. The drift flag alone, on many days (fast: Evidently's stat tests, no pipeline): for batches of 50 to
   5,000 rows, with and without a day effect (the rows of a day alike, as one day's weather), the share of
   100 drift-free days flagged by Evidently's default thresholds and by the calibrated ones, and of 20
   shifted days flagged by the calibrated ones.
2. The whole daily flow (the real tasks in-process, `ml.replay`: Great Expectations, Evidently, training,
   the MLflow registry) on generated streams of 21 original days, 100 drift-free monitored days and 25 days
   after an abrupt shift: quarantined days, false alarms per 100 drift-free batches, detection delay, the
   first retrain after the onset and whether it was promoted. One stream is shaped like the weather data of
   issue 18: 60 rows a day, 8 numeric features, dates from 1949.

    .venv/bin/python scripts/bench_defaults.py [--quick] [--parallel 2] [--doc docs/benchmarks.md]

Writes the section between `<!-- bench:defaults:start -->` and `<!-- bench:defaults:end -->`.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import sys
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from ml import replay, replay_jobs, replay_report  # noqa: E402
from ml.config import load_settings  # noqa: E402

ORIGINAL_DAYS, CLEAN_DAYS, AFTER_DAYS = 21, 100, 25
SIZES = (50, 200, 1000, 5000)

BASE: dict[str, Any] = {
    "description": "generated stream for scripts/bench_defaults.py (defaults only)",
    "source": "synthetic",
    "date_column": "date",
    "label": {"column": "label", "positive": 1},
    "features": {"numeric": ["x1", "x2", "x3", "x4", "x5"], "categorical": ["segment"]},
    "drop": ["row_id"],
    "keys": ["date", "row_id"],
    "holdout_days": 7,
    "synthetic": {
        "seed": 11,
        "features": {
            "x1": {"dist": "normal", "mean": 0, "std": 1},
            "x2": {"dist": "normal", "mean": 0, "std": 1},
            "x3": {"dist": "normal", "mean": 0, "std": 1},
            "x4": {"dist": "normal", "mean": 0, "std": 1},
            "x5": {"dist": "uniform", "low": 0, "high": 10},
            "segment": {"dist": "categorical", "values": ["a", "b", "c"], "p": [0.5, 0.3, 0.2]},
        },
        "label": {
            "intercept": -1.5,
            "coef": {"x1": 1.2, "x2": -0.8, "x3": 0.6, "x5": 0.15},
            "effects": {"segment": {"a": 0.0, "b": 0.6, "c": -0.6}},
        },
        "drift": {"kind": "covariate", "speed": "abrupt", "shift": {"x1": 1.5, "x2": 1.5, "x4": 1.5}},
    },
}


def weather_like() -> dict[str, Any]:
    """60 rows a day, 8 standardized numeric features, days alike within, from 1949; the label rule turns at
    the onset (concept drift: nothing moves in the features, the AUC drops)."""
    names = [f"w{i}" for i in range(1, 9)]
    raw = copy.deepcopy(BASE)
    raw["features"] = {"numeric": names, "categorical": []}
    raw["synthetic"] = {
        "seed": 1949,
        "day_effect": 0.3,
        "features": {n: {"dist": "normal", "mean": 0, "std": 1} for n in names},
        "label": {"intercept": -0.5, "coef": {"w1": 1.5, "w2": -1.0, "w3": 0.8, "w4": 0.5}},
        "drift": {"kind": "concept", "speed": "abrupt", "coef": {"w1": -1.5, "w2": 1.0}},
    }
    return raw


def streams(quick: bool) -> dict[str, dict[str, Any]]:
    """name -> YAML of each generated stream."""
    out = {}
    start = dt.date(2024, 1, 1)
    sizes = (60, 1000) if quick else SIZES
    for rows in sizes:
        for effect in (0.0, 0.3) if rows == 1000 and not quick else (0.0,):
            raw = copy.deepcopy(BASE)
            raw["synthetic"]["rows_per_day"] = rows
            raw["synthetic"]["day_effect"] = effect
            out[f"rows{rows}" + ("_days_alike" if effect else "")] = _dated(raw, start)
    out["weather_like_1949"] = _dated(dict(weather_like(), **{}), dt.date(1949, 1, 1), rows=60)
    return out


def _dated(raw: dict[str, Any], start: dt.date, rows: int | None = None) -> dict[str, Any]:
    clean_end = start + dt.timedelta(days=ORIGINAL_DAYS + CLEAN_DAYS - 1)
    raw = copy.deepcopy(raw)
    raw["start_date"] = start
    raw["original_window"] = {"start": start, "end": start + dt.timedelta(days=ORIGINAL_DAYS - 1)}
    raw["synthetic"].update(start=start, days=ORIGINAL_DAYS + CLEAN_DAYS + AFTER_DAYS)
    if rows is not None:
        raw["synthetic"]["rows_per_day"] = rows
    raw["synthetic"]["drift"]["onset"] = clean_end + dt.timedelta(days=1)
    return raw


# ---- part 1: the drift flag alone ------------------------------------------------------------------------
def flag_rates(quick: bool) -> list[dict[str, Any]]:
    import numpy as np

    from ml import calibration, drift
    from ml.datasets import synthetic

    rows_out = []
    root = Path("/tmp/driftwatch-bench-defaults-flags")
    for rows in SIZES:
        for effect in (0.0, 0.3):
            raw = _dated(copy.deepcopy(BASE), dt.date(2024, 1, 1))
            raw["synthetic"].update(rows_per_day=rows, day_effect=effect)
            raw["name"] = f"flags{rows}"
            path = root / f"flags{rows}_{effect}.yaml"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(yaml.safe_dump(raw, sort_keys=False))
            s = load_settings(path, environ={})
            stream = synthetic.stream_spec(s)
            days = [stream.start + dt.timedelta(days=i) for i in range(stream.days)]
            frames = {d: drift._model_columns(s, synthetic.generate_day(s, stream, d), None) for d in days}
            ref_days = days[:ORIGINAL_DAYS]
            clean = days[ORIGINAL_DAYS : ORIGINAL_DAYS + (30 if quick else CLEAN_DAYS)]
            shifted = days[ORIGINAL_DAYS + CLEAN_DAYS :][:20]
            import pandas as pd

            reference = pd.concat([frames[d] for d in ref_days], ignore_index=True)
            labels = pd.Series(np.repeat([d.isoformat() for d in ref_days], rows))
            started = time.perf_counter()
            cal = calibration.calibrate(
                reference,
                numeric=list(s.numeric),
                categorical=list(s.categorical),
                days=labels,
                methods={},
                false_alarm_rate=0.01,
                drift_share=0.5,
            )
            seconds = time.perf_counter() - started
            tests = {
                c: calibration._stattest(v["method"], c in s.categorical) for c, v in cal["columns"].items()
            }

            def share(
                day: dt.date, limits: dict[str, float], tests=tests, reference=reference, s=s, frames=frames
            ) -> bool:
                n = 0
                for col, test in tests.items():
                    score = calibration._score(test, reference[col], frames[day][col], col in s.categorical)
                    n += score >= limits[col]
                return n / len(tests) >= 0.5

            calibrated = {c: v["threshold"] for c, v in cal["columns"].items()}
            default = dict.fromkeys(calibrated, 0.1)
            rows_out.append(
                {
                    "rows": rows,
                    "day_effect": effect,
                    "default_clean": float(np.mean([share(d, default) for d in clean])),
                    "calibrated_clean": float(np.mean([share(d, calibrated) for d in clean])),
                    "calibrated_shifted": float(np.mean([share(d, calibrated) for d in shifted])),
                    "clean_days": len(clean),
                    "x1_threshold": calibrated["x1"],
                    "segment_threshold": calibrated["segment"],
                    "calibration_s": seconds,
                }
            )
            print(rows_out[-1], flush=True)
    return rows_out


# ---- part 2: the whole flow ------------------------------------------------------------------------------
def replays(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    from dataclasses import replace

    from ml.datasets import synthetic

    root = Path(args.workdir)
    datasets, lake = root / "datasets", root / "lake"
    datasets.mkdir(parents=True, exist_ok=True)
    jobs, onsets = [], {}
    for name, raw in streams(args.quick).items():
        raw = {"name": name, "registered_model": name.replace("_", "-"), **raw}
        path = datasets / f"{name}.yaml"
        path.write_text(yaml.safe_dump(raw, sort_keys=False))
        s = load_settings(path, environ={})
        s = s.with_overrides(paths=replace(s.paths, lake=lake))
        synthetic.prepare(s, force=False, progress=False)
        stream = synthetic.stream_spec(s)
        onsets[name] = (stream.drift.onset, stream.rows_per_day, len(s.features), stream)
        jobs.append(
            replay_jobs.Job(
                name, name, "drift", s.original_start, stream.end, datasets=datasets, source_lake=lake
            )
        )
    jobs.sort(key=lambda j: -onsets[j.key][1])  # the largest batches first
    results = replay_jobs.run_jobs(jobs, root / "replays", parallel=args.parallel, echo=print)
    out = {}
    for name, result in results.items():
        onset, rows, n_features, stream = onsets[name]
        found = replay.detection(result, onset)
        days = result["days"]
        after = [d for d in days if dt.date.fromisoformat(d["day"]) >= onset]
        retrain = next((d for d in after if d.get("trained")), None)
        retrains_after = [
            {
                "day": d["day"],
                "promoted": bool(d.get("promoted")),
                "holdout_new_days": _new_in_holdout(d, after),
            }
            for d in after
            if d.get("trained")
        ]
        out[name] = {
            "rows": rows,
            "features": n_features,
            "start": stream.start.isoformat(),
            "kind": stream.drift.kind,
            "quarantined": sum(d["status"] != "accepted" for d in days),
            "days": len(days),
            **found,
            "first_retrain": retrain["day"] if retrain else None,
            "first_retrain_batches": None
            if retrain is None
            else sum(1 for d in after if d["day"] < retrain["day"] and d["status"] == "accepted"),
            "promoted": bool(retrain and retrain.get("promoted")),
            "retrains_after": retrains_after,
            "wall_s": result.get("wall_s"),
        }
        print(name, out[name], flush=True)
    return out


def _new_in_holdout(day: dict[str, Any], after: list[dict[str, Any]]) -> int:
    """Accepted days from the onset up to `day` (its holdout's last days): how much of the shift it had seen."""
    return sum(1 for d in after if d["day"] <= day["day"] and d["status"] == "accepted")


def report(flags: list[dict[str, Any]], flows: dict[str, dict[str, Any]]) -> str:
    lines = [
        "### Defaults on other shapes (`make bench-defaults`)",
        "",
        "Generated streams with the defaults only: no `thresholds`, `validation` or `drift` section in the YAML "
        "(`scripts/bench_defaults.py`). Goals (issue 18): no plausible batch quarantined, <= 1 false alarm per "
        "100 drift-free batches, an abrupt shift detected within 3 batches and retrained on once the holdout has "
        "seen it.",
        "",
    ]
    if flags:
        lines += [
            "The drift flag alone (a day is flagged when >= half of its 6 features drift; 21 reference days; "
            f"{flags[0]['clean_days']} drift-free days, 20 days after a 1.5 sd shift of 3 features):",
            "",
            "| rows a day | days alike | flagged, Evidently's 0.1 | flagged, calibrated | shifted days flagged, calibrated | x1 threshold | segment threshold | calibration |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for f in flags:
            lines.append(
                f"| {f['rows']:,} | {'yes (0.3 sd)' if f['day_effect'] else 'no'} | {f['default_clean']:.0%} | "
                f"{f['calibrated_clean']:.0%} | {f['calibrated_shifted']:.0%} | {f['x1_threshold']:.3f} | "
                f"{f['segment_threshold']:.3f} | {f['calibration_s']:.1f} s |"
            )
        lines.append("")
    if flows:
        lines += [
            "The whole daily flow (`ml.replay`: validation, scoring, monitors, drift, decide, train, evaluate, "
            f"promote) on {ORIGINAL_DAYS} original days, {CLEAN_DAYS} drift-free days, {AFTER_DAYS} days after "
            "the onset. False alarm: a drift-free day whose decision crossed a threshold (drift share, or an AUC "
            "drop beyond its noise); delay: batches from the onset to the first crossing (0 = the onset day).",
            "",
            "| stream | rows a day | features | from | drift | quarantined | false alarms | false retrains | detection delay | retrains after the onset (shifted days seen; promoted?) | wall |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for name, r in flows.items():
            delay = "not detected" if r["delay"] is None else f"{r['delay']} batches"
            retrains = ", ".join(
                f"{x['day'][5:]} ({x['holdout_new_days']}; {'yes' if x['promoted'] else 'no'})"
                for x in r.get("retrains_after", [])
            )
            lines.append(
                f"| {name} | {r['rows']:,} | {r['features']} | {r['start']} | {r['kind']} | {r['quarantined']} of "
                f"{r['days']} | {r['false_alarms']} in {r['drift_free_batches']} | {r['false_retrains']} | {delay} | "
                f"{retrains or 'none'} | {r['wall_s'] or 0:.0f} s |"
            )
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="two batch sizes and 30 drift-free days in part 1")
    p.add_argument("--parallel", type=int, default=2)
    p.add_argument("--workdir", default="/tmp/driftwatch-bench-defaults")
    p.add_argument("--doc", default=str(REPO / "docs" / "benchmarks.md"))
    p.add_argument("--no-flow", action="store_true", help="part 1 only")
    p.add_argument("--no-flags", action="store_true", help="part 2 only")
    p.add_argument(
        "--report-only", action="store_true", help="rewrite the section from the last run's figures"
    )
    args = p.parse_args(argv)
    saved = Path(args.workdir) / "figures.json"
    if args.report_only:
        figures = json.loads(saved.read_text())
        flags, flows = figures["flags"], figures["flows"]
    else:
        flags = [] if args.no_flags else flag_rates(args.quick)
        flows = {} if args.no_flow else replays(args)
        saved.parent.mkdir(parents=True, exist_ok=True)
        saved.write_text(json.dumps({"flags": flags, "flows": flows}, indent=1, default=str))
    section = report(flags, flows)
    doc = Path(args.doc)
    doc.write_text(replay_report.replace_section(doc.read_text(), "defaults", section))
    print(section)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
