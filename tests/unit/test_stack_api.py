"""devstack.airflow_api against a stub of Airflow's REST API (no Airflow started): the official client's
requests (login, filters, pages), its answers as the API's JSON, a renewed token, errors that say what to do.
tests/integration/test_stack.py drives the real API server."""

from __future__ import annotations

import datetime as dt
import http.server
import json
import threading
import urllib.parse

import pytest

from devstack import airflow_api, config


def _run(i: int) -> dict:
    day = f"2013-01-{i:02d}T00:00:00Z"
    return {
        "dag_id": "d", "dag_display_name": "d", "dag_run_id": f"backfill__{day}", "dag_versions": [],
        "logical_date": day, "run_after": day, "run_type": "backfill", "state": "success",
        "start_date": "2026-01-01T10:00:00.250000Z", "end_date": None,
    }  # fmt: skip


class _Airflow(http.server.BaseHTTPRequestHandler):
    """Answers /auth/token, GET .../dagRuns (3 runs, pages of 2) and GET /api/v2/dags/missing (404)."""

    seen: list[tuple[str, str, str | None]] = []
    tokens = 0
    expire_next = False

    def _reply(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):  # noqa: N802 - http.server's name
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).seen.append(("POST", self.path, None))
        if self.path == "/api/v2/dags/d/dagRuns":
            return self._trigger(body)
        if body["password"] != "right":
            return self._reply(401, {"detail": "Invalid credentials"})
        type(self).tokens += 1
        return self._reply(201, {"access_token": f"token-{self.tokens}"})

    # POST .../dagRuns: each answer in turn; "busy-committed" is SQLite's "database is locked" reported
    # after the run was in fact written (the worst case for a retry)
    trigger_answers: list[str] = []
    triggered: dict[str, dict] = {}

    def _trigger(self, body: dict):
        answer = type(self).trigger_answers.pop(0) if type(self).trigger_answers else "ok"
        run_id = body["dag_run_id"]
        if run_id in type(self).triggered:
            return self._reply(409, {"detail": f"DAG Run with id {run_id} already exists"})
        if answer == "busy":
            return self._reply(500, {"detail": {"reason": "Database error", "message": "Serious error"}})
        run = {**_run(9), "dag_run_id": run_id, "logical_date": body["logical_date"], "state": "queued"}
        type(self).triggered[run_id] = run
        if answer == "busy-committed":
            return self._reply(500, {"detail": {"reason": "Database error", "message": "Serious error"}})
        return self._reply(200, run)

    def do_GET(self):  # noqa: N802
        auth = self.headers.get("Authorization")
        type(self).seen.append(("GET", self.path, auth))
        if type(self).expire_next:
            type(self).expire_next = False
            return self._reply(401, {"detail": "Token expired"})
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query)
        if url.path.startswith("/api/v2/dags/d/dagRuns/"):
            run_id = urllib.parse.unquote(url.path.rsplit("/", 1)[1])
            if run_id in type(self).triggered:
                return self._reply(200, type(self).triggered[run_id])
        if url.path == "/api/v2/dags/d/dagRuns":
            offset = int(query["offset"][0])
            runs = [_run(i) for i in (1, 2, 3)][offset : offset + 2]
            return self._reply(200, {"dag_runs": runs, "total_entries": 3})
        return self._reply(404, {"detail": f"The Dag with dag_id: `{url.path.split('/')[-1]}` was not found"})

    def log_message(self, *args):
        pass


