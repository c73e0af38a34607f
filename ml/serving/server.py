"""`driftwatch serve`: the app under uvicorn, on loopback unless told otherwise."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from ml.config import Settings

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5080


def run(settings: Settings, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, workers: int = 1) -> int:
    """Load the version the alias names, print where it is served, serve until SIGINT/SIGTERM (which stop the
    poller and write the buffered captures before exiting). `workers` > 1: that many processes on the port
    (uvicorn's), each following the alias and capturing on its own; one process scores on one core at a time
    (the GIL), so a machine with N cores serves up to N times more."""
    # one OpenMP thread per scoring call (unless the environment says otherwise): a request scores a few rows,
    # where a thread team costs more than it gains (single-row CPU per request 12.7 -> 4.5 ms on 2 cores),
    # and concurrent requests already use every core. Read once, when scikit-learn's OpenMP runtime starts,
    # so it must be set before the model is imported (threadpoolctl's limit would not reach the worker
    # threads that score).
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if settings.task == "multiclass":
        from ml.exceptions import ConfigError

        raise ConfigError(
            f"{settings.yaml_path}: task multiclass: the model server returns one score per row (a binary "
            "task's probability, a regression's value); serving a multiclass model's class probabilities is not "
            "built yet. The daily flow (training, drift, promotion) runs it."
        )
    import uvicorn

    from ml.serving import Follower, create_app

    # MLflow's download progress bars would fill the server's log at each switch
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # an unreachable MLflow server is reported by /health after a few tries, not after MLflow's ~2 minutes
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    for name in ("ml.serving", "ml.capture"):
        logging.getLogger(name).setLevel(logging.INFO)
    if workers > 1:
        os.environ[SETTINGS_ENV] = str(settings.yaml_path)
        print(
            f"{settings.name}: serving {settings.registered_model} at http://{host}:{port}/invocations with "
            f"{workers} worker processes, each following alias '{settings.serving.alias}' and capturing under "
            f"{settings.capture_dir}; GET /health, Ctrl-C stops",
            flush=True,
        )
        _warn_if_open(host)
        uvicorn.run(
            f"{__name__}:app_from_env",
            factory=True,
            workers=workers,
            host=host,
            port=port,
            access_log=False,
            timeout_graceful_shutdown=10,
        )
        return 0
    follower = Follower(settings).start()
    health = follower.health()
    served = f"v{health['model_version']}" if health["model_version"] is not None else "nothing yet"
    note = f" ({health['error']})" if health["error"] else ""
    print(
        f"{settings.name}: serving {settings.registered_model} {served}{note} at http://{host}:{port}/invocations\n"
        f"  following alias '{follower.alias}' (asked every {follower.poll_seconds:g} s); captures under "
        f"{settings.capture_dir}; GET /health, Ctrl-C stops",
        flush=True,
    )
    _warn_if_open(host)
    uvicorn.run(
        create_app(settings, follower=follower),
        host=host,
        port=port,
        access_log=False,
        timeout_graceful_shutdown=10,
    )
    return 0


SETTINGS_ENV = "DRIFTWATCH_SERVE_SETTINGS"  # the dataset YAML of `run(workers > 1)`'s worker processes


def app_from_env() -> Any:
    """The app of one worker process of `run(workers > 1)` (uvicorn calls it in each)."""
    from ml.config import load_settings
    from ml.serving import create_app

    for name in ("ml.serving", "ml.capture"):
        logging.getLogger(name).setLevel(logging.INFO)
    return create_app(load_settings(os.environ[SETTINGS_ENV]))


def _warn_if_open(host: str) -> None:
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(
            f"warning: listening on {host}: the server has no authentication and no TLS; put a reverse proxy "
            "that has both in front of it",
            file=sys.stderr,
        )
