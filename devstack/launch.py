"""Entry points that run inside Airflow's own processes (the scheduler, triggerer, Celery workers, the CLI).

Each wraps the airflow CLI with one change Airflow has no setting for:

    airflow_loopback       task-log servers on 127.0.0.1 (Airflow binds them to every interface)
    airflow_preloaded      the ML libraries imported before Celery forks its pool, then as airflow_loopback
                           (docker-compose.yaml's airflow-worker runs it too)
    airflow_cli_immediate  SQLite transactions as BEGIN IMMEDIATE (the backfill CLI beside a busy scheduler)
    loopback_hostname      [core] hostname_callable: the address the log servers listen on

Airflow components run them as `python -c "from devstack.launch import X; X()" <airflow args>`
(`command`). This module imports nothing heavy at import time: hostname_callable imports it in every task.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

from devstack.config import HOST, PRELOAD_MODULES


def command(entry: str, *args: str) -> list[str]:
    """The command line running `entry` (a function of this module) with the airflow CLI arguments `args`."""
    return [sys.executable, "-c", f"from devstack.launch import {entry}; {entry}()", *args]


def loopback_hostname() -> str:
    """[core] hostname_callable of the stack: the address its log servers listen on (see components)."""
    return HOST


def serve_logs_on_loopback(port: int | None = None) -> None:
    """Airflow's task-log server (airflow.utils.serve_logs.serve_logs) listening on 127.0.0.1 only.

    Airflow 3.3 passes host="" to uvicorn, which listens on every IPv4 and IPv6 interface, and offers no
    setting for it (a bind-address option was proposed upstream in 2018 and not merged). This runs Airflow's
    own function, with the same port, app and log level, in its own process (the one Airflow starts for it),
    where uvicorn.run is wrapped to use 127.0.0.1. tests/integration/test_stack.py checks the addresses.
    """
    import uvicorn
    from airflow.utils.serve_logs import core

    run = uvicorn.run

    def run_on_loopback(app: Any, *args: Any, **kwargs: Any) -> None:
        kwargs["host"] = HOST
        run(app, *args, **kwargs)

    # only in this process, which serves the logs and does nothing else
    uvicorn.run = run_on_loopback
    print(f"driftwatch: the task-log server listens on {HOST} only", file=sys.stderr, flush=True)
    core.serve_logs(port)


def airflow_loopback() -> None:
    """Entry point: the airflow CLI (`scheduler`, `triggerer`, `celery worker`) with its task-log server on
    127.0.0.1 (serve_logs_on_loopback).

    The three commands import `serve_logs` from airflow.utils.serve_logs when they start its process, so
    replacing it there is enough; the replacement is a module-level function, so a forkserver or spawn
    start method (the scheduler's forkserver) finds it by name.
    """
    import airflow.utils.serve_logs

    airflow.utils.serve_logs.serve_logs = serve_logs_on_loopback
    from airflow.__main__ import main as airflow_main

    sys.exit(airflow_main())


def airflow_preloaded() -> None:
    """Entry point: the airflow CLI with DRIFTWATCH_PRELOAD_MODULES imported first (comma-separated;
    default config.PRELOAD_MODULES; empty for none).

    For `airflow celery worker`: Celery's prefork pool processes, and every task process they fork, inherit
    the modules instead of importing them per task, the Celery counterpart of the scheduler's forkserver
    preload under LocalExecutor. A module that fails to import is skipped. Then as airflow_loopback.
    """
    raw = os.environ.get("DRIFTWATCH_PRELOAD_MODULES")
    names = PRELOAD_MODULES if raw is None else tuple(n.strip() for n in raw.split(",") if n.strip())
    # before airflow: it sets up INFO logging, and great_expectations logs ~250 lines while it imports
    for module in (*names, "airflow", "airflow.sdk.execution_time.supervisor"):
        try:
            importlib.import_module(module)
        except Exception as exc:  # noqa: BLE001 - a missing optional library only costs speed
            print(f"airflow_preloaded: not preloading {module}: {exc}", file=sys.stderr, flush=True)
    airflow_loopback()


def airflow_cli_immediate() -> None:
    """Entry point: the airflow CLI with every SQLite transaction opened as BEGIN IMMEDIATE.

    Airflow opens deferred transactions. When another process commits between a transaction's first read
    and its first write, SQLite fails the write at once with "database is locked": the busy timeout does
    not apply to that case, and the backfill CLI (one long transaction creating every run) hits it against
    a working scheduler almost every time (8 of 8 attempts in a stress run). BEGIN IMMEDIATE takes the
    write lock first, where the busy timeout does apply (0 of 8). This is SQLAlchemy's documented pysqlite
    recipe; it is applied to this CLI process only, the long-running components are left as they are.
    """
    from airflow import settings
    from sqlalchemy import event

    engine = settings.engine
    if engine is not None and engine.dialect.name == "sqlite":

        @event.listens_for(engine, "connect")
        def _no_implicit_begin(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None

        @event.listens_for(engine, "begin")
        def _begin_immediate(connection: Any) -> None:
            connection.exec_driver_sql("BEGIN IMMEDIATE")

        engine.dispose()  # connections made before the listeners existed
    from airflow.__main__ import main as airflow_main

    sys.exit(airflow_main())
