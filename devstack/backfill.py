"""Backfills and manual runs on the stack: `airflow backfill create` (the real CLI, its SQLite transactions
as BEGIN IMMEDIATE), then following the runs to the end with a progress bar and a summary; `trigger`."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

from devstack import airflow_api, components, launch, processes, startup
from devstack.config import PRIVATE_UMASK, StackConfig, StackError

TERMINAL_STATES = frozenset({"success", "failed"})


def day(value: str | dt.date) -> dt.date:
    """A date from a date, a datetime or an ISO string.

    Raises:
        StackError: not a date YYYY-MM-DD.
    """
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value)[:10])
    except ValueError:
        raise StackError(f"expected a date YYYY-MM-DD. Got {value!r}.") from None


def _active_backfill(cfg: StackConfig, dag_id: str) -> dict[str, Any] | None:
    active = [b for b in airflow_api.backfills(cfg, dag_id) if not b.get("completed_at")]
    return active[0] if active else None


def _wait_previous_backfill(cfg: StackConfig, dag_id: str, wait: float = 45.0) -> None:
    """Airflow allows one active backfill per DAG, and the scheduler marks a finished one complete only
    every 30 s: wait for that, but refuse to start while the previous one still has runs to do."""
    deadline = time.monotonic() + wait
    while (active := _active_backfill(cfg, dag_id)) is not None:
        frm, to = day(active["from_date"]), day(active["to_date"])
        runs = airflow_api.dag_runs(
            cfg,
            dag_id,
            run_type="backfill",
            logical_date_gte=f"{frm}T00:00:00Z",
            logical_date_lte=f"{to}T23:59:59Z",
        )
        if any(r["state"] not in TERMINAL_STATES for r in runs):
            raise StackError(
                f"backfill #{active['id']} of {dag_id} ({frm} .. {to}) is still running; Airflow runs one backfill "
                f"per DAG. Wait for it, or cancel it: Airflow UI -> Browse -> Backfills, or "
                f"PUT {cfg.airflow_url}/api/v2/backfills/{active['id']}/cancel."
            )
        if time.monotonic() > deadline:
            raise StackError(
                f"backfill #{active['id']} of {dag_id} is finished but not marked complete; is the scheduler up?"
            )
        time.sleep(2.0)


def run_cli(cfg: StackConfig, args: Sequence[str]) -> subprocess.CompletedProcess[str]:
    """Run `airflow <args>` (through launch.airflow_cli_immediate) with the stack's environment."""
    return subprocess.run(
        launch.command("airflow_cli_immediate", *args),
        env=components.airflow_env(cfg),
        cwd=cfg.home,
        capture_output=True,
        text=True,
        umask=PRIVATE_UMASK,
    )


def _create_backfill(
    cfg: StackConfig, dag_id: str, args: list[str], reprocess: str
) -> subprocess.CompletedProcess[str]:
    for attempt in range(3):
        proc = run_cli(cfg, args)
        output = proc.stdout + proc.stderr
        if proc.returncode == 0 or "database is locked" not in output or attempt == 2:
            break
        # SQLite lock errors are not cleaned up by Airflow (it only knows Postgres/MySQL lock codes):
        # cancel the half-created backfill, then try again
        orphan = _active_backfill(cfg, dag_id)
        if orphan is not None:
            airflow_api.cancel_backfill(cfg, int(orphan["id"]))
            if reprocess == "none":
                # the cancelled runs were marked failed
                args[args.index("--reprocess-behavior") + 1] = "failed"
        time.sleep(2.0)
    return proc


