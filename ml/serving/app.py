"""The model server's HTTP app (FastAPI), `create_app(settings)`:

    POST /invocations   score rows (MLflow's input formats, ml/serving/inputs.py) with the version the alias
                        names (ml/serving/model.py); the scored rows are captured (ml/capture.py); with
                        `promotion.mode: shadow`, the version with the alias `shadow` scores them too
                        after the answer, captured apart (ml/shadow.py)
    POST /ground-truth  labels by inference id, stored beside the capture
    GET  /health        ok | degraded | no_model, the versions, the last error, the capture writers' state
    GET  /version       the version served, its run, when it was loaded
    GET  /              the endpoints

Every answer is JSON; nothing is rendered as HTML and no interactive docs are served (request data is
hostile). Bad input gets a 4xx naming the field, the expected type and what was found, never a 500, and is
never captured. The lifespan starts the follower and the writers; shutdown stops the poller and writes what
the writers hold.
"""

from __future__ import annotations

import datetime as dt
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from ml import capture as store
from ml.config import Settings
from ml.registry import SHADOW
from ml.serving import cells, inputs
from ml.serving.batching import Batcher
from ml.serving.model import Follower, Served

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    from starlette.responses import Response

log = logging.getLogger(__name__)

SMALL_BODY_BYTES = (
    16_384  # parsed on the event loop up to this size (about 30 flights rows), else in a thread
)

ENDPOINTS = {
    "POST /invocations": "score rows: JSON dataframe_split | dataframe_records | instances | inputs, or text/csv",
    "POST /ground-truth": 'labels: {"labels": [{"inference_id": "...", "label": ...}, ...]}',
    "GET /health": "ok | degraded | no_model, the versions, the last error, the capture",
    "GET /version": "the model version served",
}


def capture_records(
    settings: Settings, rows: inputs.Rows, scores: np.ndarray, version: int, now: pd.Timestamp | None = None
) -> dict[str, list[Any]]:
    """The capture records of a scored request (the rows `serving.capture_percent` samples by inference id),
    as columns of values (BufferedWriter.add): the row's day (its date column, else the UTC day it arrived),
    the features, the id, when, score, version."""
    import pandas as pd

    now = now if now is not None else pd.Timestamp.now(tz="UTC")
    keep, out = _sampled(settings, rows, now)
    every = len(keep) == len(rows.ids)
    for column in rows.features.columns:
        values = rows.features[column].tolist()
        out[column] = values if every else [values[i] for i in keep]
    scored = scores.tolist()
    out[store.INFERENCE_ID] = [rows.ids[i] for i in keep]
    out[store.CAPTURED_AT] = [now] * len(keep)
    out[store.SCORE] = [float(scored[i]) for i in keep]
    out[store.VERSION] = [int(version)] * len(keep)
    return out


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 past `limit` bytes: by its Content-Length before reading, and while reading
    (a chunked body has none)."""
    declared = request.headers.get("content-length")
    too_big = inputs.InputError(
        413,
        f"the body is larger than {limit} bytes (serving.max_body_bytes): split the request.",
        field="body",
        expected=f"at most {limit} bytes",
    )
    if declared is not None:
        if not declared.strip().isdigit():
            raise inputs.InputError(
                400,
                f"Content-Length {inputs.show(declared)} is not a number.",
                field="Content-Length",
                expected="a number of bytes",
            )
        if int(declared) > limit:
            raise too_big
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_big
        chunks.append(chunk)
    return b"".join(chunks)


def _writer_state(writer: store.BufferedWriter | None) -> dict[str, Any] | None:
    if writer is None:
        return None
    s = writer.stats
    last = (
        dt.datetime.fromtimestamp(s.last_flush, dt.UTC).isoformat(timespec="seconds")
        if s.last_flush
        else None
    )
    return {
        "buffered": s.buffered,
        "written": s.written,
        "files": s.files,
        "last_flush": last,
        "last_error": s.last_error,
    }


class NoSniffing:
    """`X-Content-Type-Options: nosniff` on every answer (plain ASGI: ~0.2 ms a request less than an
    `@app.middleware` function)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_header(message: Any) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"x-content-type-options", b"nosniff")]
            await send(message)

        await self.app(scope, receive, send_with_header)


