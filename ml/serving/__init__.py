"""The model server (`driftwatch serve`): a FastAPI app that scores with the registry version an alias names
and follows the alias as it moves, capturing what it scored for the pipeline (ml/capture.py).

    model.py   Follower: the served version, swapped atomically when the alias moves
    inputs.py  what a request may carry, parsed and validated (pure)
    fast.py    a numpy path through driftwatch's own pipeline, used where it scores exactly as the pipeline
    batching.py  requests waiting together scored in one call (one scoring thread)
    app.py     create_app(settings): the endpoints
    server.py  run(settings, host, port): uvicorn, what the CLI calls
"""

from __future__ import annotations

from ml.serving.app import create_app
from ml.serving.model import Follower

__all__ = ["Follower", "create_app"]
