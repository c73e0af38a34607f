"""The production shape of docker-compose.yaml as local processes: CeleryExecutor with Redis and N
`airflow celery worker` components (the rest of that shape, PostgreSQL for Airflow, MLflow and the history
and MLflow's basic auth, is StackConfig fields read by devstack.components).

Each worker is a component `celery-worker-<i>` with its own task-log server port (on 127.0.0.1), consuming
`cfg.celery_queue`, with the ML libraries preloaded before Celery forks its pool (launch.airflow_preloaded).
"""

from __future__ import annotations

from typing import Any

from devstack import launch, processes
from devstack.config import StackConfig


def celery_settings(cfg: StackConfig) -> dict[str, Any]:
    """The Airflow settings of every process under CeleryExecutor (added to components.airflow_env)."""
    settings: dict[str, Any] = {
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__CELERY__BROKER_URL": cfg.celery_broker_url,
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": cfg.celery_concurrency,
        "AIRFLOW__OPERATORS__DEFAULT_QUEUE": cfg.celery_queue,
        # Redis redelivers a task still unacknowledged after this long (acks are late): longer than any
        # task here, and said explicitly so every worker stops warning about the default
        "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT": "21600",
    }
    if cfg.celery_result_backend:
        settings["AIRFLOW__CELERY__RESULT_BACKEND"] = cfg.celery_result_backend
    return settings


def celery_worker_command(cfg: StackConfig, name: str) -> list[str]:
    """`airflow celery worker` for the worker component `name`, through launch.airflow_preloaded when the
    config preloads modules, else launch.airflow_loopback (both serve its task logs on 127.0.0.1)."""
    entry = "airflow_preloaded" if cfg.preload_modules else "airflow_loopback"
    return launch.command(
        entry, "celery", "worker",
        "--celery-hostname", f"{name}@%h",
        "--queues", cfg.celery_queue,
        "--concurrency", str(cfg.celery_concurrency),
        # no start-up sync with other workers (~1 s each) and no gossip traffic: nothing here uses them
        "--without-mingle", "--without-gossip",
    )  # fmt: skip


def celery_worker_env(cfg: StackConfig, name: str) -> dict[str, str]:
    """What worker `name` adds to the Airflow environment: its log server port and the modules to preload."""
    return {
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(cfg.ports[f"{name}-log-server"]),
        "DRIFTWATCH_PRELOAD_MODULES": ",".join(cfg.preload_modules),
    }


def celery_worker_ready(cfg: StackConfig, name: str) -> bool:
    """Celery logged "<node> ready." since the last start of this worker (it consumes its queue then)."""
    text = processes.tail(processes.component_log(cfg, name), 400)
    since_start = text.rsplit("\n==== ", 1)[-1]
    return f"{name}@" in since_start and " ready." in since_start
