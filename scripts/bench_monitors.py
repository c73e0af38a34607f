"""The model monitors on flights (`make bench-monitors`, also run by `make bench`).

Replays the demo range (2013-01-01..2013-03-31) with the platform's own decisions (`ml.replay`, policy
drift) twice, each in its own process and throwaway DRIFTWATCH_HOME: labels with the batch
(`label_delay_days: 0`) and labels a week late (`label_delay_days: 7`, decisions from the CBPE estimate).
Reports, per run: the error of the estimated AUC and accuracy against the realized ones (the serving
champion on each day's labels, known afterwards in both runs), how often the bias and attribution
monitors flagged a day, the champions' calibration on their holdouts, the decisions taken and the cost of
the monitor step. Rewrites the `bench:monitors` section of docs/benchmarks.md and prints it.

    .venv/bin/python scripts/bench_monitors.py [--from 2013-01-01 --to 2013-03-31]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ml import replay_jobs, replay_report
from ml.config import REPO_ROOT, Paths, load_settings

DOC = REPO_ROOT / "docs" / "benchmarks.md"
RESULTS_JSON = REPO_ROOT / "docs" / "bench_monitors.json"


def _echo(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _ensure(dataset: str, end: dt.date) -> None:
    s = load_settings(dataset)
    if s.source == "nycflights13" and not (s.lake_dir / f"date={end.isoformat()}").is_dir():
        from ml.datasets.nycflights13 import prepare

        prepare(s, progress=False)


def _days(result: dict[str, Any], start: str | None, end: str | None) -> list[dict[str, Any]]:
    return [
        d for d in result["days"] if (start is None or d["day"] >= start) and (end is None or d["day"] <= end)
    ]


def errors(result: dict[str, Any], start: str | None = None, end: str | None = None) -> dict[str, Any]:
    """Estimate vs realized over the days that have both (the realized AUC is the serving champion's on the
    day's labels, computed afterwards by the replay whatever the delay). Baseline: the champion's own
    holdout AUC taken as the day's estimate (what one assumes without any monitor)."""
    days = [
        d
        for d in _days(result, start, end)
        if d.get("estimated_auc") is not None and d.get("auc") is not None
    ]
    pairs = [(d["estimated_auc"], d["auc"], d["estimated_accuracy"], d["accuracy"]) for d in days]
    naive = [
        abs(d["champion_holdout_auc"] - d["auc"]) for d in days if d.get("champion_holdout_auc") is not None
    ]
    if not pairs:
        return {"days": 0}
    auc_err = [e - r for e, r, _, _ in pairs]
    acc_err = [e - r for _, _, e, r in pairs if e is not None and r is not None]
    abs_auc = sorted(abs(x) for x in auc_err)
    return {
        "days": len(pairs),
        "auc_mae": statistics.mean(abs(x) for x in auc_err),
        "holdout_auc_mae": statistics.mean(naive) if naive else None,
        "auc_bias": statistics.mean(auc_err),
        "auc_p90": abs_auc[int(0.9 * (len(abs_auc) - 1))],
        "auc_within_005": sum(x <= 0.05 for x in abs_auc) / len(abs_auc),
        "accuracy_mae": statistics.mean(abs(x) for x in acc_err) if acc_err else None,
        "accuracy_bias": statistics.mean(acc_err) if acc_err else None,
        "estimated_mean_auc": statistics.mean(e for e, _, _, _ in pairs),
        "realized_mean_auc": statistics.mean(r for _, r, _, _ in pairs),
    }


def flags(result: dict[str, Any], start: str | None = None, end: str | None = None) -> dict[str, Any]:
    days = _days(result, start, end)
    monitored = [d for d in days if d.get("attribution_ndcg") is not None]
    ndcg = [d["attribution_ndcg"] for d in monitored]
    return {
        "monitored_days": len(monitored),
        "bias_violations": sum(bool(d.get("bias_violation")) for d in monitored),
        "attribution_violations": sum(bool(d.get("attribution_violation")) for d in monitored),
        "ndcg_mean": statistics.mean(ndcg) if ndcg else None,
        "ndcg_min": min(ndcg) if ndcg else None,
        "retrains": sum(d["trained"] and not d["bootstrap"] for d in days),
        "promoted": sum(d["promoted"] and not d["bootstrap"] for d in days),
        "mean_auc": statistics.mean([d["auc"] for d in days if d["auc"] is not None] or [float("nan")]),
    }


def calibration(home: Path, dataset: str) -> list[dict[str, Any]]:
    out = []
    for path in sorted(
        (home / "models" / dataset).glob("v*/monitor_reference.json"), key=lambda p: int(p.parent.name[1:])
    ):
        cal = json.loads(path.read_text()).get("calibration") or {}
        if cal:
            out.append(
                {
                    "version": int(path.parent.name[1:]),
                    "ece_raw": cal["ece_raw"],
                    "ece_calibrated": cal["ece_calibrated"],
                    "rows": cal["rows"],
                }
            )
    return out


def _reuse(args: argparse.Namespace, s: Any, job: replay_jobs.Job) -> dict[str, Any]:
    """The finished replay in --same-day, checked to be the run `job` would have made."""
    path = Path(args.same_day) / replay_jobs.RESULT_FILE
    if not path.is_file():
        raise SystemExit(f"bench_monitors: --same-day {args.same_day}: no {replay_jobs.RESULT_FILE} there")
    r = json.loads(path.read_text())
    want = {
        "dataset": job.dataset,
        "policy": job.policy,
        "from": job.start.isoformat(),
        "to": job.end.isoformat(),
        "label_delay_days": 0,
    }
    got = {
        "dataset": r.get("dataset"),
        "policy": r.get("policy"),
        "from": r.get("from"),
        "to": r.get("to"),
        "label_delay_days": s.label_delay_days,
    }
    if r.get("thresholds") != asdict(s.thresholds):
        raise SystemExit(
            f"bench_monitors: --same-day {path} ran with other thresholds: {r.get('thresholds')}, "
            f"{s.name}.yaml has {asdict(s.thresholds)}"
        )
    if got != want:
        raise SystemExit(
            f"bench_monitors: --same-day {path} is not the labels-with-the-batch run: {got}, expected {want}"
        )
    _echo(f"replay {job.key}: taken from {path}")
    return r


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="flights")
    p.add_argument("--from", dest="start", default="2013-01-01")
    p.add_argument("--to", dest="end", default="2013-12-31")
    p.add_argument(
        "--demo-to", default="2013-03-31", help="the demo range ends here: figures for it and the rest"
    )
    p.add_argument("--delay", type=int, default=7, help="label_delay_days of the delayed run")
    p.add_argument("--parallel", type=int, default=2)
    p.add_argument("--workdir", default=str(Paths.from_env().home / "bench" / "monitors"))
    p.add_argument("--doc", default=str(DOC))
    p.add_argument("--results-json", default=str(RESULTS_JSON))
    p.add_argument(
        "--same-day",
        metavar="DIR",
        nargs="?",
        const=str(Paths.from_env().home / "bench" / "replays" / "drift"),
        help="take the labels-with-the-batch run from this finished replay instead of running it: a "
        "drift-policy replay of the same dataset and days with the YAML's own settings "
        "(DIR/result.json, DIR/home; without DIR, bench_replay.py's under DRIFTWATCH_HOME, "
        "which make bench passes)",
    )
    args = p.parse_args(argv)
    started = time.perf_counter()
    start, end = dt.date.fromisoformat(args.start), dt.date.fromisoformat(args.end)
    _ensure(args.dataset, end)
    s = load_settings(args.dataset)
    jobs = [
        replay_jobs.Job(
            "labels-late",
            args.dataset,
            "drift",
            start,
            end,
            overrides={"label_delay_days": args.delay, "monitoring.estimation.use_for_decisions": True},
        ),
        replay_jobs.Job(
            "labels-same-day", args.dataset, "drift", start, end, overrides={"label_delay_days": 0}
        ),
    ]
    root = Path(args.workdir)
    homes = {job.key: root / job.key / "home" for job in jobs}
    reused = _reuse(args, s, jobs[1]) if args.same_day else None
    results = replay_jobs.run_jobs(
        [j for j in jobs if not (reused and j is jobs[1])], root, parallel=args.parallel, echo=_echo
    )
    if reused:
        results[jobs[1].key], homes[jobs[1].key] = reused, Path(args.same_day) / "home"
    figures = {}
    for job in jobs:
        r = results[job.key]
        rest = (dt.date.fromisoformat(args.demo_to) + dt.timedelta(days=1)).isoformat()
        figures[job.key] = {
            "errors": errors(r, None, args.demo_to),
            "flags": flags(r, None, args.demo_to),
            "errors_rest": errors(r, rest, None),
            "flags_rest": flags(r, rest, None),
            "wall_s": r["wall_s"],
            "calibration": calibration(homes[job.key], s.name),
            "reasons": [d["reason"] for d in r["days"] if d["trained"] and not d["bootstrap"]],
        }
    section = report(args, s, figures, time.perf_counter() - started)
    doc = Path(args.doc)
    doc.write_text(replay_report.replace_section(doc.read_text(), "monitors", section))
    Path(args.results_json).write_text(
        json.dumps(
            {
                "measured": dt.date.today().isoformat(),
                "from": args.start,
                "to": args.end,
                "delay": args.delay,
                **figures,
            },
            indent=1,
            default=str,
        )
        + "\n"
    )
    print(section)
    return 0


