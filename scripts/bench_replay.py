"""Prove it: retraining effectiveness and cost against simpler policies (`make bench`).

Replays a dataset (flights, 2013) day by day without Airflow under each policy of `ml.replay` (never,
every day, every 7 days, every 30 days, drift-triggered), each in its own process and throwaway
DRIFTWATCH_HOME, two at a time (one core each); replays generated streams with a known drift onset (the
synthetic adapter, `ml/datasets/synthetic_abrupt.yaml` and variants of its `synthetic.drift` section) for
the detection delay and false alarms; then an Airflow backfill of the
same days alone under the real scheduler (`scripts/bench_pipeline.py`), for the orchestration overhead. Regenerates the section between `<!-- bench:replay:start -->` and `<!-- bench:replay:end -->`
of docs/benchmarks.md and docs/replay_auc.png, and prints the tables.

    .venv/bin/python scripts/bench_replay.py            # make bench (~1 h 45 min on 2 cores)
    .venv/bin/python scripts/bench_replay.py --no-airflow   # reuse the saved Airflow figures
    .venv/bin/python scripts/bench_replay.py --tune     # make bench-tune: drift thresholds from Jan-Apr only

`--tune` replays Jan-Apr under a grid of drift thresholds (and never retrain, for reference), picks
one by the rule in `ml.replay.choose_thresholds`, writes docs/bench_tuning.json and the
`bench:tuning` section; `make bench` then also replays the tuned thresholds when they differ from the YAML's.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from ml import replay, replay_jobs, replay_report
from ml.config import BUNDLED_DATASETS, REPO_ROOT, Paths, load_settings

DOC = REPO_ROOT / "docs" / "benchmarks.md"
PLOT = REPO_ROOT / "docs" / "replay_auc.png"
AIRFLOW_JSON = REPO_ROOT / "docs" / "bench_airflow_year.json"
TUNING_JSON = REPO_ROOT / "docs" / "bench_tuning.json"
RESULTS_JSON = REPO_ROOT / "docs" / "bench_replay.json"
THRESHOLD_KEYS = ("drift_share", "quality_drop", "cooldown_days")

# the tuning grid: (drift_share, quality_drop, cooldown_days); the YAML's own values are always added
GRID = [(0.5, 0.05, 7), (0.5, 0.08, 7), (0.5, 0.05, 14), (0.5, 0.08, 14), (0.5, 0.10, 14)]

# streams with a known onset: the bundled YAML (abrupt covariate drift) and variants of its drift section
SYNTHETIC_BASE = "synthetic_abrupt"
CALIBRATED = {"drift.calibrate": True, "drift.columns": {}}
SYNTHETIC_VARIANTS: dict[str, dict[str, Any]] = {
    "synthetic_none": {"days": 121, "drift": {"kind": "none"}},
    "synthetic_abrupt": {"days": 75},
    "synthetic_gradual": {
        "days": 75,
        "drift": {
            "kind": "covariate",
            "speed": "gradual",
            "onset": "2024-02-15",
            "ramp_days": 20,
            "shift": {"x1": 1.5, "x2": 1.5, "x4": 1.5},
        },
    },
    "synthetic_concept": {
        "days": 75,
        "drift": {
            "kind": "concept",
            "speed": "abrupt",
            "onset": "2024-02-15",
            "coef": {"x1": -1.2, "x2": 0.8},
        },
    },
    "synthetic_concept_gradual": {
        "days": 75,
        "drift": {
            "kind": "concept",
            "speed": "gradual",
            "onset": "2024-02-15",
            "ramp_days": 20,
            "coef": {"x1": -1.2, "x2": 0.8},
        },
    },
}


def _echo(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _ensure_flights(dataset: str) -> None:
    s = load_settings(dataset)
    if s.source == "nycflights13" and not (s.lake_dir / "date=2013-12-30").is_dir():
        from ml.datasets.nycflights13 import prepare

        prepare(s, progress=False)


def _thresholds(overrides: dict[str, Any] | None, yaml_values: dict[str, Any]) -> str:
    values = {
        **{k: yaml_values[k] for k in THRESHOLD_KEYS},
        **{k.split(".")[-1]: v for k, v in (overrides or {}).items()},
    }
    return f"drift_share {values['drift_share']}, quality_drop {values['quality_drop']}, cooldown {values['cooldown_days']} d"


def _grid_overrides(share: float, drop: float, cooldown: int) -> dict[str, Any]:
    return {
        "thresholds.drift_share": share,
        "thresholds.quality_drop": drop,
        "thresholds.cooldown_days": cooldown,
    }


# ---- tuning ---------------------------------------------------------------------------------------------
def tune(args: argparse.Namespace) -> None:
    s = load_settings(args.dataset)
    yaml_t = {k: getattr(s.thresholds, k) for k in THRESHOLD_KEYS}
    start, end = dt.date.fromisoformat(args.start), dt.date.fromisoformat(args.split) - dt.timedelta(days=1)
    grid = [
        tuple(yaml_t[k] for k in THRESHOLD_KEYS),
        *[g for g in GRID if g != tuple(yaml_t[k] for k in THRESHOLD_KEYS)],
    ]
    # the every-day policy retrains on every scored day by definition: its count is the budget's base, so
    # it is not replayed here (its AUC over these months is in the bench's "tuning months" table)
    jobs = []
    for i, g in enumerate(grid):
        jobs.append(
            replay_jobs.Job(f"drift-{i}", args.dataset, "drift", start, end, overrides=_grid_overrides(*g))
        )
    jobs.append(replay_jobs.Job("never", args.dataset, "never", start, end))
    t0 = time.perf_counter()
    results = replay_jobs.run_jobs(jobs, Path(args.workdir) / "tune", parallel=args.parallel, echo=_echo)
    never = replay.summarize(results["never"])
    daily = {"retrains": never["days_scored"]}
    candidates = []
    for i, g in enumerate(grid):
        m = replay.summarize(results[f"drift-{i}"])
        candidates.append({"thresholds": dict(zip(THRESHOLD_KEYS, g, strict=True)), **m})
    chosen = replay.choose_thresholds(candidates, reference=daily, budget_share=args.budget)
    out = {
        "dataset": s.name,
        "from": start.isoformat(),
        "to": end.isoformat(),
        "measured": dt.date.today().isoformat(),
        "rule": replay.CHOICE_RULE.format(budget=f"{args.budget:.0%}"),
        "yaml": yaml_t,
        "daily": daily,
        "never": never,
        "candidates": candidates,
        "chosen": chosen["thresholds"],
        "seconds": round(time.perf_counter() - t0),
    }
    Path(args.tuning_json).write_text(json.dumps(out, indent=1, default=str) + "\n")
    if not args.keep:
        _clean(Path(args.workdir) / "tune")
    lines = [
        f"### Tuning the drift thresholds on {start:%b} {start.day}-{end:%b} {end.day} {end.year} only "
        f"(`make bench-tune`, {out['measured']})",
        "",
        f"Each row is a drift-triggered replay of {start}..{end} with those thresholds (the rest of flights.yaml "
        f"unchanged). Rule: {out['rule']} The every-day policy retrains on each of the {daily['retrains']} "
        f"scored days, so the budget is {args.budget * daily['retrains']:.1f} retrains. Never retrain over the "
        f"same days: mean AUC {never['mean_auc']:.4f}. Nothing after {end} was looked at. Wall time "
        f"{out['seconds'] / 60:.0f} min.",
        "",
        "| drift_share | quality_drop | cooldown days | mean AUC | vs never retrain | retrains | promoted | rejected | chosen |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for c in candidates:
        t = c["thresholds"]
        mark = "**chosen**" if t == chosen["thresholds"] else ("flights.yaml" if t == yaml_t else "")
        if t == chosen["thresholds"] and t == yaml_t:
            mark = "**chosen** (= flights.yaml)"
        lines.append(
            f"| {t['drift_share']} | {t['quality_drop']} | {t['cooldown_days']} | {c['mean_auc']:.4f} "
            f"| {c['mean_auc'] - never['mean_auc']:+.4f} | {c['retrains']} | {c['promotions']} "
            f"| {c['rejected']} | {mark} |"
        )
    if chosen["thresholds"] != yaml_t:
        changed = ", ".join(f"{k}: {v}" for k, v in chosen["thresholds"].items() if v != yaml_t[k])
        lines += [
            "",
            f"flights.yaml keeps its own values (the demo, the tests and the Airflow year above use them); "
            f"`make bench` replays the chosen ones beside them, as environment overrides. To adopt them, set "
            f"`{changed}` under `thresholds:` in flights.yaml.",
        ]
    section = "\n".join(lines)
    doc = Path(args.doc)
    doc.write_text(replay_report.replace_section(doc.read_text(), "tuning", section))
    print(section)


# ---- the benchmark --------------------------------------------------------------------------------------
def _synthetic_datasets(root: Path) -> tuple[Path, Path, dict[str, Any]]:
    """Write the variant YAMLs (the bundled one with another `synthetic.drift`) and their partitions."""
    from dataclasses import replace

    from ml.datasets import synthetic

    datasets, lake = root / "datasets", root / "lake"
    datasets.mkdir(parents=True, exist_ok=True)
    base = yaml.safe_load((BUNDLED_DATASETS / f"{SYNTHETIC_BASE}.yaml").read_text())
    onsets = {}
    for name, change in SYNTHETIC_VARIANTS.items():
        raw = copy.deepcopy(base)
        raw["name"], raw["registered_model"] = name, name.replace("_", "-")
        raw.pop("dag_id", None)
        raw["synthetic"].update({k: v for k, v in change.items() if k != "drift"})
        if "drift" in change:
            raw["synthetic"]["drift"] = change["drift"]
        path = datasets / f"{name}.yaml"
        path.write_text(yaml.safe_dump(raw, sort_keys=False))
        s = load_settings(path, environ={})
        s = s.with_overrides(paths=replace(s.paths, lake=lake))
        synthetic.prepare(s, force=True, progress=False)
        stream = synthetic.stream_spec(s)
        onsets[name] = {
            "onset": stream.drift.onset,
            "kind": stream.drift.kind,
            "speed": stream.drift.speed,
            "ramp_days": stream.drift.ramp_days,
            "start": stream.start,
            "end": stream.end,
            "original_start": s.original_start,
        }
    return datasets, lake, onsets


def _airflow(path: Path) -> dict[str, Any] | None:
    """The saved Airflow backfill figure: docs/bench_airflow_year.json or scripts/bench_pipeline.py's --json."""
    if not path.is_file():
        return None
    raw = json.loads(path.read_text())
    if "runs" in raw:  # the raw output of scripts/bench_pipeline.py --json
        days = sorted(r["day"] for r in raw["runs"])
        return {
            "total_s": raw["total_s"],
            "days": len(days),
            "from": days[0][:10],
            "to": days[-1][:10],
            "failed": sum(r.get("state") != "success" for r in raw["runs"]),
            "source": str(path),
            "runs": raw["runs"],
        }
    return raw


