"""Alerts: the one configurable target (file, webhook, mailto, apprise), delivery that never raises, and the
Airflow notifier building the three alerts from what the tasks returned."""

from __future__ import annotations

import datetime as dt
import http.server
import json
import threading

import pytest

from ml import alerts
from ml.exceptions import ConfigError

DAY = dt.date(2013, 1, 8)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", ("file", None)),
        ("file:///var/log/dw/alerts.log", ("file", "/var/log/dw/alerts.log")),
        ("https://hooks.example.com/x?y=1", ("webhook", "https://hooks.example.com/x?y=1")),
        ("mailto:ml-oncall@example.com,b@example.com", ("mailto", "ml-oncall@example.com,b@example.com")),
        ("apprise:dw_alerts", ("apprise", "dw_alerts")),
    ],
)
def test_target_parses_the_setting(settings, value, expected):
    scheme, where = alerts.target(settings, {alerts.TARGET_ENV: value})
    assert scheme == expected[0]
    assert where == (expected[1] or str(settings.paths.alerts))


@pytest.mark.parametrize(
    "value", ["alerts.log", "file://relative/path", "ftp://x/y", "mailto:nobody", "https://", "apprise:a b"]
)
def test_a_bad_target_is_refused_with_the_allowed_forms(settings, value):
    with pytest.raises(ConfigError, match=r"DRIFTWATCH_ALERT_TARGET: expected file:///absolute/path"):
        alerts.target(settings, {alerts.TARGET_ENV: value})


def _lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_default_target_appends_json_lines(settings):
    a = alerts.quarantine_alert(
        settings, DAY, {"path": "/q/date=2013-01-08", "summary": "missing 'distance'"}, "r1"
    )
    assert alerts.deliver(settings, a) == f"file:{settings.paths.alerts}"
    alerts.deliver(
        settings,
        alerts.promotion_alert(
            settings, DAY, {"version": 3, "previous": 2, "reason": "gain CI above 0"}, "r2"
        ),
    )
    first, second = _lines(settings.paths.alerts)
    assert (first["kind"], first["day"], first["path"], first["dag_run_id"]) == (
        "quarantine",
        "2013-01-08",
        "/q/date=2013-01-08",
        "r1",
    )
    assert "missing 'distance'" in first["message"]
    assert (second["kind"], second["version"], second["previous"]) == ("promotion", 3, 2)


def test_webhook_target_posts_the_event(settings, monkeypatch):
    server, received = _json_service()
    monkeypatch.setenv(alerts.TARGET_ENV, f"http://127.0.0.1:{server.server_port}/hook")
    a = alerts.failure_alert(settings, DAY, ["train_challenger failed: boom"], "run-1", url="http://x/run-1")
    assert alerts.deliver(settings, a) == "webhook"
    server.server_close()
    assert received and received[0]["kind"] == "failure" and received[0]["url"] == "http://x/run-1"
    assert not settings.paths.alerts.exists()


def _json_service() -> tuple[http.server.HTTPServer, list[dict]]:
    """A loopback HTTP server that takes one JSON POST (a webhook; Apprise's json:// service)."""
    received: list[dict] = []

    class Service(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's name
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Service)
    threading.Thread(target=server.handle_request, daemon=True).start()
    return server, received


def test_apprise_target_sends_through_the_airflow_connection(settings, monkeypatch):
    """Airflow's Apprise provider, with a real Apprise service (json://) behind an Airflow connection given
    as AIRFLOW_CONN_<ID> (how run-day and the replay see connections; tasks get Airflow's)."""
    server, received = _json_service()
    config = {"config": {"path": f"json://127.0.0.1:{server.server_port}/alerts"}}
    monkeypatch.setenv("AIRFLOW_CONN_DW_ALERTS", json.dumps({"conn_type": "apprise", "extra": config}))
    monkeypatch.setenv(alerts.TARGET_ENV, "apprise:dw_alerts")
    hostile = "<script>alert(1)</script>"
    a = alerts.rollback_alert(
        settings, DAY, {"champion": 5, "replaced": 4, "reason": f"worse on {hostile}"}, "run-9"
    )
    assert alerts.deliver(settings, a) == "apprise:dw_alerts"
    server.server_close()
    (got,) = received
    assert got["title"] == "[driftwatch] flights rollback" and got["type"] == "failure"
    assert "version 5 rolled back to 4" in got["message"] and hostile in got["message"]  # as plain text
    assert '"dag_run_id": "run-9"' in got["message"]
    assert not settings.paths.alerts.exists()