def _f(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def report(args, s, figures: dict[str, Any], seconds: float) -> str:
    m = s.monitoring
    walls = ", ".join(f"{k} {v['wall_s']:.0f} s" for k, v in figures.items())
    late, same = figures["labels-late"], figures["labels-same-day"]
    lines = [
        f"## Model monitors: bias drift, attribution drift, performance without labels (`make bench-monitors`, "
        f"{dt.date.today()})",
        "",
        f"`scripts/bench_monitors.py`: {s.name} {args.start}..{args.end} replayed with the "
        f"platform's own decisions (`ml.replay`, policy drift: the same steps as the DAG, monitor_model "
        f"included), once with the labels in the batch and once with `label_delay_days: {args.delay}` and "
        "`monitoring.estimation.use_for_decisions: true` (until a day's labels arrive, the AUC-drop trigger "
        "uses the CBPE estimate; challengers train only on days whose labels arrived). The estimate of a day "
        "is made on that day from the champion's isotonic-calibrated scores; the realized value is the same "
        "champion on the day's labels. Figures are given for the demo range (up to "
        f"{args.demo_to}; the bias thresholds were chosen on it, at about the 95th percentile of its daily gap "
        "changes) and separately for the rest of the year. "
        f"Bias: segments {', '.join(m.bias.segments)}, values with >= {m.bias.min_rows} rows, violation when a "
        f"gap grows by more than {m.bias.max_positive_rate_gap_change} (positive-prediction rate) or "
        f"{m.bias.max_accuracy_gap_change} (accuracy) over the reference's. Attribution: label-free permutation "
        f"importance ({m.attribution.repeats} permutations, {m.attribution.rows} rows a side), violation when "
        f"nDCG < {m.attribution.min_ndcg}. Wall time {seconds / 60:.0f} min "
        f"(replays: {walls}"
        + (
            f"; labels-same-day is `make bench`'s drift-triggered replay, {args.same_day}"
            if args.same_day
            else f", {args.parallel} at a time on 2 cores"
        )
        + ").",
        "",
        "### Estimated vs realized quality of the serving champion",
        "",
        "| run | period | days | AUC: mean abs error | same, holdout AUC as the guess | AUC: mean error (est - real) "
        "| AUC: p90 abs error | days within 0.05 | accuracy: mean abs error | accuracy: mean error "
        "| mean AUC estimated / realized |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    runs = (("labels-late", f"labels {args.delay} days late"), ("labels-same-day", "labels with the batch"))
    periods = (("", f"demo range (to {args.demo_to})"), ("_rest", "rest of the year"))
    for key, label in runs:
        for suffix, period in periods:
            e = figures[key]["errors" + suffix]
            if not e.get("days"):
                continue
            lines.append(
                f"| {label} | {period} | {e['days']} | {_f(e['auc_mae'])} | {_f(e['holdout_auc_mae'])} | "
                f"{e['auc_bias']:+.3f} | {_f(e['auc_p90'])} | {100 * e['auc_within_005']:.0f}% | "
                f"{_f(e['accuracy_mae'])} | {e['accuracy_bias']:+.3f} | "
                f"{_f(e['estimated_mean_auc'])} / {_f(e['realized_mean_auc'])} |"
            )
    lines += [
        "",
        "### Flags and decisions",
        "",
        "| run | period | monitored days | bias violations | attribution violations | nDCG mean (min) | retrains "
        "| promoted | mean daily AUC |",
        "|---|---|---:|---:|---:|---|---:|---:|---:|",
    ]
    for key, label in runs:
        for suffix, period in periods:
            f = figures[key]["flags" + suffix]
            if not f["monitored_days"]:
                continue
            lines.append(
                f"| {label} | {period} | {f['monitored_days']} | {f['bias_violations']} | "
                f"{f['attribution_violations']} | {_f(f['ndcg_mean'])} ({_f(f['ndcg_min'])}) | {f['retrains']} | "
                f"{f['promoted']} | {_f(f['mean_auc'], 4)} |"
            )
    cal = same["calibration"]
    if cal:
        lines += [
            "",
            "Calibration of each champion on its own holdout (expected calibration error, 10 bins): raw scores "
            + ", ".join(f"v{c['version']} {c['ece_raw']:.3f}" for c in cal)
            + "; after the isotonic calibrator (cross-fitted on halves of the holdout days) "
            + ", ".join(f"v{c['version']} {c['ece_calibrated']:.3f}" for c in cal)
            + ".",
        ]
    reasons = late["reasons"]
    if reasons:
        lines += [
            "",
            f"Retrain reasons with the labels {args.delay} days late: "
            + "; ".join(f"`{r[:110]}`" for r in reasons[:6])
            + ("; ..." if len(reasons) > 6 else ""),
        ]
    lines += [
        "",
        "How to read it: CBPE assumes the champion's calibrated probabilities stay right on new data "
        "(covariate shift only). A positive mean error means the estimate was too optimistic: flight delays also "
        "change with the season and the day's weather (concept drift), which no label-free estimate can see; "
        "the realized value replaces the estimate in the history when the labels arrive. A single day's "
        "realized AUC on ~900 flights is itself uncertain by about +-0.02, so most of a day's error is the "
        "realized side's noise; the baseline column shows what assuming the champion's holdout AUC would give.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
