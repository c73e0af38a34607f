"""The capture store (ml/capture.py) and the traffic tool's pure parts (ml/traffic.py), without a server:
buffered atomic files, when a captured day is complete, the day's batch assembled from it, labels joined by
inference id, and the checks that keep bad ground truth out."""

from __future__ import annotations

import datetime as dt
import os
import re
import time

import pandas as pd
import pytest

from ml import capture, traffic
from ml import data as lake
from ml.exceptions import ConfigError

DAY = dt.date(2013, 1, 11)


@pytest.fixture
def live(dw_env, monkeypatch):
    """flights_live with a 10-day original window and fast capture intervals."""
    monkeypatch.setenv("DRIFTWATCH__ORIGINAL_WINDOW__END", "2013-01-10")
    monkeypatch.setenv("DRIFTWATCH__SERVING__FLUSH_SECONDS", "0.05")
    monkeypatch.setenv("DRIFTWATCH__SERVING__SETTLE_SECONDS", "0.2")
    from ml.config import load_settings

    return load_settings("flights_live")


def records(s, day: dt.date, n: int, version: int = 1, start: int = 0) -> pd.DataFrame:
    """n capture records of `day` as the server writes them."""
    rows = {
        s.date_column: [day] * n,
        **{c: [float(i % 7) for i in range(n)] for c in s.numeric},
        **{c: ["AA" if i % 2 else "UA" for i in range(n)] for c in s.categorical},
        capture.INFERENCE_ID: [f"{day}-{start + i:05d}" for i in range(n)],
        capture.CAPTURED_AT: pd.Timestamp.now(tz="UTC"),
        capture.SCORE: [0.25] * n,
        capture.VERSION: version,
    }
    return pd.DataFrame(rows)


def test_the_writer_puts_each_day_in_its_partition_through_a_rename(live):
    w = capture.capture_writer(live)
    w.add(pd.concat([records(live, DAY, 3), records(live, DAY + dt.timedelta(days=1), 2)], ignore_index=True))
    assert w.stats.buffered == 5 and not live.capture_dir.exists()  # nothing on disk before a flush
    files = w.flush()
    assert sorted(p.parent.name for p in files) == ["date=2013-01-11", "date=2013-01-12"]
    assert w.stats.written == 5 and w.stats.buffered == 0 and w.stats.files == 2
    assert not [p for p in live.capture_dir.rglob("*") if p.name.startswith(".")]  # no temporary file left
    got = capture.read_capture(live, DAY)
    assert list(got[capture.INFERENCE_ID]) == [f"{DAY}-{i:05d}" for i in range(3)]
    assert got[capture.VERSION].tolist() == [1, 1, 1]


def test_the_background_flush_writes_every_interval_and_close_writes_the_rest(live):
    w = capture.capture_writer(live).start()
    w.add(records(live, DAY, 4))
    deadline = time.monotonic() + 5
    while not capture.capture_files(live, DAY) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert capture.capture_files(live, DAY), "no flush within 5 s at flush_seconds=0.05"
    w.add(records(live, DAY, 3, start=4))
    w.close()
    assert len(capture.read_capture(live, DAY)) == 7 and w.stats.buffered == 0


def test_a_failed_write_keeps_the_records_for_the_next_flush(live, monkeypatch):
    w = capture.capture_writer(live)
    w.add(records(live, DAY, 3))
    real = capture.atomic_parquet
    monkeypatch.setattr(capture, "atomic_parquet", lambda *a: (_ for _ in ()).throw(OSError("disk full")))
    assert w.flush() == [] and w.stats.buffered == 3 and "disk full" in (w.stats.last_error or "")
    monkeypatch.setattr(capture, "atomic_parquet", real)
    assert len(w.flush()) == 1 and w.stats.buffered == 0 and w.stats.last_error is None
    assert len(capture.read_capture(live, DAY)) == 3


def test_buffered_records_that_cannot_be_assembled_are_kept_not_lost(live, monkeypatch):
    w = capture.capture_writer(live)
    w.add(records(live, DAY, 3))
    real = capture._frame_of
    monkeypatch.setattr(capture, "_frame_of", lambda b: (_ for _ in ()).throw(ValueError("ragged columns")))
    assert w.flush() == [] and w.stats.buffered == 3 and "ragged columns" in (w.stats.last_error or "")
    monkeypatch.setattr(capture, "_frame_of", real)
    assert len(w.flush()) == 1 and w.stats.buffered == 0
    assert len(capture.read_capture(live, DAY)) == 3


def test_sampling_is_decided_by_the_inference_id():
    ids = [f"id-{i}" for i in range(4000)]
    picked = [i for i in ids if capture.sampled(i, 25)]
    assert 800 < len(picked) < 1200
    assert picked == [i for i in ids if capture.sampled(i, 25)]  # the same ids again
    assert all(capture.sampled(i, 100) for i in ids[:50]) and not any(capture.sampled(i, 0) for i in ids[:50])


