"""Requests that arrive together are scored together (opportunistic batching, as model servers batch).

Most of a small request's scoring time is fixed cost per call (input checks, one Python call per tree), not
per row: one call for 20 single-row requests costs about what one costs. One scoring thread takes every
request waiting when it becomes free, scores them in one call per served version, and hands each request its
rows' scores. Nothing waits on purpose: alone, a request is scored at once; under load, batches form while
the previous one is scored. A row's score does not depend on the rows beside it (the trees score rows one by
one), so batching changes no score; a batch that fails is scored again request by request, so one bad
request fails alone.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ml.config import Settings

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from ml.serving.model import Served

log = logging.getLogger(__name__)

MAX_BATCH_ROWS = 2000  # rows per scoring call; a larger request is scored alone


@dataclass
class _Item:
    served: Served
    features: pd.DataFrame
    done: threading.Event = field(default_factory=threading.Event)
    result: np.ndarray | None = None
    error: BaseException | None = None
    future: asyncio.Future[np.ndarray] | None = None  # set for a caller on an event loop
    tag: Any = None  # the caller's, handed to `after` with the features

    def finish(self) -> None:
        future = self.future
        if future is None:
            self.done.set()
        else:
            future.get_loop().call_soon_threadsafe(_resolve, future, self.result, self.error)


def _resolve(
    future: asyncio.Future[np.ndarray], result: np.ndarray | None, error: BaseException | None
) -> None:
    if future.done():  # the request was cancelled (client gone)
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)  # type: ignore[arg-type]


class Batcher:
    """`score(served, features)` from any thread; scoring happens in one background thread."""

    def __init__(
        self,
        settings: Settings,
        max_rows: int = MAX_BATCH_ROWS,
        after: Callable[[list[tuple[Any, pd.DataFrame]]], None] | None = None,
    ) -> None:
        self.settings = settings
        self.max_rows = max_rows
        self.after = after
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.batches = 0  # scoring calls made
        self.requests = 0  # requests scored

    def start(self) -> Batcher:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="score-batches", daemon=True)
                self._thread.start()
        return self

    def stop(self) -> None:
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            thread.join(timeout=10)

    def score(self, served: Served, features: pd.DataFrame, tag: Any = None) -> np.ndarray:
        """Positive-class probabilities of `features` by `served`, scored with whatever else is waiting."""
        if self._thread is None:  # not started (tests, scripts): score here
            out = served.score(self.settings, features)
            self._after([(tag, features)])
            return out
        item = _Item(served, features, tag=tag)
        self._queue.put(item)
        item.done.wait()
        if item.error is not None:
            raise item.error
        assert item.result is not None
        return item.result

    async def score_async(self, served: Served, features: pd.DataFrame, tag: Any = None) -> np.ndarray:
        """`score` for a caller on the event loop: it waits without holding a thread."""
        if self._thread is None:
            out = served.score(self.settings, features)
            self._after([(tag, features)])
            return out
        item = _Item(served, features, future=asyncio.get_running_loop().create_future(), tag=tag)
        self._queue.put(item)
        assert item.future is not None
        return await item.future

    def _take(self, first: _Item) -> tuple[list[_Item], bool]:
        """`first` and what waits behind it, up to max_rows rows; True when the stop sentinel was seen."""
        items, rows = [first], len(first.features)
        while rows < self.max_rows:
            try:
                nxt = self._queue.get_nowait()
            except queue.Empty:
                break
            if nxt is None:
                return items, True
            items.append(nxt)
            rows += len(nxt.features)
        return items, False

    def _loop(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is None:
                break
            items, stopping = self._take(first)
            groups: dict[int, list[_Item]] = {}
            for item in items:
                groups.setdefault(id(item.served), []).append(item)
            for group in groups.values():
                self._score(group)
        # requests queued behind the sentinel are still answered
        while True:
            try:
                late = self._queue.get_nowait()
            except queue.Empty:
                return
            if late is not None:
                self._score([late])

    def _score(self, group: list[_Item]) -> None:
        import pandas as pd

        served = group[0].served
        try:
            if len(group) == 1:
                group[0].result = served.score(self.settings, group[0].features)
            else:
                scores = served.score(
                    self.settings, pd.concat([i.features for i in group], ignore_index=True)
                )
                start = 0
                for item in group:
                    item.result = scores[start : start + len(item.features)]
                    start += len(item.features)
            self.batches += 1
            self.requests += len(group)
        except Exception as exc:  # noqa: BLE001 - handed to the request(s) it belongs to
            if len(group) > 1:
                log.info(
                    "serving: a batch of %s requests failed (%s); scoring them one by one", len(group), exc
                )
                for item in group:
                    self._score([item])
                return
            group[0].error = exc
        for item in group:
            item.finish()
        self._after([(i.tag, i.features) for i in group if i.error is None])

    def _after(self, done: list[tuple[Any, pd.DataFrame]]) -> None:
        if self.after is None or not done:
            return
        try:
            self.after(done)
        except Exception:  # noqa: BLE001 - the answered requests are not concerned
            log.exception("serving: the after-scoring hook failed on %s requests", len(done))
