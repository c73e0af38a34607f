"""The production loop end to end, with real parts: traffic -> the model server's capture -> the DAG ->
retrain and promote -> the server switches -> the next captures carry the new version; labels arrive a day
after the predictions.

flights_cap (tests/stack_fixtures.py: the bundled flights_live with a 5-day original window, 2-day holdout)
on the yaml-datasets stack (real scheduler, API server, MLflow server with basic auth), `driftwatch serve` as
a real process on a free port, `ml.traffic` sending the real flights of each day:

  Jan 1-5   history copied from flights_src's lake; the backfill trains v1 on Jan 5 (the server serves it)
  Jan 6     traffic; the DAG assembles the day from the capture, monitors it (labels not there yet)
  Jan 7     traffic, then Jan 6's labels; the run is forced to retrain and promote (min_delta -1) while
            Jan 8's traffic is being sent: not one request fails, the server switches to v2
  Jan 8     then Jan 7's labels; the run records Jan 7's realized quality on its labelled rows
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request

import pandas as pd
import pytest
from stack_fixtures import CAPTURE_DAG_ID, CAPTURE_NAME, CAPTURE_SOURCE, use_stack_env

from devstack.config import free_port

pytestmark = pytest.mark.integration

DAYS = [dt.date(2013, 1, d) for d in range(1, 9)]
BOOTSTRAP = dt.date(2013, 1, 5)


def _get(url: str) -> tuple[int, dict]:
    import json

    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")
    except OSError:
        return 0, {}


def _wait_version(url: str, version: int, timeout: float) -> float:
    """Seconds until the server's /version names `version`."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        status, body = _get(url + "/version")
        if status == 200 and body.get("version") == version:
            return time.monotonic() - start
        time.sleep(0.2)
    raise AssertionError(f"the server did not serve v{version} within {timeout} s: {_get(url + '/health')}")


PACE_S = 0.15  # between the single-row requests of Jan 8 until the switch: ~135 s of traffic at most


def paced_until_switch(s, source, url: str, day: dt.date) -> dict:
    """Send `day`'s rows one per request, PACE_S apart while the server answers with v1, then the rest at
    once. Returns the day's report and the previous day's rows (whose labels are due)."""
    from ml import data, traffic

    frame = data.read_batch(source, day)
    client = traffic.Client(url)
    report = traffic.DayReport(day.isoformat(), rows=len(frame))
    switched_at = None
    for i, body in enumerate(traffic.requests_of(s, frame, day, batch=1)):
        status, payload = client.post("/invocations", body)
        report.requests += 1
        if status != 200:
            report.failed += 1
            report.errors[f"HTTP {status}: {payload}"] += 1
            continue
        version = int(payload["model_version"])
        report.versions[version] += 1
        if version == 2 and switched_at is None:
            switched_at = i
        if switched_at is None:
            time.sleep(PACE_S)
    report.labels_sent = None
    previous = data.read_batch(source, day - dt.timedelta(days=1))
    return {"report": report, "frame": previous, "switched_at": switched_at}