def test_a_day_is_complete_once_it_is_over_and_its_capture_is_quiet(live):
    assert capture.day_settled(live, DAY) == (False, f"no capture file in {live.capture_dir}/date={DAY} yet")
    w = capture.capture_writer(live)
    w.add(records(live, DAY, 2))
    (path,) = w.flush()
    settled, why = capture.day_settled(live, DAY, now=path.stat().st_mtime + 0.05)
    assert not settled and "serving.settle_seconds=0.2" in why
    assert capture.day_settled(live, DAY, now=path.stat().st_mtime + 1)[0]
    end_of_day = dt.datetime(2013, 1, 12, tzinfo=dt.UTC).timestamp()
    settled, why = capture.day_settled(live, DAY, now=end_of_day - 60)
    assert not settled and "is not over yet" in why


def test_the_day_s_batch_is_assembled_once_with_one_row_per_inference_id(live):
    w = capture.capture_writer(live)
    w.add(records(live, DAY, 3))
    w.flush()
    w.add(records(live, DAY, 2, version=2))  # a retried request: the same ids again, later
    w.flush()
    path = capture.assemble_batch(live, DAY)
    assert path == live.partition_dir(DAY) / capture.BATCH_FILE
    batch = pd.read_parquet(path)
    assert list(batch.columns) == [*live.columns, *capture.META_COLUMNS]
    assert len(batch) == 3 and batch[capture.VERSION].tolist() == [1, 1, 1]  # the first capture wins
    assert batch[live.label].isna().all()
    w.add(records(live, DAY, 5, start=10))
    w.flush()
    assert capture.assemble_batch(live, DAY) == path and len(pd.read_parquet(path)) == 3  # kept as validated


def test_labels_are_joined_by_inference_id_and_only_labelled_rows_are_training_data(live):
    w = capture.capture_writer(live)
    w.add(records(live, DAY, 4))
    w.flush()
    capture.assemble_batch(live, DAY)
    assert lake.read_batch(live, DAY)[live.label].isna().all()
    assert lake.read_days(live, [DAY]).empty

    labels = capture.label_writer(live)
    early = dt.datetime(2013, 1, 12, 8, tzinfo=dt.UTC)
    labels.add(capture.label_frame(live, [f"{DAY}-00000", f"{DAY}-00002"], [1, 0], arrived_at=early))
    labels.add(capture.label_frame(live, [f"{DAY}-00002"], [1], arrived_at=early + dt.timedelta(hours=1)))
    labels.flush()
    batch = lake.read_batch(live, DAY)
    assert batch[live.label].tolist()[0] == 1 and pd.isna(batch[live.label].tolist()[1])
    assert batch[live.label].tolist()[2] == 1  # the later correction wins
    train = lake.read_days(live, [DAY])
    assert train[capture.INFERENCE_ID].tolist() == [f"{DAY}-00000", f"{DAY}-00002"]
    assert lake.model_frame(live, train)[1].tolist() == [1, 1]


def test_the_assembled_batch_passes_validation_with_its_labels_still_to_come(live):
    from ml.validation import validate_frame

    w = capture.capture_writer(live)
    frame = records(live, DAY, 150)
    frame["distance"] = 500.0
    frame["sched_dep_time"] = 900.0
    frame["sched_arr_time"] = 1100.0
    frame["hour"] = 9.0
    frame["pressure"] = 1010.0
    frame["precip"] = 0.0
    frame["origin"] = "JFK"
    frame["dest"] = "BOS"
    w.add(frame)
    w.flush()
    path = capture.assemble_batch(live, DAY)
    result = validate_frame(live, lake.read_files([path]), day=DAY, files=[path])
    assert result.failures == [], [f.message for f in result.failures]
    flights = live.with_overrides(source=None)  # the same batch for a dataset delivered with its labels
    failed = validate_frame(flights, lake.read_files([path]), day=DAY, files=[path]).failures
    assert any("capture" in f.message or "unexpected column" in f.message for f in failed)


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ("x", "record 0: expected an object"),
        ({"label": 1}, "record 0: field 'inference_id': expected a non-empty string"),
        ({"inference_id": 7, "label": 1}, "field 'inference_id': expected a non-empty string"),
        ({"inference_id": "a"}, "field 'label' is missing. Expected 1 or 0"),
        ({"inference_id": "a", "label": 2}, "field 'label' (delayed): expected 0 or 1. Got 2"),
        ({"inference_id": "a", "label": "yes"}, "field 'label' (delayed): expected 0 or 1. Got 'yes'"),
        ({"inference_id": "a", "label": 0.5}, "expected 0 or 1. Got 0.5"),
    ],
)
def test_bad_ground_truth_is_refused_naming_the_record_and_the_field(live, record, message):
    with pytest.raises(capture.LabelError, match=re.escape(message)):
        capture.check_labels(live, [record], where="labels.csv")


def test_ground_truth_accepts_the_two_classes_and_refuses_a_repeated_id(live):
    assert capture.check_labels(
        live, [{"inference_id": "a", "label": True}, {"inference_id": "b", "label": 0}]
    ) == (
        ["a", "b"],
        [1, 0],
    )
    with pytest.raises(capture.LabelError, match="record 1: field 'inference_id': 'a' appears twice"):
        capture.check_labels(live, [{"inference_id": "a", "label": 1}, {"inference_id": "a", "label": 0}])


