"""The local stack itself, with a throwaway two-task DAG: backfill, trigger with a param, auth, ports, and the
MLflow server storing an artifact a task logged over HTTP; and that nothing is open that need not be: every
listener on 127.0.0.1, databases, secrets and logs 0600, MLflow closed to anonymous requests."""

from __future__ import annotations

import json
import stat
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from devstack import airflow_api, config, private, processes, startup

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

DAG_ID = "stack_smoke"
SMOKE_DAG = """
import pendulum
from airflow.sdk import Param, dag, get_current_context, task


@dag(
    dag_id="stack_smoke",
    schedule="@daily",
    start_date=pendulum.datetime(2013, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    params={"fail": Param(False, type="boolean"), "hold_until": Param("", type="string")},
)
def stack_smoke():
    @task
    def extract() -> str:
        import os
        import time

        ctx = get_current_context()
        if ctx["params"]["fail"]:
            raise RuntimeError("failing on purpose: params.fail is set")
        if ctx["params"]["hold_until"]:  # stay running until the test creates this file (at most 120 s)
            print("holding until", ctx["params"]["hold_until"], flush=True)
            deadline = time.monotonic() + 120
            while not os.path.exists(ctx["params"]["hold_until"]) and time.monotonic() < deadline:
                time.sleep(0.2)
        return ctx["logical_date"].strftime("%Y-%m-%d")

    @task
    def load(day: str) -> str:
        import os
        import tempfile

        if day != "2013-01-03":
            return day
        import mlflow  # only once: the import costs seconds

        from ml.history import History

        # the history database, created by a task as the DAG's tasks do
        History(f"sqlite:///{os.environ['DRIFTWATCH_HOME']}/driftwatch.db")

        mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
        mlflow.set_experiment("stack-smoke")
        with mlflow.start_run(run_name=day) as run:
            path = os.path.join(tempfile.mkdtemp(), "note.txt")
            with open(path, "w") as fh:
                fh.write(day)
            mlflow.log_artifact(path, artifact_path="notes")
        return run.info.run_id

    load(extract())


stack_smoke()
"""


@pytest.fixture(scope="module")
def smoke(stack_factory):
    """A stack with only the smoke DAG (no repo DAGs), with the triggerer too (its log server), backfilled
    over three days once for the module."""
    s = stack_factory("smoke", dags=False, components=(*config.DEFAULT_COMPONENTS, "triggerer"))
    s.add_dag(SMOKE_DAG, "stack_smoke.py", dag_id=DAG_ID)
    result = s.backfill(DAG_ID, "2013-01-01", "2013-01-03", timeout=240)
    return s, result


def test_backfill_runs_every_day(smoke):
    s, result = smoke
    assert result["total"] == 3, result
    assert result["success"] == 3, s.failure_report()
    assert [r["logical_date"][:10] for r in result["runs"]] == ["2013-01-01", "2013-01-02", "2013-01-03"]
    # the DAG says max_active_runs=1 and the backfill honours it: the runs did not overlap
    runs = sorted(s.runs(DAG_ID, run_type="backfill"), key=lambda r: r["logical_date"])
    for before, after in zip(runs, runs[1:], strict=False):
        assert before["end_date"] <= after["start_date"], (before, after)


def test_task_logged_an_artifact_through_the_mlflow_server(smoke):
    s, _ = smoke
    xcom = s.api(
        "GET",
        f"/api/v2/dags/{DAG_ID}/dagRuns/{airflow_api.url_segment('backfill__2013-01-03T00:00:00+00:00')}"
        "/taskInstances/load/xcomEntries/return_value",
    )
    run_id = xcom["value"]
    status, _, body = s.mlflow("GET", f"/api/2.0/mlflow/artifacts/list?run_id={run_id}&path=notes")
    assert status == 200, body
    assert [f["path"] for f in json.loads(body)["files"]] == ["notes/note.txt"]
    stored = list((s.cfg.mlflow_artifacts).rglob("note.txt"))
    assert len(stored) == 1 and stored[0].read_text() == "2013-01-03"


def test_trigger_passes_conf_and_reports_the_failed_task_log(smoke):
    s, _ = smoke
    state = s.trigger(DAG_ID, "2013-01-10", {"fail": True}, run_id="manual_fail_2013-01-10", timeout=120)
    assert state == "failed"
    failed = airflow_api.failed_tasks(s.cfg, DAG_ID, "manual_fail_2013-01-10")
    assert [f["task_id"] for f in failed] == ["extract"]
    assert "failing on purpose" in s.task_log(DAG_ID, "manual_fail_2013-01-10", "extract")


