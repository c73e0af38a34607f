"""Bringing the stack up: directories and secrets, the Airflow DB migration, spawning the components and
waiting until each one is healthy."""

from __future__ import annotations

import datetime as dt
import hashlib
import sqlite3
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from devstack import airflow_api, components, private, processes, production
from devstack.config import (
    AIRFLOW_COMPONENTS,
    DEFAULT_COMPONENTS,
    PRIVATE_UMASK,
    StackConfig,
    StackError,
    redact_url,
)
from devstack.processes import component_log, tail

_HEARTBEATS = {
    "scheduler": ("scheduler", "latest_scheduler_heartbeat"),
    "dag-processor": ("dag_processor", "latest_dag_processor_heartbeat"),
    "triggerer": ("triggerer", "latest_triggerer_heartbeat"),
}


def _airflow_version() -> str:
    from importlib.metadata import version

    return version("apache-airflow")


def _use_wal(db: Path) -> None:
    """Switch a SQLite file to write-ahead logging (persistent): readers no longer block the writer."""
    with sqlite3.connect(db, timeout=30) as conn:
        conn.execute("PRAGMA journal_mode=WAL")


def compile_project(cfg: StackConfig) -> list[Path]:
    """Write the bytecode of the project's own modules (the DAG and plugin folders, ml/, devstack/).

    Every task is a new process that imports them, and where PYTHONDONTWRITEBYTECODE is set (or the tree is
    read-only to the tasks) Python compiles each of them again in every task: ~0.05-0.25 s a task, measured
    in docs/benchmarks.md. Only sources newer than their .pyc are compiled (a stat per file otherwise). A
    folder that cannot be written is left as it is: the tasks then compile in memory, as before. Returns
    the folders compiled."""
    import compileall

    import ml

    folders = [cfg.dags_folder, cfg.plugins_folder, Path(ml.__file__).parent, Path(__file__).parent]
    done = []
    for folder in dict.fromkeys(folders):
        if folder.is_dir() and compileall.compile_dir(str(folder), quiet=2, workers=1):
            done.append(folder)
    return done


def init(cfg: StackConfig, *, quiet: bool = False) -> float:
    """Create the directories and secrets and migrate the Airflow DB. Idempotent; returns seconds spent.

    The migration is skipped when a stamp says this home's DB was migrated by the installed Airflow version.

    Raises:
        StackError: `airflow db migrate` failed (with the tail of its output).
    """
    private.secure_home(cfg)
    for d in (cfg.log_dir, cfg.mlflow_artifacts, cfg.home / "lake", cfg.home / "reports"):
        d.mkdir(mode=0o700, parents=True, exist_ok=True)
    compile_project(cfg)
    private.ensure_secrets(cfg)
    private.ensure_password(cfg)
    stamp = cfg.airflow_home / ".migrated"
    version = _airflow_version()
    sqlite = not cfg.airflow_db_url
    if not sqlite:
        # a server DB has no file to check: the stamp names the URL it was written for
        version += " " + hashlib.sha256(cfg.airflow_db_url.encode()).hexdigest()[:16]
    if (cfg.airflow_db.is_file() or not sqlite) and stamp.is_file() and stamp.read_text().strip() == version:
        if sqlite:
            _use_wal(cfg.airflow_db)
        return 0.0
    if not quiet:
        where = cfg.airflow_db if sqlite else redact_url(cfg.airflow_db_url)
        print(f"Migrating the Airflow database {where} ...", flush=True)
    t0 = time.monotonic()
    proc = subprocess.run(
        [components.executable("airflow"), "db", "migrate"],
        env=components.airflow_env(cfg),
        cwd=cfg.home,
        capture_output=True,
        text=True,
        umask=PRIVATE_UMASK,
    )
    if proc.returncode != 0:
        raise StackError(
            f"airflow db migrate failed (exit {proc.returncode}):\n"
            f"{processes.tail_text(proc.stdout + proc.stderr)}"
        )
    if sqlite:
        _use_wal(cfg.airflow_db)
    private.write_private(stamp, version + "\n")
    return time.monotonic() - t0


def spawn(cfg: StackConfig, name: str) -> dict[str, Any]:
    """Start component `name` with its command line and environment (processes.spawn)."""
    return processes.spawn(
        cfg, name, components.component_command(cfg, name), components.component_env(cfg, name)
    )


