"""The daily flow of a dataset monitored from its captured traffic (`source: capture`, ml/datasets/flights_live.yaml),
in process on real flights (no services): the original window is copied history, later days are what the
champion scored, their labels arrive a day later (some never), the flow assembles each day's batch from the
capture, records the realized quality of the day before on its labelled rows, and trains only on labelled rows.

The captures are written by the capture writer the model server uses (ml/capture.py); tests/integration/
test_serving.py drives the real server.
"""

from __future__ import annotations

import datetime as dt
import time

import pandas as pd
import pytest

from ml import capture, runner, traffic
from ml import data as lake
from ml.day import RunParams

pytestmark = pytest.mark.slow  # real training: make test runs it, make test-unit does not

WINDOW = [dt.date(2013, 1, 1) + dt.timedelta(days=i) for i in range(10)]
SERVED = [dt.date(2013, 1, 11) + dt.timedelta(days=i) for i in range(5)]
NEVER_LABELLED = 0.1  # the share of each day's rows whose label never arrives


def serve_day(s, source, day: dt.date) -> pd.DataFrame:
    """What the server does for a day of traffic: score each row with the champion, capture it."""
    from ml import registry
    from ml.promotion import champion_alias
    from ml.train import predict_proba

    frame = lake.read_batch(source, day)
    version = champion_alias(s)
    assert version is not None
    scores = predict_proba(registry.load_model(s, version), s, frame)
    records = frame[[s.date_column, *s.features]].assign(
        **{
            capture.INFERENCE_ID: traffic.inference_ids(day, len(frame)),
            capture.CAPTURED_AT: pd.Timestamp.now(tz="UTC"),
            capture.SCORE: scores,
            capture.VERSION: version,
        }
    )
    records[s.date_column] = day
    writer = capture.capture_writer(s)
    writer.add(records)
    writer.close()
    return frame


def send_labels(s, frame: pd.DataFrame, day: dt.date) -> int:
    """The labels of `day` arrive, except the last NEVER_LABELLED share of its rows."""
    keep = len(frame) - int(len(frame) * NEVER_LABELLED)
    writer = capture.label_writer(s)
    writer.add(capture.label_frame(s, traffic.inference_ids(day, len(frame))[:keep], frame[s.label][:keep]))
    writer.close()
    return keep


@pytest.fixture
def captured_run(dw_env, monkeypatch, add_partitions):
    monkeypatch.setenv("DRIFTWATCH__ORIGINAL_WINDOW__END", "2013-01-10")
    monkeypatch.setenv("DRIFTWATCH__THRESHOLDS__BOOTSTRAP_RESAMPLES", "200")
    monkeypatch.setenv("DRIFTWATCH__MONITORING__ATTRIBUTION__ROWS", "500")
    monkeypatch.setenv("DRIFTWATCH__SERVING__FLUSH_SECONDS", "0.05")
    monkeypatch.setenv("DRIFTWATCH__SERVING__SETTLE_SECONDS", "0.1")
    from ml.config import load_settings
    from ml.day import settings_for
    from ml.history import History

    settings_for.cache_clear()
    s = load_settings("flights_live")
    source = load_settings("flights")
    add_partitions(source, WINDOW + SERVED)
    assert traffic.prepare_history(s) == (10, 0)
    for day in WINDOW:
        runner.run_day_or_raise(s.name, day)
    labelled: dict[str, int] = {}
    frames: dict[dt.date, pd.DataFrame] = {}
    for day in SERVED:
        frames[day] = serve_day(s, source, day)
        before = day - dt.timedelta(days=1)
        if before in frames:
            labelled[before.isoformat()] = send_labels(s, frames[before], before)
        time.sleep(0.15)  # the day's capture settles
        last = day == SERVED[-1]
        runner.run_day_or_raise(s.name, day, params=RunParams(force_retrain=last))
    rows = {r["day"]: r for r in History(s.history_url).days(s.name)}
    return s, frames, labelled, rows


def test_each_served_day_is_assembled_from_its_capture_and_accepted(captured_run):
    s, frames, _, rows = captured_run
    for day in SERVED:
        assert rows[day.isoformat()]["status"] == "accepted", rows[day.isoformat()]
        batch = pd.read_parquet(s.partition_dir(day) / capture.BATCH_FILE)
        assert len(batch) == len(frames[day]) and batch[capture.VERSION].eq(1).all()
        assert batch[s.label].isna().all()  # labels are joined when read, never written into the batch


def test_the_labels_of_the_day_before_give_its_realized_quality_on_the_labelled_rows(captured_run):
    s, frames, labelled, rows = captured_run
    from ml.evaluate import classification_metrics

    for day in SERVED[:-1]:
        row = rows[day.isoformat()]
        assert row["labels_known_on"] == (day + dt.timedelta(days=1)).isoformat()
        quality = row["quality"]
        assert quality["rows"] == labelled[day.isoformat()] < len(frames[day]) == quality["batch_rows"]
        preds = lake.read_predictions(s, day)
        keep = labelled[day.isoformat()]
        expected = classification_metrics(
            frames[day][s.label][:keep].to_numpy(), preds["score"][:keep].to_numpy()
        )
        assert quality["roc_auc"] == pytest.approx(expected["roc_auc"])
    last = rows[SERVED[-1].isoformat()]
    assert last.get("labels_known_on") is None and last["estimated_quality"]["roc_auc"] is not None


def test_the_challenger_trains_only_on_labelled_rows(captured_run):
    s, frames, labelled, rows = captured_run
    from ml.history import History
    from ml.train import split_days

    h = History(s.history_url)
    last = rows[SERVED[-1].isoformat()]
    assert last["decision"] == "retrain" and last["candidate_version"], last
    split = split_days(s, h, SERVED[-1])
    # the last served day's labels have not arrived: it is not usable; the others count with their labels
    assert SERVED[-1] not in split.train_days + split.holdout_days
    expected_rows = sum(
        labelled[d.isoformat()] if d in frames else len(lake.read_batch(s, d))
        for d in split.train_days + split.holdout_days
    )
    train, holdout = lake.read_days(s, split.train_days), lake.read_days(s, split.holdout_days)
    assert len(train) + len(holdout) == expected_rows
    assert train[s.label].notna().all() and holdout[s.label].notna().all()
    model = h.get_model(s.name, int(last["candidate_version"]))
    assert model is not None and model["train_rows"] == len(train)