@pytest.fixture(scope="module")
def loop(yaml_datasets, flights_frame, tmp_path_factory):
    stack, folder = yaml_datasets
    mp = use_stack_env(stack, folder)
    server = None
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    try:
        from ml import traffic
        from ml.config import load_settings
        from ml.data import read_batch
        from ml.history import History

        s, source = load_settings(CAPTURE_NAME), load_settings(CAPTURE_SOURCE)
        assert s.captured and s.serving.traffic_from == CAPTURE_SOURCE
        for day in DAYS:
            frame = flights_frame[flights_frame["date"] == day.isoformat()][source.columns]
            part = source.partition_dir(day)
            part.mkdir(parents=True, exist_ok=True)
            frame.reset_index(drop=True).to_parquet(part / "part-0.parquet", index=False)
        assert traffic.prepare_history(s) == (5, 0)
        stack.wait_for_dag(CAPTURE_DAG_ID, timeout=180)
        first = stack.backfill(CAPTURE_DAG_ID, DAYS[0], BOOTSTRAP, timeout=900)
        assert first["failed"] == 0, (first, stack.failure_report())

        port = free_port()
        url = f"http://127.0.0.1:{port}"
        server = subprocess.Popen(
            [sys.executable, "-m", "ml.cli", "serve", "--dataset", CAPTURE_NAME, "--port", str(port)],
            env=dict(os.environ),
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
        )
        _wait_version(url, 1, timeout=120)

        def send(day: dt.date) -> list:
            return traffic.send(s, url, day, day, rps=0, batch=20, workers=4, echo=lambda _: None)

        reports = {DAYS[5]: send(DAYS[5])}
        time.sleep(s.serving.settle_seconds + 1)
        assert stack.trigger(CAPTURE_DAG_ID, DAYS[5], timeout=600) == "success", stack.failure_report()
        reports[DAYS[6]] = send(DAYS[6])
        labels = traffic.Client(url)
        for body in traffic.label_bodies(s, read_batch(source, DAYS[5]), DAYS[5]):  # Jan 6's, a day late
            assert labels.post("/ground-truth", body)[0] == 200
        time.sleep(s.serving.settle_seconds + 1)
        # Jan 7's run retrains and promotes while Jan 8's traffic is being sent: one row a request, paced
        # until the server answers with v2, then the rest at full speed
        during: dict = {}
        sender = threading.Thread(target=lambda: during.update(paced_until_switch(s, source, url, DAYS[7])))
        stack.trigger(CAPTURE_DAG_ID, DAYS[6], {"force_retrain": True, "min_delta": -1.0}, wait=False)
        sender.start()
        run_state = None
        deadline = time.monotonic() + 600
        while run_state not in ("success", "failed") and time.monotonic() < deadline:
            runs = [
                r for r in stack.runs(CAPTURE_DAG_ID) if r["logical_date"].startswith(DAYS[6].isoformat())
            ]
            run_state = runs[-1]["state"] if runs else None
            time.sleep(1)
        assert run_state == "success", stack.failure_report()
        switch_s = _wait_version(url, 2, timeout=30)
        sender.join(timeout=600)
        assert "report" in during, "the sender of Jan 8 did not finish"
        reports[DAYS[7]] = [during["report"]]
        for body in traffic.label_bodies(s, during["frame"], DAYS[6]):  # Jan 7's labels, a day late
            assert labels.post("/ground-truth", body)[0] == 200
        time.sleep(s.serving.settle_seconds + 1)
        assert stack.trigger(CAPTURE_DAG_ID, DAYS[7], timeout=600) == "success", stack.failure_report()
        rows = {r["day"]: r for r in History(s.history_url).days(s.name)}
        yield stack, s, url, reports, rows, switch_s
    finally:
        if server is not None:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
            print(log.read_text()[-3000:])
        mp.undo()


def test_every_request_is_answered_and_captured_once(loop):
    _, s, _, reports, _, _ = loop
    from ml import capture

    for day, (report,) in reports.items():
        assert report.failed == 0 and report.rows > 500, report.line()
        captured = capture.read_capture(s, day)
        assert len(captured) == report.rows, f"{day}: {len(captured)} captured of {report.rows} sent"


def test_the_dag_runs_each_served_day_from_its_capture(loop):
    _, s, _, _, rows, _ = loop
    from ml import capture

    for day in DAYS[5:]:
        row = rows[day.isoformat()]
        assert row["status"] == "accepted", row
        batch = pd.read_parquet(s.partition_dir(day) / capture.BATCH_FILE)
        assert len(batch) == len(capture.read_capture(s, day))


def test_the_promotion_reaches_the_server_and_the_next_captures_carry_it(loop):
    _, s, url, reports, rows, switch_s = loop
    from ml import capture

    assert rows[DAYS[6].isoformat()]["promotion"] == "promoted", rows[DAYS[6].isoformat()]
    assert switch_s < 10
    assert _get(url + "/version")[1]["version"] == 2
    jan8 = capture.read_capture(s, DAYS[7]).sort_values(capture.CAPTURED_AT)
    versions = jan8[capture.VERSION].tolist()
    assert versions[0] == 1 and versions[-1] == 2 and set(versions) <= {1, 2}, "no switch during Jan 8"
    assert versions == sorted(versions), "the server went back to v1 after switching to v2"
    (jan8_report,) = reports[DAYS[7]]
    assert jan8_report.versions[2] > 0 and jan8_report.failed == 0


def test_labels_arriving_a_day_later_give_the_realized_quality_of_the_day_before(loop):
    _, s, _, _, rows, _ = loop
    for day in DAYS[5:7]:
        row = rows[day.isoformat()]
        assert row["labels_known_on"] == (day + dt.timedelta(days=1)).isoformat(), row
        assert row["quality"]["rows"] > 500 and 0.5 < row["quality"]["roc_auc"] < 0.95
    assert rows[DAYS[7].isoformat()].get("labels_known_on") is None  # Jan 8's labels are not sent
