"""Each component's command line and environment: the Airflow settings of the stack, `mlflow server`, and the
environment of the model server run beside them (`client_env`).

The Celery workers of the production shape are in devstack.production; this module dispatches to it.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from devstack import launch, private, production
from devstack.config import ADMIN_USER, AIRFLOW_COMPONENTS, ALL_COMPONENTS, HOST, StackConfig, StackError

# Airflow components that start a task-log server (run through launch.airflow_loopback)
LOG_SERVING = ("scheduler", "triggerer")


def executable(name: str) -> str:
    """The path of a console script of this Python environment (`airflow`, `mlflow`), else from PATH."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else (shutil.which(name) or name)


def airflow_env(cfg: StackConfig, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The full environment of every Airflow process of this stack (and of the tasks they run).

    Inherited AIRFLOW__* variables the stack does not set are kept, so a developer can still tune one.
    """
    env = dict(os.environ if base is None else base)
    keys = private.ensure_secrets(cfg)
    private.ensure_password(cfg)
    settings: dict[str, Any] = {
        "AIRFLOW_HOME": cfg.airflow_home,
        "AIRFLOW_CONFIG": cfg.airflow_home / "airflow.cfg",
        # wait up to 30 s for a lock instead of Python's 5 s: scheduler, API server, dag-processor and the
        # backfill CLI all write to the one file (startup.init also switches it to WAL)
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": cfg.airflow_db_url or f"sqlite:///{cfg.airflow_db}?timeout=30",
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
        # the log servers listen on 127.0.0.1 only (launch.airflow_loopback), and the API server fetches a
        # running task's log from http://<the task's hostname>:<port>: that hostname must be 127.0.0.1 too
        # (the machine's name may resolve to 127.0.1.1 or a LAN address)
        "AIRFLOW__CORE__HOSTNAME_CALLABLE": "devstack.launch.loopback_hostname",
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
    if cfg.history_db_url:
        settings["DRIFTWATCH_DB_URL"] = cfg.history_db_url
    if cfg.mlflow_credentials_for_tasks:
        settings["MLFLOW_TRACKING_USERNAME"] = ADMIN_USER
        settings["MLFLOW_TRACKING_PASSWORD"] = cfg.mlflow_admin_password
    if cfg.executor == "CeleryExecutor":
        settings.update(production.celery_settings(cfg))
    if cfg.preload_modules and cfg.executor == "LocalExecutor":
        # under CeleryExecutor the workers run the tasks and preload instead (launch.airflow_preloaded)
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


def client_env(cfg: StackConfig, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a driftwatch process run beside the stack (the model server of `make serve`): the
    home, tracking URI, MLflow login and history database the tasks get from `airflow_env`, nothing of Airflow.
    """
    env = dict(os.environ if base is None else base)
    settings: dict[str, Any] = {"DRIFTWATCH_HOME": cfg.home, "MLFLOW_TRACKING_URI": cfg.mlflow_tracking_uri}
    if cfg.history_db_url:
        settings["DRIFTWATCH_DB_URL"] = cfg.history_db_url
    if cfg.mlflow_credentials_for_tasks:
        settings["MLFLOW_TRACKING_USERNAME"] = ADMIN_USER
        settings["MLFLOW_TRACKING_PASSWORD"] = cfg.mlflow_admin_password
    env.update({k: str(v) for k, v in settings.items()})
    env.update({k: str(v) for k, v in cfg.extra_env.items()})
    return env


def mlflow_command(cfg: StackConfig) -> list[str]:
    """The `mlflow server` command line for this stack's MLflow mode (no password on it)."""
    cmd = [executable("mlflow"), "server", "--host", HOST, "--port", str(cfg.mlflow_port)]
    if not cfg.mlflow_backend_store_uri:
        # a server store travels as MLFLOW_BACKEND_STORE_URI (mlflow_env): a password in argv shows in `ps`
        cmd += ["--backend-store-uri", f"sqlite:///{cfg.mlflow_db}"]
    cmd += ["--workers", "1"]
    if cfg.mlflow_basic_auth:
        cmd += ["--app-name", "basic-auth"]
    if cfg.mlflow_mode == "server":
        # new experiments get mlflow-artifacts:/ locations; the server stores their files here
        cmd += ["--serve-artifacts", "--artifacts-destination", str(cfg.mlflow_artifacts)]
    else:
        # tasks write artifacts as local files; the server only reads them for the UI
        cmd += ["--default-artifact-root", str(cfg.mlflow_artifacts)]
    return cmd


def mlflow_env(cfg: StackConfig) -> dict[str, str]:
    """The MLflow server's environment: no Airflow setting, its store URL and basic-auth secrets."""
    env = dict(os.environ)
    env.update({k: str(v) for k, v in cfg.extra_env.items()})
    env.pop("MLFLOW_TRACKING_URI", None)
    # the job runner (GenAI scorers, trace archival) forks ~8 huey consumers, ~900 MB, unused here
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    if cfg.mlflow_backend_store_uri:
        env["MLFLOW_BACKEND_STORE_URI"] = cfg.mlflow_backend_store_uri
    if cfg.mlflow_basic_auth:
        env["MLFLOW_AUTH_CONFIG_PATH"] = str(private.mlflow_auth_config(cfg))
        keys = private.ensure_mlflow_secrets(cfg)
        env["MLFLOW_AUTH_ADMIN_PASSWORD"] = keys["mlflow_admin_password"]
        env["MLFLOW_FLASK_SERVER_SECRET_KEY"] = keys["mlflow_secret_key"]
    return env


def component_command(cfg: StackConfig, name: str) -> list[str]:
    """The command line of component `name` (one of cfg.components).

    Raises:
        StackError: `name` is not a component of this config.
    """
    if name == "mlflow":
        return mlflow_command(cfg)
    if name in cfg.celery_worker_names:
        return production.celery_worker_command(cfg, name)
    if name not in AIRFLOW_COMPONENTS:
        raise StackError(f"start: unknown component {name!r}. Known: {list(ALL_COMPONENTS)}.")
    if name in LOG_SERVING:
        return launch.command("airflow_loopback", name)
    return [executable("airflow"), name]


def component_env(cfg: StackConfig, name: str) -> dict[str, str]:
    """The environment of component `name`."""
    if name == "mlflow":
        return mlflow_env(cfg)
    env = airflow_env(cfg)
    if name in cfg.celery_worker_names:
        env.update(production.celery_worker_env(cfg, name))
    if name in cfg.celery_worker_names or (name == "scheduler" and cfg.executor == "LocalExecutor"):
        # one OpenMP thread per task slot (override by setting it): the OpenMP threads of scikit-learn's
        # gradient boosting spin while they wait, so tasks of several slots or workers sharing the cores
        # (monitor_model beside detect_drift, or two datasets) starve each other. Measured here, a 0.9 s
        # fit took 9-12 s with two at once, 0.2-0.5 s with 1.
        env.setdefault("OMP_NUM_THREADS", "1")
    return env