def _sampled(
    settings: Settings, rows: inputs.Rows, now: pd.Timestamp
) -> tuple[list[int], dict[str, list[Any]]]:
    """The rows `serving.capture_percent` keeps (decided by inference id) and their days (the row's date
    column, else the UTC day it arrived), as the first column of their records."""
    percent = settings.serving.capture_percent
    keep = [i for i, rid in enumerate(rows.ids) if store.sampled(rid, percent)]
    today = now.date()
    return keep, {settings.date_column: [d if d is not None else today for d in (rows.days[i] for i in keep)]}


def shadow_records(
    settings: Settings, rows: inputs.Rows, scores: np.ndarray, version: int, now: pd.Timestamp | None = None
) -> dict[str, list[Any]]:
    """The shadow challenger's records of a scored request (the same rows the capture keeps): day, inference
    id, when, its score and version. Never part of the answer."""
    import pandas as pd

    now = now if now is not None else pd.Timestamp.now(tz="UTC")
    keep, out = _sampled(settings, rows, now)
    scored = scores.tolist()
    out[store.INFERENCE_ID] = [rows.ids[i] for i in keep]
    out[store.CAPTURED_AT] = [now] * len(keep)
    out[store.SHADOW_SCORE] = [float(scored[i]) for i in keep]
    out[store.SHADOW_VERSION] = [int(version)] * len(keep)
    return out