def test_api_requires_a_token(smoke):
    s, _ = smoke
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"{s.cfg.airflow_url}/api/v2/dags", timeout=10)
    assert err.value.code == 401
    with pytest.raises(airflow_api.ApiError) as bad:
        airflow_api.fetch_token(s.cfg, password="wrong")
    assert bad.value.status == 401
    dags = s.api("GET", "/api/v2/dags")
    assert DAG_ID in [d["dag_id"] for d in dags["dags"]]


def test_listens_only_on_its_configured_free_ports_and_only_on_loopback(smoke):
    """Every TCP socket listening in a process of the stack (psutil: /proc/net/tcp and tcp6 matched with the
    processes' socket inodes): the API server, MLflow, and the scheduler's and the triggerer's task-log
    servers, which Airflow itself would bind to every IPv4 and IPv6 interface."""
    s, _ = smoke
    sockets = processes.listeners(s.cfg)
    by_component = {(sock["component"], sock["port"]) for sock in sockets}
    assert by_component == {
        ("api-server", s.cfg.airflow_port),
        ("mlflow", s.cfg.mlflow_port),
        ("scheduler", s.cfg.worker_log_port),
        ("triggerer", s.cfg.trigger_log_port),
    }, sockets
    assert {sock["address"] for sock in sockets} == {"127.0.0.1"}, sockets
    assert not s.listening_ports() & {8080, 8793, 8794, 5000, 8280, 5050, 8893, 8894}


def test_the_api_server_reads_a_running_tasks_log_from_the_loopback_log_server(smoke, tmp_path):
    """A running task's log comes from the scheduler's log server at http://<the task's hostname>:<port>:
    the hostname is 127.0.0.1, where that server listens."""
    s, _ = smoke
    run_id, release = "manual_hold_2013-01-11", tmp_path / "release-hold"
    s.trigger(DAG_ID, "2013-01-11", {"hold_until": str(release)}, run_id=run_id, wait=False)
    path = f"/api/v2/dags/{DAG_ID}/dagRuns/{airflow_api.url_segment(run_id)}/taskInstances/extract"
    try:
        deadline = time.monotonic() + 120
        while (ti := s.api("GET", path))["state"] != "running" or "holding until" not in s.task_log(
            DAG_ID, run_id, "extract", ti["try_number"]
        ):
            assert time.monotonic() < deadline and ti["state"] in (None, "scheduled", "queued", "running"), ti
            time.sleep(0.5)
        assert ti["hostname"] == "127.0.0.1"
        log = json.dumps(s.api("GET", f"{path}/logs/{ti['try_number']}"))
        assert f"http://127.0.0.1:{s.cfg.worker_log_port}/log/dag_id={DAG_ID}" in log, log[:3000]
        assert "Could not read served logs" not in log and "holding until" in log
    finally:
        release.touch()
    deadline = time.monotonic() + 120
    while (run := s.api("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{airflow_api.url_segment(run_id)}"))[
        "state"
    ] != "success":
        assert time.monotonic() < deadline and run["state"] in ("queued", "running"), run
        time.sleep(0.5)


def test_start_is_idempotent(smoke):
    s, _ = smoke
    before = processes.running(s.cfg)
    assert startup.start(s.cfg, quiet=True) == {"total": 0.0}
    assert processes.running(s.cfg) == before


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_databases_secrets_and_everything_the_stack_wrote_are_private(smoke):
    """The three SQLite databases (Airflow, MLflow, the history a task created), MLflow's users and the
    secrets are 0600; so is every other file the stack wrote (their -wal/-shm, component and task logs, pid
    files, the artifact the MLflow server stored), and its directories are 0700."""
    s, _ = smoke
    cfg = s.cfg
    named = [
        cfg.airflow_db,
        cfg.mlflow_db,
        cfg.history_db,
        cfg.mlflow_auth_db,
        cfg.secrets_file,
        cfg.password_file,
    ]
    assert {str(p): oct(_mode(p)) for p in named} == {str(p): "0o600" for p in named}
    assert list(cfg.log_dir.rglob("attempt=*.log")) and list(cfg.mlflow_artifacts.rglob("note.txt"))
    inputs = (cfg.dags_folder, s.lake)  # the test's own files: the DAG it added, the (empty) lake
    written = [p for p in cfg.home.rglob("*") if not any(p.is_relative_to(i) for i in inputs)]
    assert len(written) > 30
    loose = [f"{oct(_mode(p))} {p}" for p in written if _mode(p) & 0o077]
    assert not loose, "readable by others:\n" + "\n".join(loose)