def _airflow_backfill(args: argparse.Namespace) -> None:
    """The same days under the real scheduler (scripts/bench_pipeline.py: a throwaway stack, its own lake),
    alone on the machine; its figures go to --airflow-json."""
    import subprocess

    log = Path(args.workdir) / "airflow-backfill.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    _echo(f"airflow backfill {args.start}..{args.end} (scripts/bench_pipeline.py; tables in {log}) ...")
    t0 = time.perf_counter()
    with log.open("w") as out:
        subprocess.run(
            [
                sys.executable,
                str(REPO_ROOT / "scripts" / "bench_pipeline.py"),
                "--from",
                args.start,
                "--to",
                args.end,
                "--json",
                args.airflow_json,
                "--history-png",
                args.history_png,
            ],
            check=True,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    _echo(f"airflow backfill: done in {time.perf_counter() - t0:.0f} s")


def _by_kind(airflow: dict[str, Any], replayed: dict[str, Any]) -> list[dict[str, Any]]:
    """Per kind of day (collect, monitored, retrain, quarantined): mean seconds a day under Airflow (a run's
    wall time) and in the replay (the day's steps), over the days both have."""
    walls = {d["day"]: d.get("wall_s") for d in replayed["days"]}
    kinds: dict[str, list[tuple[float, float]]] = {}
    for run in airflow.get("runs") or []:
        day = run["day"][:10]
        if run.get("wall") is not None and walls.get(day):
            kinds.setdefault(run["kind"], []).append((run["wall"], walls[day]))
    order = ["collect", "monitored", "retrain", "quarantined", "unknown"]
    return [
        {
            "kind": k,
            "days": len(v),
            "airflow_s": sum(a for a, _ in v) / len(v),
            "replay_s": sum(r for _, r in v) / len(v),
        }
        for k, v in sorted(kinds.items(), key=lambda kv: order.index(kv[0]))
    ]


def bench(args: argparse.Namespace) -> None:
    started = time.perf_counter()
    s = load_settings(args.dataset)
    _ensure_flights(args.dataset)
    yaml_t = {k: getattr(s.thresholds, k) for k in THRESHOLD_KEYS}
    start, end = dt.date.fromisoformat(args.start), dt.date.fromisoformat(args.end)
    split = dt.date.fromisoformat(args.split)
    tuning = json.loads(Path(args.tuning_json).read_text()) if Path(args.tuning_json).is_file() else None
    tuned = tuning["chosen"] if tuning and tuning["chosen"] != yaml_t else None

    # the flights.yaml drift replay (compared with the Airflow backfill) starts first, beside the longest one
    # (every day): one core each, before the pool gets crowded; the Airflow backfill runs alone afterwards
    jobs = [
        replay_jobs.Job("drift", args.dataset, "drift", start, end),
        replay_jobs.Job("daily", args.dataset, "daily", start, end),
    ]
    if tuned:
        jobs.append(
            replay_jobs.Job(
                "drift-tuned",
                args.dataset,
                "drift",
                start,
                end,
                overrides=_grid_overrides(
                    tuned["drift_share"], tuned["quality_drop"], tuned["cooldown_days"]
                ),
            )
        )
    # the defaults a new dataset gets (issue 18): calibrated drift thresholds instead of flights.yaml's
    # measured drift.columns, and the AUC drop beyond the day's noise
    jobs.append(
        replay_jobs.Job(
            "drift-calibrated",
            args.dataset,
            "drift",
            start,
            end,
            overrides=CALIBRATED,
        )
    )
    jobs += [
        replay_jobs.Job("every-7", args.dataset, "every-7", start, end),
        replay_jobs.Job("every-30", args.dataset, "every-30", start, end),
        replay_jobs.Job("never", args.dataset, "never", start, end),
    ]
    onsets: dict[str, Any] = {}
    if not args.no_synthetic:
        datasets, lake, onsets = _synthetic_datasets(Path(args.workdir) / "synthetic")
        for name, o in onsets.items():
            jobs.append(
                replay_jobs.Job(
                    name, name, "drift", o["original_start"], o["end"], datasets=datasets, source_lake=lake
                )
            )
    results = replay_jobs.run_jobs(jobs, Path(args.workdir) / "replays", parallel=args.parallel, echo=_echo)
    if not args.no_airflow:
        _airflow_backfill(args)
    results = {j.key: results[j.key] for j in jobs}
    flights = {k: r for k, r in results.items() if r["dataset"] == s.name}
    for key, r in flights.items():
        if key == "drift":
            r["label"] = f"drift-triggered, flights.yaml ({_thresholds(None, yaml_t)})"
        elif key == "drift-calibrated":
            r["label"] = "drift-triggered, calibrated thresholds (drift.calibrate: true, no drift.columns)"
        elif key == "drift-tuned":
            r["label"] = f"drift-triggered, tuned on Jan-Apr ({_thresholds(jobs[2].overrides, yaml_t)})"
    order = [j.key for j in jobs if j.key in flights]
    first_scored = min(
        dt.date.fromisoformat(d["day"]) for r in flights.values() for d in r["days"] if d["auc"] is not None
    )
    same = replay.common_days(flights.values())  # every policy's mean AUC over the same days
    full = {k: replay.summarize(flights[k], scored_on=same) for k in order}
    test = {k: replay.summarize(flights[k], start=split, scored_on=same) for k in order}
    tune_period = {
        k: replay.summarize(flights[k], end=split - dt.timedelta(days=1), scored_on=same) for k in order
    }
    detections = {name: replay.detection(results[name], onsets[name]["onset"]) for name in onsets}
    airflow = _airflow(Path(args.airflow_json))
    plot = replay_report.plot_auc(
        {k: flights[k] for k in order},
        Path(args.plot),
        split=split,
        title=f"{s.name}: champion AUC on each day's labels, {first_scored}..{end}, per retraining policy",
    )
    section = report(
        args,
        s,
        order,
        flights,
        full,
        test,
        tune_period,
        detections,
        onsets,
        airflow,
        plot,
        tuned,
        yaml_t,
        first_scored,
        split,
        time.perf_counter() - started,
    )
    doc = Path(args.doc)
    doc.write_text(replay_report.replace_section(doc.read_text(), "replay", section))
    Path(args.results_json).write_text(
        json.dumps(
            {
                "measured": dt.date.today().isoformat(),
                "dataset": s.name,
                "from": start.isoformat(),
                "to": end.isoformat(),
                "split": split.isoformat(),
                "full": full,
                "test": test,
                "tuning_period": tune_period,
                "wall_s": {k: flights[k]["wall_s"] for k in order},
                "detection": detections,
                "airflow": {k: v for k, v in (airflow or {}).items() if k != "runs"} or None,
            },
            indent=1,
            default=str,
        )
        + "\n"
    )
    print(section)
    if not args.keep:
        _clean(Path(args.workdir) / "replays")


def _clean(root: Path) -> None:
    """Drop the replays' homes and lakes (GBs of drift reports and models); keep their logs and results, and
    the model references of the flights.yaml drift replay (`scripts/bench_monitors.py --same-day` reads its
    champions' calibration there)."""
    import shutil

    for work in root.iterdir() if root.is_dir() else []:
        shutil.rmtree(work / "lake", ignore_errors=True)
        home = work / "home"
        if work.name != "drift":
            shutil.rmtree(home, ignore_errors=True)
            continue
        for sub in home.iterdir() if home.is_dir() else []:
            if sub.name != "models":
                shutil.rmtree(sub, ignore_errors=True) if sub.is_dir() else sub.unlink()
        for model_dir in (home / "models").glob("*/v*"):
            for item in model_dir.iterdir():
                if item.name != "monitor_reference.json":
                    shutil.rmtree(item, ignore_errors=True) if item.is_dir() else item.unlink()


def _pct(a: float | None, b: float | None) -> str:
    return "n/a" if a is None or not b else f"{100 * a / b:.1f}%"


def report(
    args,
    s,
    order,
    flights,
    full,
    test,
    tune_period,
    detections,
    onsets,
    airflow,
    plot,
    tuned,
    yaml_t,
    first_scored,
    split,
    seconds,
) -> str:
    end = args.end
    goal_key = "drift-tuned" if tuned else "drift"
    d, daily, never = full[goal_key], full.get("daily"), full.get("never")
    lines = [
        f"## Retraining policies: {s.name} replayed day by day (`make bench`, {dt.date.today()})",
        "",
        f"`scripts/bench_replay.py`: every policy replays {args.start}..{end} through the DAG's own steps "
        "(`ml.replay`: validate, score, drift (drift policies only), decide, train, evaluate, promote/reject, "
        "record) in its own process and throwaway DRIFTWATCH_HOME with its own hard-linked copy of the lake, "
        f"{args.parallel} at a time on {os.cpu_count()} cores ({platform.machine()}, Python "
        f"{platform.python_version()}, one OpenMP thread each). Wall time of the whole benchmark "
        f"{seconds / 60:.0f} min.",
        "",
        "- **Fair comparison**: every policy bootstraps the same first champion on Jan 31 and every challenger "
        "passes the same promotion gate (paired-bootstrap CI of the AUC gain on the same 7 holdout days, "
        "log-loss and segment guardrails, flights.yaml's values); the policies differ only in when they train.",
        f"- **AUC, accuracy**: the serving champion (in force after day D-1) scores day D before the day is used "
        f"for anything; mean of the daily AUC / accuracy at 0.5 on the day's labels over the {full[order[0]]['days_scored']} "
        f"scored days ({first_scored}..{end}; Jan 1-31 is the original window). "
        "**Retrains** exclude the bootstrap; **training CPU s** is train + evaluate + promote/reject "
        f"(process CPU). **Worse over the next {replay.HORIZON_DAYS} days**: promotions whose new champion had a "
        f"lower mean daily AUC than the one it replaced on the next {replay.HORIZON_DAYS} batches (both scored "
        "on the same rows afterwards).",
        "",
        f"### All scored days ({first_scored}..{end})",
        "",
        replay_report.format_table([full[k] for k in order]),
        "",
        f"### Test period only ({split}..{end}: after the tuning months)",
        "",
        replay_report.format_table([test[k] for k in order]),
        "",
        f"### Tuning months only ({first_scored}..{split - dt.timedelta(days=1)})",
        "",
        replay_report.format_table([tune_period[k] for k in order]),
        "",
        f"![daily AUC per policy]({Path(plot).name})",
        "",
        f"`{Path(plot).name}`: 7-day rolling mean of the daily AUC; the strip below marks each policy's "
        "retrains (| promoted, o rejected).",
        "",
    ]
    # goals
    goals = []
    if daily and d:
        goals.append(
            (
                "drift-triggered mean AUC >= 99% of every day's",
                _pct(d["mean_auc"], daily["mean_auc"]),
                d["mean_auc"] >= 0.99 * daily["mean_auc"],
            )
        )
        goals.append(
            (
                "drift-triggered retrains <= 10% of every day's",
                f"{d['retrains']} of {daily['retrains']} ({_pct(d['retrains'], daily['retrains'])})",
                d["retrains"] <= 0.10 * daily["retrains"],
            )
        )
    if never and d:
        gain = d["mean_auc"] - never["mean_auc"]
        goals.append(("drift-triggered mean AUC >= never retrain's + 0.03", f"{gain:+.4f}", gain >= 0.03))
    abrupt = {
        k: v for k, v in detections.items() if onsets[k]["speed"] == "abrupt" and onsets[k]["kind"] != "none"
    }
    if abrupt:
        worst = [v["delay"] for v in abrupt.values()]
        ok = all(x is not None and x <= 3 for x in worst)
        goals.append(
            (
                "detection within 3 batches of an abrupt onset",
                ", ".join(
                    f"{k}: {'not detected' if v['delay'] is None else v['delay']}" for k, v in abrupt.items()
                ),
                ok,
            )
        )
    if "synthetic_none" in detections:
        fa = detections["synthetic_none"]
        goals.append(
            (
                "<= 1 false alarm per 100 drift-free batches",
                f"{fa['false_alarms']} in {fa['drift_free_batches']} ({fa['false_alarms_per_100']:.1f} per 100)",
                fa["false_alarms_per_100"] <= 1.0,
            )
        )
    overhead = None
    if airflow and (airflow["from"], airflow["to"]) != (args.start, end):
        airflow = {**airflow, "mismatch": True}
    if airflow and not airflow.get("mismatch"):
        r = flights["drift"]
        overhead = airflow["total_s"] / r["wall_s"]
        goals.append(("orchestration overhead <= 2x", f"{overhead:.2f}x", overhead <= 2.0))
    lines += [
        f"### Goals ({'drift-triggered = the tuned thresholds' if tuned else 'drift-triggered = flights.yaml'}, all scored days)",
        "",
        "| goal | measured | met |",
        "|---|---|---|",
    ]
    lines += [f"| {g} | {m} | {'yes' if ok else '**no**'} |" for g, m, ok in goals]
    lines.append("")
    if tuned and "drift" in full:
        y = full["drift"]
        lines += [
            f"With flights.yaml's own thresholds the drift-triggered policy reached {_pct(y['mean_auc'], daily['mean_auc'])} "
            f"of every day's mean AUC with {y['retrains']} retrains ({_pct(y['retrains'], daily['retrains'])} of every day's).",
            "",
        ]
    lines += [
        "Caveats: one run with one seed per policy. A day's AUC on ~900 labels moves by a few hundredths from day "
        "to day; all policies are scored on the same days, so the noise in the difference of two yearly means "
        "is much smaller, but differences of a few thousandths are not meaningful. Only the drift-triggered "
        "replays compute the Evidently report (no other policy reads it); every policy's daily AUC comes from "
        "the champion's stored scores and the day's labels the same way. The replay delivers no alerts (a DAG "
        "callback, not a step). Every challenger trains on all accepted days, so a training costs more as the "
        "year goes on.",
        "",
    ]
    # known-onset drift
    if detections:
        lines += [
            "### Known-onset drift (synthetic streams)",
            "",
            f"Generated by `ml/datasets/synthetic.py` from `ml/datasets/{SYNTHETIC_BASE}.yaml` (5 numeric features and one "
            "categorical, logistic label rule, 1,000 rows a day, original window of 21 days) and variants of its "
            "`synthetic.drift` section; each replayed under the drift-triggered policy with the YAML's thresholds "
            "(drift_share 0.5, quality_drop 0.05, cooldown 7 d; Evidently's default per-column tests). "
            "Covariate: x1, x2, x4 move by 1.5 sd; concept: the coefficients of x1 and x2 change sign. "
            "A batch is *flagged* when its drift share or AUC drop crosses its threshold (cooldown aside); "
            "delay = flagged batch index counted from the onset batch (0 = flagged on the onset day).",
            "",
            "| stream | drift | onset | delay (batches) | first retrain decision (batches) | drift-free batches | false alarms | per 100 batches |",
            "|---|---|---|---:|---:|---:|---:|---:|",
        ]
        for name, v in detections.items():
            o = onsets[name]
            kind = (
                "none"
                if o["kind"] == "none"
                else f"{o['kind']}, {o['speed']}"
                + (f" over {o['ramp_days']} d" if o["speed"] == "gradual" else "")
            )
            lines.append(
                f"| {name} | {kind} | {v['onset'] or '-'} | {'-' if o['kind'] == 'none' else ('not detected' if v['delay'] is None else v['delay'])} "
                f"| {'-' if o['kind'] == 'none' else ('none' if v['retrain_delay'] is None else v['retrain_delay'])} "
                f"| {v['drift_free_batches']} | {v['false_alarms']} | {v['false_alarms_per_100']:.1f} |"
            )
        lines.append("")
    # overhead
    lines += ["### Orchestration overhead", ""]
    if airflow and airflow.get("mismatch"):
        lines += [
            f"The saved Airflow backfill ({airflow['from']}..{airflow['to']}) is not of the replayed days "
            f"({args.start}..{end}): no ratio.",
            "",
        ]
    elif airflow:
        r = flights["drift"]
        lines += [
            f"Airflow backfill of {airflow['from']}..{airflow['to']} ({airflow['days']} runs, {airflow['failed']} failed; "
            "flights.yaml thresholds; the real scheduler, dag-processor and API server on the embedded default, "
            f"LocalExecutor on SQLite; `scripts/bench_pipeline.py`, figures in `{Path(args.airflow_json).name}`): "
            f"{airflow['total_s']:.0f} s. The drift-triggered replay of the same days with the same thresholds "
            f"(`ml.replay`: the same steps in one process): {r['wall_s']:.0f} s for the days (plus "
            f"{r['process_wall_s'] - r['wall_s']:.0f} s of process start and imports). Ratio **{overhead:.2f}x** "
            f"(Airflow / replay days; {airflow['total_s'] / r['process_wall_s']:.2f}x against the whole replay "
            "process). The replay ran on one core beside the every-day replay on the other (one thread each, "
            "nothing else running); the backfill ran alone on the machine"
            + ("" if args.no_airflow else " after the replays")
            + ".",
            "",
        ]
        kinds = _by_kind(airflow, r)
        if kinds:
            lines += [
                "| day kind | days | Airflow s a day | replay s a day | ratio |",
                "|---|---:|---:|---:|---:|",
            ]
            lines += [
                f"| {k['kind']} | {k['days']} | {k['airflow_s']:.1f} | {k['replay_s']:.1f} | "
                f"{k['airflow_s'] / k['replay_s']:.1f}x |"
                for k in kinds
            ]
            lines += [
                "",
                "Under Airflow each step is its own task: a process forked from the scheduler's preloaded "
                "forkserver that parses the DAG file, talks to the API server and loads the champion again "
                "(~0.2 s a task, 7 tasks on a monitored day), and the scheduler starts the next task ~0.1 s "
                "after one ends; the replay keeps the champion in memory. monitor_model and detect_drift run "
                "side by side under Airflow, one after the other in the replay. Collect days (the original "
                "window) do almost nothing, so they are almost all overhead.",
                "",
            ]
    else:
        lines += [
            f"No saved Airflow backfill figure ({args.airflow_json}): run `make bench-pipeline` and save "
            "total seconds, days and range there.",
            "",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="flights")
    p.add_argument("--from", dest="start", default="2013-01-01")
    p.add_argument("--to", dest="end", default="2013-12-31")
    p.add_argument("--split", default="2013-05-01", help="first day after the tuning months")
    p.add_argument("--parallel", type=int, default=2)
    p.add_argument("--workdir", default=str(Paths.from_env().home / "bench"))
    p.add_argument("--doc", default=str(DOC))
    p.add_argument("--plot", default=str(PLOT))
    p.add_argument("--airflow-json", default=str(AIRFLOW_JSON))
    p.add_argument(
        "--history-png",
        default=str(REPO_ROOT / "docs" / "history_2013.png"),
        help="the Airflow backfill's model-history plot",
    )
    p.add_argument("--tuning-json", default=str(TUNING_JSON))
    p.add_argument("--results-json", default=str(RESULTS_JSON))
    p.add_argument("--budget", type=float, default=0.10, help="tuning: retrain budget, share of every day's")
    p.add_argument("--no-synthetic", action="store_true")
    p.add_argument(
        "--no-airflow",
        action="store_true",
        help="reuse the Airflow backfill figures in --airflow-json instead of running the backfill (~30 min)",
    )
    p.add_argument("--keep", action="store_true", help="keep each replay's home and lake under --workdir")
    p.add_argument("--tune", action="store_true", help="tune the drift thresholds on --from..--split instead")
    args = p.parse_args(argv)
    tune(args) if args.tune else bench(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