@pytest.fixture
def cfg(tmp_path, monkeypatch):
    server = http.server.HTTPServer(("127.0.0.1", 0), _Airflow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setattr(_Airflow, "seen", [])
    monkeypatch.setattr(_Airflow, "tokens", 0)
    monkeypatch.setattr(_Airflow, "trigger_answers", [])
    monkeypatch.setattr(_Airflow, "triggered", {})
    monkeypatch.setattr(airflow_api, "_clients", {})
    stack = config.StackConfig.for_tests(tmp_path / "home", airflow_port=server.server_address[1])
    stack.password_file.parent.mkdir(parents=True)
    stack.password_file.write_text(json.dumps({"admin": "right"}))
    yield stack
    server.shutdown()
    server.server_close()


def test_dag_runs_logs_in_once_and_reads_every_page_with_the_filters(cfg):
    runs = airflow_api.dag_runs(cfg, "d", run_type="backfill", logical_date_gte="2013-01-01T00:00:00Z")
    assert [r["dag_run_id"] for r in runs] == [f"backfill__2013-01-0{i}T00:00:00Z" for i in (1, 2, 3)]
    # the API's JSON: timestamps as ISO strings, unset fields present as None
    assert runs[0]["logical_date"] == "2013-01-01T00:00:00Z" and runs[0]["end_date"] is None
    assert runs[0]["start_date"] == "2026-01-01T10:00:00.250000Z" and runs[0]["state"] == "success"
    logins = [s for s in _Airflow.seen if s[0] == "POST"]
    pages = [s for s in _Airflow.seen if s[0] == "GET"]
    assert logins == [("POST", "/auth/token", None)] and len(pages) == 2
    assert {auth for _, _, auth in pages} == {"Bearer token-1"}
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(pages[1][1]).query)
    assert query["run_type"] == ["backfill"] and query["order_by"] == ["logical_date"]
    assert query["offset"] == ["2"]
    assert dt.datetime.fromisoformat(query["logical_date_gte"][0]) == dt.datetime(2013, 1, 1, tzinfo=dt.UTC)


def test_an_expired_token_is_renewed_once(cfg):
    airflow_api.dag_runs(cfg, "d")
    _Airflow.expire_next = True
    assert len(airflow_api.dag_runs(cfg, "d")) == 3
    assert _Airflow.tokens == 2 and _Airflow.seen[-1][2] == "Bearer token-2"


def test_errors_name_the_call_and_the_fix(cfg):
    with pytest.raises(airflow_api.ApiError, match=r"dag missing: HTTP 404: .*was not found") as missing:
        airflow_api.dag(cfg, "missing")
    assert missing.value.status == 404
    with pytest.raises(airflow_api.ApiError, match="HTTP 401") as refused:
        airflow_api.fetch_token(cfg, password="wrong")
    assert refused.value.status == 401
    down = cfg.replace(airflow_port=config.free_port())
    with pytest.raises(config.StackError, match=r"does not answer .*Is the stack up\? \(`make up`\)"):
        airflow_api.dag_runs(down, "d")
    assert airflow_api.version(down) is None


JAN9 = dt.datetime(2013, 1, 9, tzinfo=dt.UTC)


@pytest.mark.parametrize("answers", [["busy", "busy", "ok"], ["busy-committed"]])
def test_a_trigger_answered_database_busy_is_sent_again_and_creates_one_run(cfg, answers):
    """SQLite's "database is locked" (HTTP 500) while the scheduler writes: the trigger is retried with the
    same run id; if the failed attempt had in fact committed, the 409 that follows reads the run back."""
    _Airflow.trigger_answers = list(answers)
    run = airflow_api.trigger_run(cfg, "d", JAN9, {"k": 1})
    assert run["dag_run_id"] == "manual__2013-01-09T00:00:00+00:00" and run["state"] == "queued"
    assert list(_Airflow.triggered) == [run["dag_run_id"]]
    posts = [s for s in _Airflow.seen if s[:2] == ("POST", "/api/v2/dags/d/dagRuns")]
    assert len(posts) == (3 if answers[0] == "busy" and len(answers) == 3 else 2)


def test_a_trigger_of_a_run_that_already_exists_is_still_an_error(cfg):
    airflow_api.trigger_run(cfg, "d", JAN9, {}, run_id="mine")
    with pytest.raises(airflow_api.ApiError, match="HTTP 409: .*already exists"):
        airflow_api.trigger_run(cfg, "d", JAN9, {}, run_id="mine")


def test_database_busy_past_the_retry_budget_is_raised(cfg, monkeypatch):
    monkeypatch.setattr(airflow_api, "DATABASE_BUSY_RETRY_S", 0.0)
    _Airflow.trigger_answers = ["busy"]
    with pytest.raises(airflow_api.ApiError, match="HTTP 500: .*Database error"):
        airflow_api.trigger_run(cfg, "d", JAN9, {})
    assert _Airflow.triggered == {}