def start(
    cfg: StackConfig,
    names: Sequence[str] = DEFAULT_COMPONENTS,
    *,
    timeout: float = 240.0,
    quiet: bool = False,
) -> dict[str, float]:
    """Start the components that are not running yet, detached, then wait until all are healthy.

    Runs init(cfg) first when an Airflow component has to start (idempotent; MLflow is spawned before it,
    so it loads while the Airflow DB is migrated).

    Returns seconds to healthy per component started now, and "total" (0 when all were running).
    Raises StackError (with the log tail of the component) when one exits or is not healthy in `timeout`;
    the components it started are stopped again.
    """
    unknown = [c for c in names if c not in cfg.components]
    if unknown:
        raise StackError(f"start: unknown components {unknown}. Known: {list(cfg.components)}.")
    t0 = time.monotonic()
    tightened = private.secure_home(cfg)
    if tightened and not quiet:
        shown = ", ".join(str(p.relative_to(cfg.home)) if p != cfg.home else "." for p in tightened)
        print(f"Made private in {cfg.home} (files 0600, directories 0700): {shown}", flush=True)
    started_at = dt.datetime.now(dt.UTC)
    up = processes.running(cfg)
    processes.check_same_config(cfg, [c for c in names if c in up])
    todo = [c for c in names if c not in up]
    spawned: dict[str, dict[str, Any]] = {}
    try:
        if "mlflow" in todo:
            spawned["mlflow"] = spawn(cfg, "mlflow")
        if any(c in AIRFLOW_COMPONENTS or c in cfg.celery_worker_names for c in todo):
            init(cfg, quiet=quiet)
        for name in todo:
            if name not in spawned:
                spawned[name] = spawn(cfg, name)
        if spawned and not quiet:
            print(f"Starting {', '.join(spawned)} (logs in {cfg.run_dir}) ...", flush=True)
        ready = wait_healthy(cfg, names, timeout=timeout, spawned=spawned, since=started_at)
    except BaseException:
        if spawned:
            processes.stop(cfg, only=list(spawned), quiet=True)
        raise
    timings = {name: round(ready[name] - t0, 1) for name in spawned}
    timings["total"] = round(time.monotonic() - t0, 1) if spawned else 0.0
    return timings


def _http_ok(url: str, timeout: float = 3.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def mlflow_login_ok(cfg: StackConfig) -> bool:
    """The MLflow server accepts this home's admin password (always True without basic auth).

    Raises:
        StackError: it answers 401: its user store was created with another password.
    """
    if not cfg.mlflow_basic_auth:
        return True
    url = f"{cfg.mlflow_url}/api/2.0/mlflow/users/current"
    req = urllib.request.Request(url, headers=private.mlflow_auth_header(cfg))
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return bool(resp.status == 200)
    except urllib.error.HTTPError as exc:
        if exc.code == 401:
            raise StackError(
                f"MLflow at {cfg.mlflow_url} refuses the admin password of {cfg.secrets_file}: its user store "
                f"{cfg.mlflow_auth_db} was created with another one. Stop the stack (`make down`) and delete "
                f"{cfg.mlflow_auth_db} (the users only, not the runs or models): the next start creates the admin "
                "with the password of the secrets file."
            ) from None
        return False
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _fresh_heartbeats(
    cfg: StackConfig, pending: set[str], spawned: Mapping[str, Any], since: dt.datetime | None
) -> set[str]:
    """The components of `pending` whose heartbeat in GET /api/v2/monitor/health is healthy (and newer than
    `since` for the ones just spawned, so a heartbeat left in the DB by a dead process does not count)."""
    try:
        report = airflow_api.health(cfg)
    except StackError:
        return set()
    fresh = set()
    for name, (key, beat_key) in _HEARTBEATS.items():
        info = report.get(key) or {}
        beat = airflow_api.parse_time(info.get(beat_key))
        new_enough = beat is not None and (name not in spawned or since is None or beat >= since)
        if name in pending and info.get("status") == "healthy" and new_enough:
            fresh.add(name)
    return fresh


def wait_healthy(
    cfg: StackConfig,
    names: Sequence[str] = DEFAULT_COMPONENTS,
    *,
    timeout: float = 240.0,
    spawned: Mapping[str, Mapping[str, Any]] | None = None,
    since: dt.datetime | None = None,
) -> dict[str, float]:
    """Wait until every component answers: MLflow GET /health (and a login as admin when basic auth is on),
    the API server GET /api/v2/version (and the execution API), the Celery workers' "ready" line, and the
    scheduler, dag-processor and triggerer heartbeats (see _fresh_heartbeats).

    Returns the time.monotonic() at which each component was first seen healthy.
    Raises:
        StackError: a spawned component exited, or `timeout` passed (with the tails of their logs).
    """
    spawned = spawned or {}
    ready: dict[str, float] = {}
    deadline = time.monotonic() + timeout
    pending = set(names)

    def healthy(*found: str) -> None:
        pending.difference_update(found)
        ready.update(dict.fromkeys(found, time.monotonic()))

    while True:
        for name, record in spawned.items():
            if name in pending and not processes.alive(record):
                raise StackError(
                    f"{name} exited during start-up. Last lines of {component_log(cfg, name)}:\n"
                    f"{tail(component_log(cfg, name))}"
                )
        if "mlflow" in pending and _http_ok(f"{cfg.mlflow_url}/health") and mlflow_login_ok(cfg):
            healthy("mlflow")
        healthy(
            *(
                n
                for n in sorted(pending & set(cfg.celery_worker_names))
                if production.celery_worker_ready(cfg, n)
            )
        )
        # the execution API (what tasks call) initialises on its first request, ~4 s: do it now
        if (
            pending & {"api-server", *_HEARTBEATS}
            and airflow_api.version(cfg) is not None
            and _http_ok(f"{cfg.airflow_url}/execution/health", timeout=30)
        ):
            healthy(*({"api-server"} & pending))
            healthy(*_fresh_heartbeats(cfg, pending, spawned, since))
        if not pending:
            return ready
        if time.monotonic() > deadline:
            details = "\n".join(
                f"--- {name}: last lines of {component_log(cfg, name)}\n{tail(component_log(cfg, name), 15)}"
                for name in sorted(pending)
            )
            raise StackError(f"not healthy after {timeout:.0f} s: {sorted(pending)}\n{details}")
        time.sleep(0.5)
