"""`driftwatch serve`: the app under uvicorn, on loopback unless told otherwise."""

from __future__ import annotations

import logging
import os
import sys

from ml.config import Settings

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5080


def run(settings: Settings, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> int:
    """Load the version the alias names, print where it is served, serve until SIGINT/SIGTERM (which stop the
    poller and write the buffered captures before exiting)."""
    import uvicorn

    from ml.serving import Follower, create_app

    # MLflow's download progress bars would fill the server's log at each switch
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # an unreachable MLflow server is reported by /health after a few tries, not after MLflow's ~2 minutes
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    for name in ("ml.serving", "ml.capture"):
        logging.getLogger(name).setLevel(logging.INFO)
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
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(
            f"warning: listening on {host}: the server has no authentication and no TLS; put a reverse proxy "
            "that has both in front of it",
            file=sys.stderr,
        )
    uvicorn.run(
        create_app(settings, follower=follower),
        host=host,
        port=port,
        access_log=False,
        timeout_graceful_shutdown=10,
    )
    return 0