def backfill(
    cfg: StackConfig,
    dag_id: str,
    from_date: str | dt.date,
    to_date: str | dt.date,
    *,
    conf: Mapping[str, Any] | None = None,
    reprocess: str = "completed",
    max_active_runs: int | None = None,
    progress: bool = True,
    timeout: float | None = None,
    poll: float = 1.0,
) -> dict[str, Any]:
    """Backfill `dag_id` over [from_date, to_date] (both inclusive) and follow it to the end.

    Runs `airflow backfill create` (the real CLI), unpauses the DAG and polls its backfill runs, showing a
    progress bar. A failed run does not stop the backfill; each failure is printed with its task's log file.

    `max_active_runs` defaults to the DAG's own max_active_runs: the backfill CLI otherwise allows 10
    concurrent runs whatever the DAG says.

    Returns:
        {"total", "success", "failed", "seconds", "runs": [{"logical_date", "state", "run_id",
        "seconds"}], "failures": [{"logical_date", "run_id", "task_id", "try_number", "log"}]}
    Raises:
        StackError: the CLI refused the backfill, another backfill is still running, or `timeout` passed.
    """
    frm, to = day(from_date), day(to_date)
    if to < frm:
        raise StackError(f"backfill: --to {to} is before --from {frm}.")
    if reprocess not in ("none", "completed", "failed"):
        raise StackError(f"backfill: reprocess must be none, completed or failed. Got {reprocess!r}.")
    t0 = time.monotonic()
    dag = airflow_api.dag(cfg, dag_id)
    if max_active_runs is None:
        max_active_runs = int(dag.get("max_active_runs") or 1)
    _wait_previous_backfill(cfg, dag_id)
    args = [
        "backfill", "create",
        "--dag-id", dag_id,
        "--from-date", frm.isoformat(),
        "--to-date", to.isoformat(),
        "--reprocess-behavior", reprocess,
        "--max-active-runs", str(max_active_runs),
    ]  # fmt: skip
    if conf:
        args += ["--dag-run-conf", json.dumps(dict(conf))]
    proc = _create_backfill(cfg, dag_id, args, reprocess)
    if proc.returncode != 0 and "database is locked" in proc.stdout + proc.stderr:
        # last resort (not seen since the CLI uses BEGIN IMMEDIATE): hold the two writers that never
        # pause, the scheduler and the dag-processor, while the rows are written; restarting them costs
        # ~20 s and ends tasks that are running
        paused = [n for n in ("scheduler", "dag-processor") if n in processes.running(cfg)]
        if paused:
            processes.stop(cfg, only=paused, quiet=True)
        try:
            proc = _create_backfill(cfg, dag_id, args, reprocess)
        finally:
            if paused:
                startup.start(cfg, paused, quiet=True)
    if proc.returncode != 0:
        raise StackError(
            f"airflow {' '.join(args)} failed (exit {proc.returncode}):\n"
            f"{processes.tail_text(proc.stdout + proc.stderr, 25)}"
        )
    # after the CLI: the scheduler would otherwise start runs while the CLI is still inserting them
    airflow_api.unpause(cfg, dag_id)
    filters = {
        "run_type": "backfill",
        "logical_date_gte": f"{frm}T00:00:00Z",
        "logical_date_lte": f"{to}T23:59:59Z",
    }
    return follow(cfg, dag_id, filters, t0=t0, progress=progress, timeout=timeout, poll=poll)


def _seconds(run: Mapping[str, Any]) -> float | None:
    start, end = airflow_api.parse_time(run.get("start_date")), airflow_api.parse_time(run.get("end_date"))
    return (end - start).total_seconds() if start and end else None


