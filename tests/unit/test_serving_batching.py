"""Opportunistic batching (ml/serving/batching.py): requests waiting together are scored in one call, each
gets its own rows' scores, and a batch that fails is scored again request by request."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading

import numpy as np
import pandas as pd
import pytest

from ml.config import load_settings
from ml.serving.batching import Batcher
from ml.serving.model import Served


class Scorer:
    """Scores a row by its `x` (x / 1000); refuses x < 0; the first call blocks until released, so that
    the requests sent meanwhile queue up behind it."""

    def __init__(self) -> None:
        self.calls: list[int] = []
        self.release = threading.Event()

    def __call__(self, features: pd.DataFrame) -> np.ndarray:
        if not self.calls:
            self.release.wait(10)
        self.calls.append(len(features))
        if (features["x"] < 0).any():
            raise ValueError("negative x")
        return features["x"].to_numpy(dtype="float64") / 1000


def _served(scorer: Scorer, version: int = 1) -> Served:
    return Served(version, None, model=None, loaded_at=dt.datetime.now(dt.UTC), fast=scorer)


def _frame(*xs: float) -> pd.DataFrame:
    return pd.DataFrame({"x": list(xs)})


@pytest.fixture
def batcher():
    b = Batcher(load_settings("flights", environ={})).start()
    yield b
    b.stop()


def _send_while_blocked(batcher: Batcher, scorer: Scorer, requests: list[tuple[Served, pd.DataFrame]]):
    results: dict[int, object] = {}

    def one(i: int, served: Served, frame: pd.DataFrame) -> None:
        try:
            results[i] = batcher.score(served, frame).tolist()
        except Exception as exc:  # noqa: BLE001 - recorded for the assertion
            results[i] = exc

    first = threading.Thread(target=one, args=(-1, requests[0][0], _frame(1)))
    first.start()
    while batcher._queue.qsize():  # the first request is being scored (and blocks)
        pass
    threads = [threading.Thread(target=one, args=(i, s, f)) for i, (s, f) in enumerate(requests)]
    for t in threads:
        t.start()
    while batcher._queue.qsize() < len(requests):
        threading.Event().wait(0.005)
    scorer.release.set()
    for t in [first, *threads]:
        t.join(10)
    return results


def test_requests_waiting_together_are_scored_in_one_call_each_with_its_rows(batcher):
    scorer = Scorer()
    served = _served(scorer)
    requests = [(served, _frame(*range(10 * i, 10 * i + i + 1))) for i in range(8)]
    results = _send_while_blocked(batcher, scorer, requests)
    assert scorer.calls == [1, sum(len(f) for _, f in requests)]  # the blocked one, then all eight at once
    for i, (_, frame) in enumerate(requests):
        assert results[i] == (frame["x"] / 1000).tolist()


def test_each_version_is_scored_by_its_own_model(batcher):
    old, new = Scorer(), Scorer()
    new.release.set()
    v1, v2 = _served(old, 1), _served(new, 2)
    requests = [(v1, _frame(1, 2)), (v2, _frame(3)), (v1, _frame(4))]
    results = _send_while_blocked(batcher, old, requests)
    assert old.calls == [1, 3] and new.calls == [1]
    assert results[0] == [0.001, 0.002] and results[1] == [0.003] and results[2] == [0.004]


def test_a_failing_batch_is_scored_again_request_by_request_and_only_the_bad_one_fails(batcher):
    scorer = Scorer()
    served = _served(scorer)
    requests = [(served, _frame(1)), (served, _frame(-1)), (served, _frame(2, 3))]
    results = _send_while_blocked(batcher, scorer, requests)
    assert scorer.calls == [1, 4, 1, 1, 2]
    assert results[0] == [0.001] and results[2] == [0.002, 0.003]
    assert isinstance(results[1], ValueError)


def test_a_caller_on_an_event_loop_waits_without_a_thread(batcher):
    scorer = Scorer()
    scorer.release.set()

    async def main() -> list[list[float]]:
        served = _served(scorer)
        out = await asyncio.gather(*(batcher.score_async(served, _frame(i)) for i in range(5)))
        return [o.tolist() for o in out]

    assert asyncio.run(main()) == [[i / 1000] for i in range(5)]
    assert sum(scorer.calls) == 5


def test_stopped_it_scores_in_the_callers_thread():
    scorer = Scorer()
    scorer.release.set()
    b = Batcher(load_settings("flights", environ={}))
    assert b.score(_served(scorer), _frame(5)).tolist() == [0.005]