def create_app(settings: Settings, *, follower: Follower | None = None, capture: bool = True) -> FastAPI:
    """The server of `settings`' model. `follower`: one already built (and maybe started); `capture`: False
    scores without capturing (labels are still accepted)."""
    follower = follower or Follower(settings)
    columns = inputs.Columns.of(settings)
    records = store.capture_writer(settings) if capture else None
    labels = store.label_writer(settings)
    limit = settings.serving.max_body_bytes
    # promotion.mode: shadow: the challenger with the alias `shadow` scores every request too, once it has
    # been answered; its scores are captured apart (ml/shadow.py), never returned
    shadowing = capture and settings.promotion.mode == "shadow"
    shadow = Follower(settings, alias=SHADOW, drop_when_gone=True) if shadowing else None
    shadow_capture = store.shadow_writer(settings) if shadowing else None

    def score_in_shadow(done: list[tuple[Any, pd.DataFrame]]) -> None:
        served = shadow.served if shadow is not None else None
        if served is None or shadow_capture is None:
            return
        import pandas as pd

        frames = [features for _, features in done]
        scores = served.score(
            settings, frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
        )
        start = 0
        for rows, features in done:
            shadow_capture.add(
                shadow_records(settings, rows, scores[start : start + len(features)], served.version)
            )
            start += len(features)

    batcher = Batcher(settings, after=score_in_shadow if shadowing else None)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(follower.start)
        if shadow is not None:
            await run_in_threadpool(shadow.start)
        batcher.start()
        # what is loaded now (pandas, scikit-learn, MLflow, the model: millions of objects) is kept for good:
        # out of the collector's full passes, which would otherwise stall every request for ~100 ms now and then
        gc.collect()
        gc.freeze()
        for writer in (records, labels, shadow_capture):
            if writer is not None:
                writer.start()
        try:
            yield
        finally:
            gc.unfreeze()  # an app started in a longer-lived process (tests) gives its objects back
            follower.stop()
            if shadow is not None:
                shadow.stop()
            await run_in_threadpool(batcher.stop)
            for writer in (records, labels, shadow_capture):
                if writer is not None:
                    await run_in_threadpool(writer.close)
            log.info(
                "serving: stopped; captured %s records in %s files, %s labels (%s left unwritten)",
                records.stats.written if records else 0,
                records.stats.files if records else 0,
                labels.stats.written,
                (records.stats.buffered if records else 0) + labels.stats.buffered,
            )

    app = FastAPI(
        title="driftwatch model server", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan
    )
    app.state.follower, app.state.capture, app.state.labels = follower, records, labels
    app.state.batcher, app.state.shadow, app.state.shadow_capture = batcher, shadow, shadow_capture

    @app.exception_handler(inputs.InputError)
    async def refused(request: Request, exc: inputs.InputError) -> Response:
        return JSONResponse(exc.to_dict(), status_code=exc.status)

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception) -> Response:
        log.exception("serving: %s %s failed", request.method, request.url.path)
        return JSONResponse({"error": "internal error: see the server's log"}, status_code=500)

    app.add_middleware(NoSniffing)

    def parse(body: bytes, content_type: str | None, header_id: str | None) -> inputs.Rows:
        return inputs.parse_request(
            body, content_type, columns, new_id=store.new_inference_id, header_id=header_id
        )

    def capture_and_answer(served: Served, rows: inputs.Rows, scores: np.ndarray) -> dict[str, Any]:
        if records is not None:
            records.add(capture_records(settings, rows, scores, served.version))
        return {"predictions": scores.tolist(), "inference_ids": rows.ids, "model_version": served.version}

    @app.post("/invocations")
    async def invocations(request: Request) -> Response:
        served = follower.served  # read once: this request is scored by this version whatever happens next
        if served is None:
            return JSONResponse(
                {"error": follower.health()["error"], "model_version": None},
                status_code=503,
                headers={"Retry-After": str(max(1, round(follower.poll_seconds)))},
            )
        body = await read_body(request, limit)
        args = (body, request.headers.get("content-type"), request.headers.get(inputs.ID_HEADER))
        # a small request is parsed and captured on the event loop (well under a millisecond: cheaper than a
        # hop to a worker thread, and no threads fighting over the GIL); a large one in a worker thread
        small = len(body) <= SMALL_BODY_BYTES
        rows = parse(*args) if small else await run_in_threadpool(parse, *args)
        scores = await batcher.score_async(served, rows.features, rows)
        out = (
            capture_and_answer(served, rows, scores)
            if small
            else await run_in_threadpool(capture_and_answer, served, rows, scores)
        )
        return JSONResponse(out, headers={"X-Model-Version": str(served.version)})

    def store_labels(body: bytes, content_type: str | None) -> int:
        found = inputs.parse_labels(body, content_type, columns.max_rows)
        try:
            ids, values = store.check_labels(settings, found, where="labels")
        except store.LabelError as exc:
            message = str(exc)
            negative, positive = store.label_classes(settings)
            if "field 'inference_id'" in message:
                field, expected = "inference_id", cells.ID
            elif "field 'label'" in message:
                field = "label"
                expected = (
                    f"{negative!r} or {positive!r}" if negative is not None else type(positive).__name__
                )
            else:
                field, expected = "labels", inputs.LABELS_SHAPE
            raise inputs.InputError(422, message, field=field, expected=expected) from None
        labels.add(store.label_frame(settings, ids, values))
        return len(ids)

    @app.post("/ground-truth")
    async def ground_truth(request: Request) -> Response:
        body = await read_body(request, limit)
        accepted = await run_in_threadpool(store_labels, body, request.headers.get("content-type"))
        return JSONResponse({"accepted": accepted})

    @app.get("/health")
    async def health() -> Response:
        out = follower.health()
        out["capture"], out["labels"] = _writer_state(records), _writer_state(labels)
        if shadow is not None:  # a shadow that cannot load is reported; no shadow at all is normal
            state = shadow.health()
            out["shadow"] = {
                "version": state["model_version"],
                "alias_version": state["alias_version"],
                "error": f"v{shadow.failed['version']} cannot be loaded: {shadow.failed['error']}"
                if shadow.failed
                else shadow.registry_error,
                "capture": _writer_state(shadow_capture),
            }
        return JSONResponse(out, status_code=200 if follower.served is not None else 503)

    @app.get("/version")
    async def version() -> Response:
        served = follower.served
        out = {
            "dataset": settings.name,
            "registered_model": settings.registered_model,
            "alias": follower.alias,
            "version": served.version if served else None,
            "run_id": served.run_id if served else None,
            "loaded_at": served.loaded_at.isoformat(timespec="seconds") if served else None,
        }
        if shadow is not None:
            out["shadow_version"] = shadow.served.version if shadow.served else None
        return JSONResponse(out, status_code=200 if served is not None else 503)

    @app.get("/")
    async def index() -> Response:
        return JSONResponse(
            {
                "service": "driftwatch model server",
                "dataset": settings.name,
                "registered_model": settings.registered_model,
                "alias": follower.alias,
                "endpoints": ENDPOINTS,
            }
        )

    return app