def test_a_dataset_sends_its_own_alerts_where_its_yaml_says(dw_env, monkeypatch):
    from ml.config import load_settings

    monkeypatch.setenv(alerts.TARGET_ENV, "https://hooks.example.com/everyone")
    monkeypatch.setenv("DRIFTWATCH__ALERTS__TARGET", "apprise:flights_oncall")
    assert alerts.target(load_settings("flights")) == ("apprise", "flights_oncall")
    monkeypatch.setenv("DRIFTWATCH__ALERTS__TARGET", "apprise:not a connection id")
    with pytest.raises(ConfigError, match=r"flights.yaml: alerts.target: expected file:///absolute/path"):
        load_settings("flights")


def test_an_apprise_service_that_fails_is_logged_not_raised_and_not_marked_sent(
    settings, monkeypatch, caplog
):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    config = {"config": {"path": f"json://127.0.0.1:{port}/alerts"}}
    monkeypatch.setenv("AIRFLOW_CONN_DW_DOWN", json.dumps({"conn_type": "apprise", "extra": config}))
    monkeypatch.setenv(alerts.TARGET_ENV, "apprise:dw_down")
    a = alerts.failure_alert(settings, DAY, ["boom"], "r")
    assert alerts.send_once(settings, a) == "undelivered"
    assert "apprise:dw_down not delivered" in caplog.text
    monkeypatch.delenv("AIRFLOW_CONN_DW_DOWN")  # no such connection at all: also logged, not raised
    assert alerts.deliver(settings, a) == "undelivered"


def test_an_unreachable_webhook_is_logged_not_raised(settings, monkeypatch, caplog):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    monkeypatch.setenv(alerts.TARGET_ENV, f"http://127.0.0.1:{port}/hook")
    assert alerts.deliver(settings, alerts.failure_alert(settings, DAY, [], "r")) == "undelivered"
    assert "not delivered" in caplog.text


def test_unknown_kind_is_refused(settings):
    with pytest.raises(ValueError, match="alert kind"):
        alerts.event(settings, "hello", "x")


class _TI:
    """The two things the notifier reads from a task instance."""

    def __init__(self, task_id: str, value: dict, key: str = "return_value") -> None:
        self.task_id, self.value, self.key = task_id, value, key

    def xcom_pull(self, task_ids: str, key: str = "return_value"):
        assert task_ids == self.task_id
        return self.value if key == self.key else None


def test_notifier_builds_each_alert_from_the_task_result_and_history(settings):
    from ml.airflow_ext import DriftwatchNotifier
    from ml.history import History

    logical = dt.datetime(2013, 1, 8, tzinfo=dt.UTC)
    q = DriftwatchNotifier("quarantine", "flights").build(
        {
            "ti": _TI("quarantine_batch", {"path": "/q/x", "summary": "bad"}),
            "logical_date": logical,
            "run_id": "r",
        }
    )
    assert (q["kind"], q["day"], q["path"], q["dag_run_id"]) == ("quarantine", "2013-01-08", "/q/x", "r")
    p = DriftwatchNotifier("promotion", "flights").build(
        {
            "ti": _TI("promote_challenger", {"version": 4, "previous": 3, "reason": "ok"}),
            "logical_date": logical,
            "run_id": "r",
        }
    )
    assert (p["kind"], p["version"], p["previous"]) == ("promotion", 4, 3)
    # a branch's output is under its own XCom key (its return value is the step it chose)
    novel = {"next": "score_batch", "novelty": "x.parquet: column 'dest' has too many categories unseen"}
    n = DriftwatchNotifier("novelty", "flights").build(
        {"ti": _TI("validate_batch", novel, key="output"), "logical_date": logical, "run_id": "r"}
    )
    assert n["kind"] == "novelty" and "'dest'" in n["message"] and n["day"] == "2013-01-08"
    quiet = {"next": "score_batch", "novelty": None}
    assert (
        DriftwatchNotifier("novelty", "flights").build(
            {"ti": _TI("validate_batch", quiet, key="output"), "logical_date": logical, "run_id": "r"}
        )
        is None
    )
    History(settings.history_url).update_day(
        "flights", DAY, error="train_challenger failed: ValueError: boom"
    )
    f = DriftwatchNotifier("failure", "flights").build({"logical_date": logical, "run_id": "manual__x"})
    assert f["kind"] == "failure" and "ValueError: boom" in f["message"]
    assert f["url"].endswith("/dags/retraining_pipeline/runs/manual__x")