def follow(
    cfg: StackConfig,
    dag_id: str,
    filters: Mapping[str, Any],
    *,
    t0: float,
    progress: bool,
    timeout: float | None,
    poll: float,
    label: str = "backfill",
) -> dict[str, Any]:
    """Poll the runs of `dag_id` matching `filters` until all have finished, with a tqdm progress bar
    (the current day and task; a line per 30 s when stderr is not a terminal); see `backfill`'s Returns."""
    from tqdm import tqdm

    deadline = None if timeout is None else time.monotonic() + timeout
    reported: set[str] = set()
    failures: list[dict[str, Any]] = []
    bar = None
    tty = False
    current_run, current_task = "", ""
    try:
        while True:
            runs = airflow_api.dag_runs(cfg, dag_id, **filters)
            if bar is None:
                tty = progress and sys.stderr.isatty()
                bar = tqdm(
                    total=len(runs),
                    desc=f"{label} {dag_id}",
                    unit="run",
                    disable=not progress,
                    dynamic_ncols=True,
                    mininterval=0.5 if tty else 30.0,  # a log file gets a line per 30 s, not per poll
                )
            done = [r for r in runs if r["state"] in TERMINAL_STATES]
            for run in done:
                if run["state"] == "failed" and run["dag_run_id"] not in reported:
                    reported.add(run["dag_run_id"])
                    failed = airflow_api.failed_tasks(cfg, dag_id, run["dag_run_id"])
                    for ft in failed or [{"task_id": None, "log": None}]:
                        failures.append(
                            {"logical_date": run["logical_date"], "run_id": run["dag_run_id"], **ft}
                        )
                        msg = (
                            f"FAILED {str(run['logical_date'])[:10]}: task {ft['task_id']}  log: {ft['log']}"
                        )
                        if bar.disable:
                            print(msg, flush=True)
                        else:
                            bar.write(msg)
            active = [r for r in runs if r["state"] == "running"]
            if active:
                run = active[0]
                if run["dag_run_id"] != current_run:
                    current_run, current_task = run["dag_run_id"], "starting"
                if progress:
                    tis = airflow_api.task_instances(cfg, dag_id, run["dag_run_id"], state="running")
                    current_task = ",".join(t["task_id"] for t in tis) or current_task
                current = f"{str(run['logical_date'])[:10]} {current_task}"
            else:
                current = ""
            bar.total = len(runs)
            bar.set_postfix_str(f"failed={len(reported)} {current}".rstrip(), refresh=False)
            if len(done) > bar.n:
                bar.update(len(done) - bar.n)
            elif tty:
                bar.refresh()
            if runs and len(done) == len(runs):
                break
            if deadline is not None and time.monotonic() > deadline:
                states = {r["state"] for r in runs}
                raise StackError(
                    f"{label} of {dag_id}: {len(done)}/{len(runs)} runs finished after {timeout:.0f} s "
                    f"(states {sorted(states)}). The runs go on in the background; see {cfg.airflow_url}."
                )
            time.sleep(poll)
    except KeyboardInterrupt:
        print(f"\nStopped following; the runs go on in Airflow: {cfg.airflow_url}/dags/{dag_id}", flush=True)
        raise
    finally:
        if bar is not None:
            bar.close()
    return {
        "total": len(runs),
        "success": sum(r["state"] == "success" for r in runs),
        "failed": sum(r["state"] == "failed" for r in runs),
        "seconds": round(time.monotonic() - t0, 1),
        "runs": [
            {
                "logical_date": r["logical_date"],
                "state": r["state"],
                "run_id": r["dag_run_id"],
                "seconds": _seconds(r),
            }
            for r in runs
        ],
        "failures": failures,
    }


def trigger(
    cfg: StackConfig,
    dag_id: str,
    logical_date: str | dt.date | dt.datetime,
    conf: Mapping[str, Any] | None = None,
    *,
    run_id: str | None = None,
    wait: bool = True,
    timeout: float | None = 600.0,
    poll: float = 1.0,
) -> str:
    """Trigger one run for `logical_date` (midnight UTC for a date) with `conf`, wait for it; returns its state.

    The DAG is unpaused first (runs of a paused DAG never start).

    Raises:
        StackError: the run is not finished after `timeout` seconds.
    """
    if isinstance(logical_date, dt.datetime):
        when = logical_date if logical_date.tzinfo else logical_date.replace(tzinfo=dt.UTC)
    else:
        d = day(logical_date)
        when = dt.datetime(d.year, d.month, d.day, tzinfo=dt.UTC)
    airflow_api.unpause(cfg, dag_id)
    run = airflow_api.trigger_run(cfg, dag_id, when, conf or {}, run_id)
    if not wait:
        return str(run["state"])
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        run = airflow_api.dag_run(cfg, dag_id, run["dag_run_id"])
        if run["state"] in TERMINAL_STATES:
            return str(run["state"])
        if deadline is not None and time.monotonic() > deadline:
            raise StackError(
                f"run {run['dag_run_id']} of {dag_id} is still {run['state']} after {timeout:.0f} s."
            )
        time.sleep(poll)
