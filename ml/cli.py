"""`driftwatch` command line."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import sys
from typing import Any

from ml.config import load_settings
from ml.exceptions import DriftwatchError


def _prepare(args: argparse.Namespace) -> int:
    s = load_settings(args.dataset)
    if s.source == "synthetic":
        from ml.datasets import synthetic

        out = synthetic.prepare(s, force=args.force)
        print(
            f"{s.name}: {out.days_written + out.days_skipped} daily partitions of a synthetic stream "
            f"({out.days_written} written, {out.days_skipped} already there) under {out.lake}"
        )
        return 0
    if s.captured:
        from ml.traffic import prepare_history

        written, skipped = prepare_history(s, force=args.force)
        print(
            f"{s.name}: its original window {s.original_start}..{s.original_end} copied from the lake of "
            f"{s.serving.traffic_from} ({written} days written, {skipped} already there) under {s.lake_dir}; "
            f"later days come from the model server's capture (driftwatch serve / traffic)"
        )
        return 0
    if s.source != "nycflights13":
        print(f"{args.dataset}: no bundled adapter (source: {s.source!r}); write partitions to {s.lake_dir}")
        return 2
    from ml.datasets.nycflights13 import prepare

    summary = prepare(s, force=args.force)
    print(
        f"{summary.rows_in} flights read; excluded {summary.cancelled} cancelled and {summary.diverted} diverted; "
        f"{summary.rows_out} rows in {summary.days_written + summary.days_skipped} daily partitions "
        f"({summary.days_written} written, {summary.days_skipped} already there) under {summary.lake}"
    )
    return 0


def _status(args: argparse.Namespace) -> int:
    from ml.status import format_status, status

    st = status(load_settings(args.dataset))
    print(json.dumps(st, indent=2, default=str) if args.json else format_status(st))
    return 0 if st["champion"] or not args.require_champion else 1


HISTORY_COLUMNS = [
    "day",
    "status",
    "rows",
    "champion_version",
    "drift_share",
    "dataset_drift",
    "drifted_columns",
    "prediction_drift",
    "quality",
    "quality_drop",
    "decision",
    "reason",
    "candidate_version",
    "promotion",
    "promotion_reason",
    "error",
    "validation",
    "reports",
    "dag_run_id",
    "estimated_quality",
    "estimated_quality_drop",
    "labels_known_on",
    "bias",
    "bias_violation",
    "attribution_ndcg",
    "attribution_violation",
    "attribution",
]


def _history(args: argparse.Namespace) -> int:
    from ml.history import History

    s = load_settings(args.dataset)
    rows = History(s.history_url).days(s.name)
    rows = [{k: r.get(k) for k in HISTORY_COLUMNS} for r in rows]
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
    elif args.csv:
        import csv

        w = csv.DictWriter(sys.stdout, fieldnames=HISTORY_COLUMNS)
        w.writeheader()
        for r in rows:
            w.writerow({k: json.dumps(v) if isinstance(v, dict | list) else v for k, v in r.items()})
    else:
        key = s.objective.primary  # the task's metric: auc, macro_f1 or rmse
        head = {"roc_auc": "auc", "macro_f1": "mF1", "rmse": "rmse"}[key]
        print(
            f"{'day':<11}{'status':<12}{'rows':>5}  {'drift':>5}  {head:>6}  {'est':>6}  {'ndcg':>5}  "
            f"{'bias':<5}{'decision':<10}{'cand':>5}  {'promotion':<10}reason"
        )
        for r in rows:
            auc = (r["quality"] or {}).get(key)
            est = (r["estimated_quality"] or {}).get("roc_auc")
            ndcg = r["attribution_ndcg"]
            bias = {True: "VIOL", False: "ok", None: ""}[r["bias_violation"]]
            print(
                f"{r['day']:<11}{r['status'] or '':<12}{r['rows'] or 0:>5}  "
                f"{'' if r['drift_share'] is None else format(r['drift_share'], '.2f'):>5}  "
                f"{'' if auc is None else format(auc, '.3f'):>6}  {'' if est is None else format(est, '.3f'):>6}  "
                f"{'' if ndcg is None else format(ndcg, '.2f'):>5}  {bias:<5}{r['decision'] or '':<10}"
                f"{r['candidate_version'] or '':>5}  {r['promotion'] or '':<10}{(r['reason'] or '')[:90]}"
            )
    return 0


def _check_config(args: argparse.Namespace) -> int:
    from ml import check_config
    from ml.exceptions import BatchMissingError, ConfigError

    try:
        report = check_config.check(load_settings(args.dataset), days=args.days)
    except (ConfigError, BatchMissingError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=2, default=str) if args.json else check_config.format_report(report))
    return 0


def _validate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ml import validation
    from ml.exceptions import UnreadableBatchError
    from ml.history import History
    from ml.registry import artifact

    s = load_settings(args.dataset)
    reference = None
    h = History(s.history_url)
    events = h.alias_events(s.name, "champion")
    if events and not args.no_reference:
        version = max(events, key=lambda e: (e["logical_date"], e["id"]))["after_version"]
        try:
            reference = artifact(s, h, version, "reference.parquet")
        except Exception as exc:  # noqa: BLE001 - validate without reference rather than not at all
            print(
                f"warning: champion reference unavailable ({exc}); checking the YAML rules only",
                file=sys.stderr,
            )
    try:
        result = validation.validate_path(s, Path(args.path), reference=reference)
    except (UnreadableBatchError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result.to_dict(), indent=2, default=str))
    elif result.success:
        print(f"{args.path}: OK - {result.summary()}")
    else:
        print(f"{args.path}: FAILED ({len(result.failures)} problems)")
        for f in result.failures:
            print(f"  - {f.message}")
    return 0 if result.success else 1


def _champion(args: argparse.Namespace) -> int:
    from ml.history import History

    s = load_settings(args.dataset)
    h = History(s.history_url)
    day = dt.date.fromisoformat(args.at) if args.at else dt.date.max
    version = h.champion_at(s.name, day)
    if args.json:
        print(json.dumps({"dataset": s.name, "at": args.at, "version": version}))
    else:
        print(version if version is not None else f"no champion on {args.at}")
    return 0 if version is not None else 1


def _rollback(args: argparse.Namespace) -> int:
    from ml import promotion
    from ml.history import History

    s = load_settings(args.dataset)
    try:
        day = dt.date.fromisoformat(args.date) if args.date else None
    except ValueError:
        print(f"error: rollback --date: expected YYYY-MM-DD. Got {args.date!r}.", file=sys.stderr)
        return 2
    out = promotion.rollback(s, History(s.history_url), reason=args.reason, actor=args.actor, day=day)
    if args.json:
        print(json.dumps({"dataset": s.name, **out}))
    else:
        print(
            f"{s.name}: champion {out['rolled_back']} -> {out['champion']} (previous: {out['previous']}; "
            f"recorded on {out['logical_date']})"
        )
    return 0


def _repair(args: argparse.Namespace) -> int:
    """Make the MLflow aliases follow the audit log (the one source of truth) and say what was wrong."""
    from ml import alerts, promotion, registry
    from ml.history import History

    s = load_settings(args.dataset)
    h = History(s.history_url)
    if h.latest_alias(s.name, registry.CHAMPION) is None:
        print(f"{s.name}: the audit log has no champion yet; nothing to repair")
        return 0
    drift = promotion.repair(s, h, holder="cli-repair")
    if args.json:
        print(json.dumps({"dataset": s.name, "repaired": drift}, indent=2, default=str))
    elif not drift:
        latest = {
            a: (h.latest_alias(s.name, a) or {}).get("after_version")
            for a in (registry.CHAMPION, registry.PREVIOUS)
        }
        print(
            f"{s.name}: the MLflow aliases of {s.registered_model} mirror the audit log "
            f"(champion v{latest['champion']}"
            + (f", previous v{latest['previous']}" if latest["previous"] else "")
            + "); nothing to repair"
        )
    else:
        for d in drift:
            was = f"v{d['mlflow']}" if d["mlflow"] is not None else "nothing"
            print(
                f"{s.name}: REPAIRED alias '{d['alias']}' of {s.registered_model}: it named {was}, the audit log "
                f"names v{d['audit']} (since {d['since']}: {d['reason']}); moved to v{d['audit']}"
            )
        last = h.latest_alias(s.name, registry.CHAMPION) or {}
        alerts.send_once(
            s, alerts.registry_alert(s, dt.date.fromisoformat(last["logical_date"]), drift, None)
        )
    return 0


def _run_day(args: argparse.Namespace) -> int:
    """Run one logical date through the daily flow in this process, without Airflow (debugging): the same
    steps, branches and outputs as the DAG (`ml.runner`); prints each step's state and output."""
    from ml.day import RunParams
    from ml.runner import run_day_or_raise

    out = run_day_or_raise(
        args.dataset, dt.date.fromisoformat(args.date), params=RunParams(force_retrain=args.force_retrain)
    )
    print(json.dumps({"day": out.day, "states": out.states, "outputs": out.outputs}, indent=2, default=str))
    return 0


