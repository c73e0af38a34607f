"""The local stack itself, with a throwaway two-task DAG: backfill, trigger with a param, auth, ports, and the
MLflow server storing an artifact a task logged over HTTP."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from ml import stack as st

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
    params={"fail": Param(False, type="boolean")},
)
def stack_smoke():
    @task
    def extract() -> str:
        ctx = get_current_context()
        if ctx["params"]["fail"]:
            raise RuntimeError("failing on purpose: params.fail is set")
        return ctx["logical_date"].strftime("%Y-%m-%d")

    @task
    def load(day: str) -> str:
        import os
        import tempfile

        if day != "2013-01-03":
            return day
        import mlflow  # only once: the import costs seconds

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
    """A stack with only the smoke DAG (no repo DAGs), backfilled over three days once for the module."""
    s = stack_factory("smoke", dags=False)
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
        f"/api/v2/dags/{DAG_ID}/dagRuns/{st._q('backfill__2013-01-03T00:00:00+00:00')}"
        "/taskInstances/load/xcomEntries/return_value",
    )
    run_id = xcom["value"]
    url = f"{s.cfg.mlflow_url}/api/2.0/mlflow/artifacts/list?run_id={run_id}&path=notes"
    with urllib.request.urlopen(url, timeout=10) as resp:
        files = json.load(resp)["files"]
    assert [f["path"] for f in files] == ["notes/note.txt"]
    stored = list((s.cfg.mlflow_artifacts).rglob("note.txt"))
    assert len(stored) == 1 and stored[0].read_text() == "2013-01-03"


def test_trigger_passes_conf_and_reports_the_failed_task_log(smoke):
    s, _ = smoke
    state = s.trigger(DAG_ID, "2013-01-10", {"fail": True}, run_id="manual_fail_2013-01-10", timeout=120)
    assert state == "failed"
    failed = st.failed_tasks(s.cfg, DAG_ID, "manual_fail_2013-01-10")
    assert [f["task_id"] for f in failed] == ["extract"]
    assert "failing on purpose" in s.task_log(DAG_ID, "manual_fail_2013-01-10", "extract")


def test_api_requires_a_token(smoke):
    s, _ = smoke
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"{s.cfg.airflow_url}/api/v2/dags", timeout=10)
    assert err.value.code == 401
    with pytest.raises(st.ApiError) as bad:
        st._request(s.cfg, "POST", "/auth/token", {"username": "admin", "password": "wrong"}, token=None)
    assert bad.value.status == 401
    dags = s.api("GET", "/api/v2/dags")
    assert DAG_ID in [d["dag_id"] for d in dags["dags"]]


def test_listens_only_on_its_configured_free_ports(smoke):
    s, _ = smoke
    configured = {s.cfg.airflow_port, s.cfg.mlflow_port, s.cfg.worker_log_port}
    listening = s.listening_ports()
    assert listening == configured, f"listening on {sorted(listening)}, configured {s.cfg.ports}"
    assert not listening & {8080, 8793, 8794, 5000, 8280, 5050, 8893, 8894}


def test_start_is_idempotent(smoke):
    s, _ = smoke
    before = st.running(s.cfg)
    assert st.start(s.cfg, quiet=True) == {"total": 0.0}
    assert st.running(s.cfg) == before


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

    cfg = st.StackConfig.for_tests(tmp_path / "home", mlflow_mode="sqlite")
    assert cfg.mlflow_tracking_uri == f"sqlite:///{cfg.mlflow_db}"
    st.init(cfg, quiet=True)
    tree: list[int] = []
    try:
        st.start(cfg, ["mlflow"], quiet=True)
        pid = st.running(cfg)["mlflow"]
        tree = [pid, *(p.pid for p in psutil.Process(pid).children(recursive=True))]
        env = dict(os.environ, MLFLOW_TRACKING_URI=cfg.mlflow_tracking_uri, MLFLOW_DISABLE_TELEMETRY="true")
        out = subprocess.run(
            [sys.executable, "-c", CLIENT, (cfg.mlflow_artifacts / "local").as_uri()],
            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr[-2000:]
        run_id = out.stdout.split()[-1]
        url = f"{cfg.mlflow_url}/api/2.0/mlflow/artifacts/list?run_id={run_id}&path=drift"
        with urllib.request.urlopen(url, timeout=10) as resp:
            assert [f["path"] for f in json.load(resp)["files"]] == ["drift/report.html"]
        with urllib.request.urlopen(
            f"{cfg.mlflow_url}/get-artifact?path=drift/report.html&run_uuid={run_id}"
        ) as r:
            assert r.read() == b"<h1>drift</h1>"
    finally:
        stopped = st.stop(cfg, quiet=True)
    assert stopped == ["mlflow"]
    assert st.running(cfg) == {}
    assert not (cfg.run_dir / "mlflow.pid").exists()
    assert not [
        p for p in tree if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
    ]
    assert st.stop(cfg, quiet=True) == []  # idempotent