def test_notifier_never_raises(settings, monkeypatch, caplog):
    from ml.airflow_ext import DriftwatchNotifier

    DriftwatchNotifier("promotion", "flights").notify({})  # no ti, no date: logged, not raised
    assert "not delivered" in caplog.text


def test_an_alert_is_sent_once_per_day_and_event_and_again_after_a_failed_delivery(settings):
    promotion = alerts.promotion_alert(settings, dt.date(2013, 2, 1), {"version": 5, "previous": 4}, "run-1")
    again = alerts.promotion_alert(settings, dt.date(2013, 2, 1), {"version": 5, "previous": 4}, "rerun")
    other_day = alerts.promotion_alert(settings, dt.date(2013, 2, 2), {"version": 5, "previous": 4}, "run-2")
    broken = alerts.quarantine_alert(settings, dt.date(2013, 2, 3), {"path": "p", "summary": "s"}, "run-3")

    assert alerts.send_once(settings, promotion).startswith("file:")
    assert alerts.send_once(settings, again) == "already sent"
    assert alerts.send_once(settings, other_day).startswith("file:")
    assert alerts.send_once(settings, broken, lambda a: "undelivered") == "undelivered"
    assert alerts.send_once(settings, broken).startswith("file:")  # not marked sent: tried again

    lines = [json.loads(x) for x in settings.paths.alerts.read_text().splitlines()]
    assert [(a["kind"], a["day"]) for a in lines] == [
        ("promotion", "2013-02-01"),
        ("promotion", "2013-02-02"),
        ("quarantine", "2013-02-03"),
    ]
    assert [(r["day"], r["kind"], r["event"]) for r in alerts.sent(settings)] == [
        ("2013-02-01", "promotion", "v5"),
        ("2013-02-02", "promotion", "v5"),
        ("2013-02-03", "quarantine", "quarantine"),
    ]


def _deadline_context(day: str, run_type: str) -> dict:
    """What Airflow gives a Deadline Alert callback (airflow.models.deadline: Deadline.handle_miss)."""
    return {
        "dag_run": {
            "logical_date": f"{day}T00:00:00Z",
            "run_type": run_type,
            "dag_run_id": f"{run_type}__{day}",
        },
        "deadline": {"id": "d1", "deadline_time": f"{day}T06:00:00Z"},
    }


def test_a_late_batch_alerts_once_and_a_slow_run_or_a_backfill_does_not(dw_env, add_partitions, monkeypatch):
    from ml.airflow_ext import late_batch_alert
    from ml.config import load_settings

    monkeypatch.setenv("DRIFTWATCH__WAIT__LATE_AFTER_HOURS", "6")
    s = load_settings("flights")
    add_partitions(s, [dt.date(2013, 1, 8)])
    # the batch is there: the run is only slow
    assert "only slow" in late_batch_alert("flights", _deadline_context("2013-01-08", "scheduled"))
    # a backfill says nothing, batch or not
    assert "backfill" in late_batch_alert("flights", _deadline_context("2013-01-09", "backfill"))
    assert not s.paths.alerts.exists()
    # no batch for a scheduled (or manual) run: one "late" alert naming the folder, not repeated
    assert late_batch_alert("flights", _deadline_context("2013-01-09", "scheduled")).startswith("file:")
    assert late_batch_alert("flights", _deadline_context("2013-01-09", "manual")) == "already sent"
    (late,) = _lines(s.paths.alerts)
    assert (late["kind"], late["day"], late["dag_run_id"]) == ("late", "2013-01-09", "scheduled__2013-01-09")
    assert str(s.partition_dir(dt.date(2013, 1, 9))) in late["message"] and "6" in late["message"]


def test_a_bad_late_after_hours_names_the_key(dw_env, monkeypatch):
    from ml.config import load_settings

    monkeypatch.setenv("DRIFTWATCH__WAIT__LATE_AFTER_HOURS", "soon")
    with pytest.raises(ConfigError, match=r"wait.late_after_hours: expected a number of hours"):
        load_settings("flights")
