"""Where the local stack lives, which ports it uses and how it runs: `StackConfig`, built from the environment.

Every port comes from the config, so the stack can run beside other Airflow or MLflow instances; tests
build a config with free ports (`StackConfig.for_tests`). The production shape of docker-compose.yaml runs
from the same config as local processes (no containers): a PostgreSQL metadata DB, CeleryExecutor with
Redis and N `airflow celery worker` components, `mlflow server` on PostgreSQL with basic auth, the history
on PostgreSQL (fields executor, airflow_db_url, celery_*, mlflow_backend_store_uri, mlflow_basic_auth,
history_db_url; tests/integration/test_production.py).

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

import os
import socket
import urllib.parse
from collections.abc import Iterable, Mapping
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

# ports the tests' free ports never take: Airflow's and MLflow's defaults and this stack's
_WELL_KNOWN_PORTS = (8080, 8793, 8794, 5000, 8280, 5050, 8893, 8894)


class StackError(DriftwatchError, RuntimeError):
    """The local stack cannot be started, reached or driven; the message says what to do."""


def _env_int(environ: Mapping[str, str], name: str, default: int, *, maximum: int = 65535) -> int:
    raw = environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise StackError(f"{name}: expected an integer. Got {raw!r}.") from None
    if not 0 < value <= maximum:
        raise StackError(f"{name}: expected a value in 1..{maximum}. Got {value}.")
    return value


def _env_idle_sleep(raw: str) -> float:
    try:
        seconds = float(raw)
    except ValueError:
        raise StackError(
            f"DRIFTWATCH_SCHEDULER_IDLE_SLEEP: expected seconds (a number). Got {raw!r}."
        ) from None
    if not 0 < seconds <= 60:
        raise StackError(f"DRIFTWATCH_SCHEDULER_IDLE_SLEEP: expected seconds in (0, 60]. Got {raw!r}.")
    return seconds


def free_port(exclude: Iterable[int] = ()) -> int:
    """A TCP port nobody listens on right now (bound to 127.0.0.1 and released).

    Raises:
        StackError: none found in 50 attempts.
    """
    taken = set(exclude)
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((HOST, 0))
            port: int = s.getsockname()[1]
        if port not in taken:
            return port
    raise StackError("free_port: no free port found after 50 attempts.")


def redact_url(url: str) -> str:
    """A database or broker URL with its password replaced by ***, for messages and logs."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    user = netloc[0].split(":", 1)[0]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[1]}"))


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
            self._check_celery()
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

    def _check_celery(self) -> None:
        if not self.airflow_db_url:
            raise StackError(
                "StackConfig.airflow_db_url: CeleryExecutor needs a server database (the workers and the "
                "result backend share it). Got '' (SQLite); set e.g. postgresql+psycopg2://user:pw@host/airflow."
            )
        if self.celery_workers < 1:
            raise StackError(f"StackConfig.celery_workers: expected at least 1. Got {self.celery_workers}.")
        if not self.celery_log_ports:
            # after the trigger log port; the scheduler serves no task logs under CeleryExecutor
            derived = tuple(self.worker_log_port + 2 + i for i in range(self.celery_workers))
            object.__setattr__(self, "celery_log_ports", derived)
        if len(self.celery_log_ports) != self.celery_workers:
            raise StackError(
                f"StackConfig.celery_log_ports: expected one port per worker ({self.celery_workers}). "
                f"Got {list(self.celery_log_ports)}."
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> StackConfig:
        """The config the environment variables listed in this module's docstring describe.

        Raises:
            StackError: a variable holds a value out of its range, naming it.
        """
        env = os.environ if environ is None else environ
        kwargs: dict[str, Any] = {}
        if env.get("DRIFTWATCH_PARALLELISM"):
            kwargs["parallelism"] = _env_int(env, "DRIFTWATCH_PARALLELISM", 2, maximum=64)
        if env.get("DRIFTWATCH_PRELOAD", "1").lower() in ("0", "false", "no"):
            kwargs["preload_modules"] = ()
        if env.get("DRIFTWATCH_SCHEDULER_IDLE_SLEEP"):
            kwargs["scheduler_idle_sleep"] = _env_idle_sleep(env["DRIFTWATCH_SCHEDULER_IDLE_SLEEP"])
        return cls(
            home=Path(env["DRIFTWATCH_HOME"]) if env.get("DRIFTWATCH_HOME") else home_dir(),
            airflow_port=_env_int(env, "DRIFTWATCH_AIRFLOW_PORT", 8280),
            mlflow_port=_env_int(env, "DRIFTWATCH_MLFLOW_PORT", 5050),
            worker_log_port=_env_int(env, "DRIFTWATCH_WORKER_LOG_PORT", 8893),
            trigger_log_port=_env_int(env, "DRIFTWATCH_TRIGGER_LOG_PORT", 8894),
            mlflow_mode=env.get("DRIFTWATCH_MLFLOW_MODE") or "sqlite",
            mlflow_tracking_uri=env.get("MLFLOW_TRACKING_URI", ""),
            scheduled_runs=env.get("DRIFTWATCH_SCHEDULED_RUNS", "0").lower() in ("1", "true", "yes"),
            **kwargs,
        )

    @classmethod
    def for_tests(cls, home: Path, **overrides: Any) -> StackConfig:
        """A config under `home` whose four ports are all currently free (never 8080/8793/8794/5000), plus
        one free log port per Celery worker when `overrides` ask for CeleryExecutor."""
        ports: list[int] = []
        for _ in range(4):
            ports.append(free_port(exclude=[*ports, *_WELL_KNOWN_PORTS]))
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
                ports.append(free_port(exclude=[*ports, *_WELL_KNOWN_PORTS]))
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
        """One pid file and one log file per component."""
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
        """Every port the stack listens on, by listener name."""
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
        """The Airflow admin password of this home (generated on first use, kept in the password file)."""
        from devstack.private import ensure_password

        return ensure_password(self)

    @property
    def mlflow_admin_password(self) -> str:
        """The MLflow basic-auth admin password of this home (generated on first use, in the secrets file)."""
        from devstack.private import ensure_mlflow_secrets

        return ensure_mlflow_secrets(self)["mlflow_admin_password"]

    @property
    def mlflow_credentials_for_tasks(self) -> bool:
        """Tasks get MLFLOW_TRACKING_USERNAME/PASSWORD: basic auth is on and they talk HTTP to the server (in
        "sqlite" mode they write the store directly and never need the password)."""
        return self.mlflow_basic_auth and self.mlflow_tracking_uri.startswith(("http://", "https://"))