def _replay(args: argparse.Namespace) -> int:
    """Replay days under retraining policies, each in its own process and throwaway DRIFTWATCH_HOME."""
    import tempfile
    from pathlib import Path

    import yaml

    from ml import replay, replay_jobs, replay_report
    from ml.config import Paths
    from ml.data import available_days

    s = load_settings(args.dataset)
    asked = args.policy or ["drift"]
    names = list(replay.POLICY_NAMES) if "all" in asked else list(dict.fromkeys(asked))
    policies = [replay.parse_policy(n) for n in names]
    overrides = {}
    for item in args.set or []:
        key, sep, value = item.partition("=")
        if not sep:
            print(
                f"error: replay --set: expected KEY=VALUE (e.g. thresholds.drift_share=0.4). Got {item!r}.",
                file=sys.stderr,
            )
            return 2
        overrides[key] = yaml.safe_load(value)
    lake_days = available_days(s.with_overrides(paths=Paths.from_env()))
    start = dt.date.fromisoformat(args.start) if args.start else s.original_start
    end = dt.date.fromisoformat(args.end) if args.end else (lake_days[-1] if lake_days else None)
    if end is None:
        print(
            f"error: no partitions of {s.name} under {s.lake_dir}; run `driftwatch prepare {s.name}`",
            file=sys.stderr,
        )
        return 1
    root = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="driftwatch-replay-"))
    jobs = [
        replay_jobs.Job(
            key=p.name, dataset=args.dataset, policy=p.name, start=start, end=end, overrides=overrides or None
        )
        for p in policies
    ]
    jobs.sort(key=lambda j: replay.cost_rank(replay.parse_policy(j.policy)))
    results = replay_jobs.run_jobs(
        jobs, root, parallel=args.parallel, echo=lambda m: print(m, file=sys.stderr)
    )
    split = dt.date.fromisoformat(args.split) if args.split else None
    # every policy's mean over the same days: those all of them scored
    same = replay.common_days(results.values())
    summaries = {k: replay.summarize(r, scored_on=same) for k, r in results.items()}
    after = (
        {k: replay.summarize(r, start=split, scored_on=same) for k, r in results.items()} if split else None
    )
    figures = {
        "from": start.isoformat(),
        "to": end.isoformat(),
        "workdir": str(root),
        "summary": summaries,
        "after_split": after,
        "wall_s": {k: r["wall_s"] for k, r in results.items()},
    }
    if args.json and args.json != "-":
        Path(args.json).write_text(json.dumps(figures, indent=1, default=str) + "\n")
    if args.json == "-":
        print(json.dumps(figures, indent=2, default=str))
    else:
        print(f"{s.name} {start}..{end} (work folders under {root})")
        metric = next(iter(results.values())).get("metric", "AUC") if results else "AUC"
        print(replay_report.format_table([summaries[j.key] for j in jobs], metric))
        if after:
            print(f"\nfrom {split}:")
            print(replay_report.format_table([after[j.key] for j in jobs], metric))
    if not args.workdir:
        import shutil

        shutil.rmtree(root, ignore_errors=True)
    return 0