def test_mlflow_refuses_anonymous_requests_and_takes_the_generated_login(smoke):
    """No local process can move the champion alias (or write anything) past driftwatch's lock and audit
    without the admin login; the UI asks the browser for it."""
    s, _ = smoke
    alias = {"name": "flights-delay", "alias": "champion", "version": "1"}
    assert s.mlflow("POST", "/api/2.0/mlflow/registered-models/alias", alias, auth=False)[0] == 401
    assert s.mlflow("POST", "/api/2.0/mlflow/experiments/create", {"name": "anonymous"}, auth=False)[0] == 401
    assert s.mlflow("GET", "/api/2.0/mlflow/experiments/search?max_results=5", auth=False)[0] == 401
    status, headers, _ = s.mlflow("GET", "/", auth=False)
    assert status == 401 and headers["www-authenticate"] == 'Basic realm="mlflow"'
    wrong = urllib.request.Request(
        f"{s.cfg.mlflow_url}/api/2.0/mlflow/experiments/search?max_results=5",
        headers={"Authorization": "Basic YWRtaW46d3Jvbmc="},  # admin:wrong
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(wrong, timeout=10)
    assert refused.value.code == 401
    # with the generated login: a write, the alias endpoint past authentication (no such model), the UI
    status, _, body = s.mlflow("POST", "/api/2.0/mlflow/experiments/create", {"name": "with-login"})
    assert status == 200 and json.loads(body)["experiment_id"], body
    status, _, body = s.mlflow("POST", "/api/2.0/mlflow/registered-models/alias", alias)
    assert status == 404 and b"RESOURCE_DOES_NOT_EXIST" in body, body
    status, headers, body = s.mlflow("GET", "/")
    assert status == 200 and headers["content-type"].startswith("text/html") and b"<html" in body


CLIENT = """
import os, sys, tempfile
import mlflow

mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
exp = mlflow.create_experiment("local", artifact_location=sys.argv[1])
with mlflow.start_run(experiment_id=exp) as run:
    path = os.path.join(tempfile.mkdtemp(), "report.html")
    open(path, "w").write("<h1>drift</h1>")
    mlflow.log_artifact(path, artifact_path="drift")
print(run.info.run_id)
"""


def test_sqlite_mode_ui_shows_artifacts_tasks_wrote_locally_and_stop_ends_it(tmp_path):
    """The demo's MLflow mode: tasks write the SQLite store and artifact files directly; the server only
    reads them. Then stop() ends the server's whole process tree and removes its pid file."""
    import os
    import subprocess
    import sys

    import psutil

    cfg = config.StackConfig.for_tests(tmp_path / "home", mlflow_mode="sqlite")
    assert cfg.mlflow_tracking_uri == f"sqlite:///{cfg.mlflow_db}"
    startup.init(cfg, quiet=True)
    tree: list[int] = []
    try:
        startup.start(cfg, ["mlflow"], quiet=True)
        pid = processes.running(cfg)["mlflow"]
        tree = [pid, *(p.pid for p in psutil.Process(pid).children(recursive=True))]
        env = dict(os.environ, MLFLOW_TRACKING_URI=cfg.mlflow_tracking_uri, MLFLOW_DISABLE_TELEMETRY="true")
        out = subprocess.run(
            [sys.executable, "-c", CLIENT, (cfg.mlflow_artifacts / "local").as_uri()],
            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr[-2000:]
        run_id = out.stdout.split()[-1]
        login = private.mlflow_auth_header(cfg)  # the UI's requests carry the browser's basic-auth login
        url = f"{cfg.mlflow_url}/api/2.0/mlflow/artifacts/list?run_id={run_id}&path=drift"
        with urllib.request.urlopen(urllib.request.Request(url, headers=login), timeout=10) as resp:
            assert [f["path"] for f in json.load(resp)["files"]] == ["drift/report.html"]
        url = f"{cfg.mlflow_url}/get-artifact?path=drift/report.html&run_uuid={run_id}"
        with urllib.request.urlopen(urllib.request.Request(url, headers=login), timeout=10) as r:
            assert r.read() == b"<h1>drift</h1>"
    finally:
        stopped = processes.stop(cfg, quiet=True)
    assert stopped == ["mlflow"]
    assert processes.running(cfg) == {}
    assert not (cfg.run_dir / "mlflow.pid").exists()
    assert not [
        p for p in tree if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
    ]
    assert processes.stop(cfg, quiet=True) == []  # idempotent
