"""A challenger in shadow on captured traffic (`source: capture` with `promotion.mode: shadow`), in process on
real flights (no services): the day's `watch_champion` judges the shadow on the scores the model server
captured for it (`_capture_shadow`), found by inference id, not on scores of its own, so a replay or a
backfill of captured days gives the server's shadow test; a day the server did not shadow in full is scored
here instead. The server writing those records: tests/unit/test_serving_shadow.py.

To tell the two apart, the "server" here captures shadow scores no model gives: the label itself (0.05 or
0.95). Judged on them the challenger is perfect and is promoted; the model's own scores are ordinary.
"""

from __future__ import annotations

import datetime as dt
import shutil
import time

import numpy as np
import pandas as pd
import pytest

from ml import capture, live, runner, traffic
from ml import data as lake
from ml.day import RunParams
from tests.unit.test_capture_flow import send_labels, serve_day

pytestmark = pytest.mark.slow  # real training: make test runs it, make test-unit does not

WINDOW = [dt.date(2013, 1, 1) + dt.timedelta(days=i) for i in range(10)]
STARTED = dt.date(2013, 1, 11)  # the challenger goes to shadow
SHADOWED = [STARTED + dt.timedelta(days=i) for i in range(1, 4)]  # shadow_days 3
PARTIAL = SHADOWED[-1]  # the server shadowed only part of this day's rows
DECIDED = SHADOWED[-1] + dt.timedelta(days=1)  # the last shadow day's labels are in: the window is complete
SERVED = [STARTED, *SHADOWED, DECIDED]


def serve_shadow(s, source, frame: pd.DataFrame, day: dt.date, version: int, share: float = 1.0) -> None:
    """What the server captures for the shadow: here the label (0.05 / 0.95), for the first `share` rows."""
    y = lake.model_frame(source, frame)[1].to_numpy()
    keep = int(len(frame) * share)
    records = pd.DataFrame(
        {
            s.date_column: day,
            capture.INFERENCE_ID: traffic.inference_ids(day, len(frame))[:keep],
            capture.CAPTURED_AT: pd.Timestamp.now(tz="UTC"),
            capture.SHADOW_SCORE: (0.05 + 0.9 * y)[:keep],
            capture.SHADOW_VERSION: version,
        }
    )
    writer = capture.shadow_writer(s)
    writer.add(records)
    writer.close()


@pytest.fixture(scope="module")
def shadow_on_capture(tmp_path_factory, flights_partitions):
    from tests.conftest import _clear_caches, isolate

    mp = pytest.MonkeyPatch()
    isolate(mp, tmp_path_factory.mktemp("capture-shadow") / "driftwatch")
    for key, value in {
        "DRIFTWATCH__ORIGINAL_WINDOW__END": "2013-01-10",
        "DRIFTWATCH__THRESHOLDS__BOOTSTRAP_RESAMPLES": "200",
        "DRIFTWATCH__MONITORING__ATTRIBUTION__ROWS": "300",
        "DRIFTWATCH__SERVING__FLUSH_SECONDS": "0.05",
        "DRIFTWATCH__SERVING__SETTLE_SECONDS": "0.1",
        "DRIFTWATCH__PROMOTION__MODE": "shadow",
        "DRIFTWATCH__PROMOTION__SHADOW_DAYS": "3",
        "DRIFTWATCH__PROMOTION__MIN_SHADOW_ROWS": "1000000",  # decided when the window is complete
    }.items():
        mp.setenv(key, value)
    from ml.config import load_settings
    from ml.history import History

    _clear_caches()
    s = load_settings("flights_live")
    source = load_settings("flights")
    for day in WINDOW + SERVED:
        part = source.partition_dir(day)
        if not part.exists():
            shutil.copytree(flights_partitions / f"date={day.isoformat()}", part)
    assert traffic.prepare_history(s) == (10, 0)
    for day in WINDOW:
        runner.run_day_or_raise(s.name, day)
    frames: dict[dt.date, pd.DataFrame] = {}
    outs = {}
    for day in SERVED:
        frames[day] = serve_day(s, source, day)
        if day in SHADOWED:
            serve_shadow(s, source, frames[day], day, version=2, share=0.9 if day == PARTIAL else 1.0)
        before = day - dt.timedelta(days=1)
        if before in frames:
            send_labels(s, frames[before], before)
        time.sleep(0.15)  # the day's capture settles
        forced = RunParams(force_retrain=True, min_delta=-1.0) if day == STARTED else RunParams()
        outs[day] = runner.run_day_or_raise(s.name, day, params=forced)
    yield s, source, frames, outs, History(s.history_url)
    mp.undo()
    _clear_caches()


def test_the_challenger_passing_the_gate_goes_to_shadow_on_captured_traffic(shadow_on_capture):
    s, _, _, _, h = shadow_on_capture
    assert h.get_day(s.name, STARTED)["promotion"] == "shadow"
    assert h.champion_at(s.name, SHADOWED[-1]) == 1


def test_the_watch_judges_the_shadow_on_the_scores_the_server_captured(shadow_on_capture):
    s, source, frames, _, _ = shadow_on_capture
    for day in SHADOWED[:-1]:
        batch = lake.read_batch(s, day)
        judged = lake.read_predictions(s, day, live.CHALLENGER_FILE)
        # the batch's rows in its own order, each with the score captured for its inference id
        captured = pd.Series(
            0.05 + 0.9 * lake.model_frame(source, frames[day])[1].to_numpy(),
            index=traffic.inference_ids(day, len(frames[day])),
        )
        np.testing.assert_allclose(judged["score"], captured.loc[batch[capture.INFERENCE_ID]].to_numpy())
        assert set(judged["champion_version"]) == {2}


def test_a_day_the_server_shadowed_in_part_is_scored_with_the_model(shadow_on_capture):
    s, _, _, _, h = shadow_on_capture
    from ml import registry
    from ml.train import predict_proba

    batch = lake.read_batch(s, PARTIAL)
    judged = lake.read_predictions(s, PARTIAL, live.CHALLENGER_FILE)
    own = predict_proba(registry.version_model(s, h, 2), s, batch)
    np.testing.assert_allclose(judged["score"], own, rtol=1e-9)


def test_the_captured_evidence_decides_and_the_shadow_is_promoted(shadow_on_capture):
    s, _, _, outs, h = shadow_on_capture
    verdict = outs[DECIDED].output("watch_champion")["shadow"]
    assert verdict["verdict"] == "promote" and verdict["acted"] is True, verdict
    assert verdict["days"] == len(SHADOWED)
    # two days of perfect captured scores: a gain no model of one more day's data makes
    assert verdict["ci"]["low"] > 0.1, verdict
    assert h.champion_at(s.name, DECIDED) == 2
    for day in SHADOWED:
        assert h.get_day(s.name, day)["shadow_verdict"] == "shadowing"