def _plot(args: argparse.Namespace) -> int:
    from ml.plots import write_history

    paths = write_history(load_settings(args.dataset), args.out)
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    """The model server: scores with the version the alias names and follows it (ml/serving/)."""
    from ml.serving.server import run

    return run(load_settings(args.dataset), host=args.host, port=args.port, workers=args.workers)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="driftwatch", description="Drift-triggered retraining on Airflow + MLflow."
    )
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)

    def dataset_arg(sp: argparse.ArgumentParser, positional: bool = False) -> None:
        if positional:
            sp.add_argument("dataset", nargs="?", default="flights")
        else:
            sp.add_argument("--dataset", default="flights", help="dataset name (a YAML in ml/datasets)")

    sp = sub.add_parser("prepare", help="write the daily partitions of a bundled dataset")
    dataset_arg(sp, positional=True)
    sp.add_argument("--force", action="store_true", help="rewrite partitions that exist")
    sp.set_defaults(func=_prepare)

    sp = sub.add_parser("status", help="champion, its holdout metrics, counts")
    dataset_arg(sp)
    sp.add_argument("--json", action="store_true")
    sp.add_argument("--require-champion", action="store_true", help="exit 1 when there is no champion")
    sp.set_defaults(func=_status)

    sp = sub.add_parser("history", help="one row per processed day")
    dataset_arg(sp)
    g = sp.add_mutually_exclusive_group()
    g.add_argument("--json", action="store_true")
    g.add_argument("--csv", action="store_true")
    sp.set_defaults(func=_history)

    sp = sub.add_parser(
        "validate", help="check a batch file before it goes into the lake (exit 0 ok, 1 bad, 2 unreadable)"
    )
    sp.add_argument("path", help="a parquet file or a date=YYYY-MM-DD partition folder")
    dataset_arg(sp)
    sp.add_argument("--json", action="store_true")
    sp.add_argument("--no-reference", action="store_true", help="check the YAML rules only")
    sp.set_defaults(func=_validate)

    sp = sub.add_parser(
        "check-config",
        help="dry run: what the defaults would do with a dataset's first weeks (nothing written)",
    )
    sp.add_argument("dataset", help="a dataset name or the path of its YAML")
    sp.add_argument("--days", type=int, default=28, help="days after the original window to check (28)")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=_check_config)

    sp = sub.add_parser("champion", help="which version was champion after a date's run")
    dataset_arg(sp)
    sp.add_argument("--at", help="YYYY-MM-DD (default: now)")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=_champion)

    sp = sub.add_parser(
        "rollback", help="move champion back to the previous version (audited; again to undo)"
    )
    dataset_arg(sp)
    sp.add_argument("--reason", required=True, help="why, for the audit log")
    sp.add_argument("--actor", help="who (default: $USER@host)")
    sp.add_argument(
        "--date", help="logical date to record it on, YYYY-MM-DD (default: the latest audit event's)"
    )
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=_rollback)

    sp = sub.add_parser(
        "repair",
        help="make the MLflow aliases name what the audit log names (after an "
        "interrupted promotion, or an alias moved by hand); says what it changed",
    )
    dataset_arg(sp)
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=_repair)

    sp = sub.add_parser("plot", help="write the model-history plot (PNG, SVG, HTML) to open without the UI")
    dataset_arg(sp)
    sp.add_argument("--out", help="folder (default: <reports>/<dataset>/)")
    sp.set_defaults(func=_plot)

    sp = sub.add_parser("serve", help="serve the model the registry alias names and follow it (HTTP, JSON)")
    dataset_arg(sp)
    sp.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: loopback only)")
    sp.add_argument("--port", type=int, default=5080, help="default 5080")
    sp.add_argument(
        "--workers", type=int, default=1, help="processes on the port, e.g. one per core (default 1)"
    )
    sp.set_defaults(func=_serve)

    sp = sub.add_parser(
        "replay", help="replay days under retraining policies without Airflow and compare them"
    )
    dataset_arg(sp)
    sp.add_argument(
        "--policy",
        action="append",
        default=None,
        help="never | daily | every-N | drift | all (repeatable; default drift)",
    )
    sp.add_argument(
        "--from", dest="start", help="first day, YYYY-MM-DD (default: the original window's start)"
    )
    sp.add_argument("--to", dest="end", help="last day, YYYY-MM-DD (default: the last partition in the lake)")
    sp.add_argument("--split", help="also report the days from this date on, YYYY-MM-DD (e.g. after tuning)")
    sp.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="YAML override for the replays, e.g. thresholds.drift_share=0.4 (repeatable)",
    )
    sp.add_argument("--parallel", type=int, default=1, help="replays at once (one core each)")
    sp.add_argument(
        "--workdir", help="keep each replay's home, lake and log here (default: a temp dir, removed)"
    )
    sp.add_argument(
        "--json",
        nargs="?",
        const="-",
        metavar="PATH",
        help="print the figures as JSON (or write them to PATH and print the table)",
    )
    sp.set_defaults(func=_replay)

    sp = sub.add_parser("run-day", help="run one day's steps in this process, without Airflow")
    sp.add_argument("date")
    dataset_arg(sp)
    sp.add_argument("--force-retrain", action="store_true")
    sp.set_defaults(func=_run_day)

    from ml import drift_report, traffic

    traffic.add_commands(sub, dataset_arg)  # traffic, labels
    drift_report.add_commands(sub, dataset_arg)  # report
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        result: Any = args.func(args)
    except DriftwatchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