def test_labels_add_stores_a_file_and_names_a_missing_column(live, tmp_path):
    good = tmp_path / "labels.csv"
    good.write_text("inference_id,delayed\n2013-01-11-00000,1\n2013-01-11-00001,0\n")
    assert traffic.add_labels(live, good) == 2
    assert capture.labels(live).to_dict() == {"2013-01-11-00000": 1, "2013-01-11-00001": 0}
    bad = tmp_path / "bad.csv"
    bad.write_text("id,delayed\nx,1\n")
    with pytest.raises(ConfigError, match=re.escape(f"{bad}: missing column 'inference_id'")):
        traffic.add_labels(live, bad)
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("inference_id,delayed\nx,late\n")
    with pytest.raises(capture.LabelError, match=re.escape(f"{wrong}: record 0: field 'label' (delayed)")):
        traffic.add_labels(live, wrong)


def test_a_captured_dataset_needs_labels_that_arrive_later_and_a_settle_time_past_two_flushes(
    live, monkeypatch
):
    from ml.config import load_settings

    monkeypatch.setenv("DRIFTWATCH__LABEL_DELAY_DAYS", "0")
    with pytest.raises(ConfigError, match=r"label_delay_days: a dataset with `source: capture`.*Got 0"):
        load_settings("flights_live")
    monkeypatch.setenv("DRIFTWATCH__LABEL_DELAY_DAYS", "1")
    monkeypatch.setenv("DRIFTWATCH__SERVING__SETTLE_SECONDS", "0.06")
    with pytest.raises(ConfigError, match=r"serving.settle_seconds: expected at least twice"):
        load_settings("flights_live")


def test_traffic_sends_the_features_without_the_label_with_ids_of_the_day(live, add_partitions):
    from ml.config import load_settings

    flights = load_settings("flights")
    add_partitions(flights, [DAY])
    source = traffic.source_settings(live)
    assert source.name == "flights"
    frame = lake.read_batch(source, DAY)
    bodies = list(traffic.requests_of(live, frame, DAY, batch=100))
    assert sum(len(b["inference_ids"]) for b in bodies) == len(frame)
    first = bodies[0]
    assert first["dataframe_split"]["columns"] == [live.date_column, *live.features]
    assert live.label not in first["dataframe_split"]["columns"]
    assert first["inference_ids"][:2] == [f"{DAY}-00000", f"{DAY}-00001"]
    assert all(isinstance(v, str | float | int) or v is None for v in first["dataframe_split"]["data"][0])
    labels = list(traffic.label_bodies(live, frame, DAY))
    assert sum(len(b["labels"]) for b in labels) == len(frame)
    assert labels[0]["labels"][0] == {"inference_id": f"{DAY}-00000", "label": int(frame[live.label].iloc[0])}


def test_prepare_copies_the_original_window_from_the_source_lake(live, add_partitions):
    from ml.config import load_settings

    days = [dt.date(2013, 1, 1) + dt.timedelta(days=i) for i in range(10)]
    add_partitions(load_settings("flights"), days)
    assert traffic.prepare_history(live) == (10, 0)
    assert traffic.prepare_history(live) == (0, 10)
    copied = lake.read_batch(live, days[0])
    assert list(copied.columns) == live.columns and copied[live.label].notna().all()
    assert os.listdir(live.partition_dir(days[0])) == ["history.parquet"]


def test_traffic_sent_a_day_at_a_time_still_sends_the_labels_of_the_day_served_before(live, add_partitions):
    """`driftwatch traffic --from D --to D`, day after day: each call sends the labels of the day served
    label_delay_days before (found in the capture), never those of a day that was not served."""
    import http.server
    import json
    import threading

    from ml.config import load_settings

    flights = load_settings("flights")
    first, second = DAY, DAY + dt.timedelta(days=1)
    add_partitions(flights, [first, second])
    posts: list[tuple[str, dict]] = []

    class Receiver(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            posts.append((self.path, body))
            out = {"model_version": 1} if self.path == "/invocations" else {"accepted": len(body["labels"])}
            data = json.dumps(out).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        (day1,) = traffic.send(live, url, first, first, rps=0, batch=500, echo=lambda _: None)
        assert day1.labels_sent is None and {p for p, _ in posts} == {"/invocations"}
        w = capture.capture_writer(live)  # what the server would have captured of the first day
        w.add(records(live, first, 3))
        w.close()
        posts.clear()
        (day2,) = traffic.send(live, url, second, second, rps=0, batch=500, echo=lambda _: None)
        labels = [label for path, body in posts if path == "/ground-truth" for label in body["labels"]]
        assert day2.labels_sent == first.isoformat()
        assert len(labels) == day1.rows and labels[0]["inference_id"] == f"{first}-00000"
        posts.clear()
        third = second + dt.timedelta(days=1)
        add_partitions(flights, [third])
        (day3,) = traffic.send(live, url, third, third, rps=0, batch=500, echo=lambda _: None)
        assert day3.labels_sent is None, "the second day was not captured: no labels of it are sent"
    finally:
        server.shutdown()
