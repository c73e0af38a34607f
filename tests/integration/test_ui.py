"""The Airflow UI plugin, served by the real API server of the shared scenario stack (stack_fixtures.pipeline):
its listing, authentication, the report tabs, path-traversal refusals, the model history, the MLflow links on
task instances, and the three alerts raised through Airflow's notifier callbacks."""

from __future__ import annotations

import datetime as dt
import http.client
import json
import subprocess
import time

import pytest
from stack_fixtures import BAD_DAY, DAG_ID, DRIFT_DAY

from devstack import airflow_api, components

pytestmark = pytest.mark.integration

BOOT_DAY = dt.date(2013, 1, 5)
COLLECT_DAY = dt.date(2013, 1, 2)
CALM_DAY = dt.date(2013, 1, 6)  # monitored, no retrain
FAIL_DAY = dt.date(2013, 1, 10)


def _run_id(stack, day: dt.date) -> str:
    for run in stack.runs(DAG_ID):
        if run["logical_date"].startswith(day.isoformat()):
            return run["dag_run_id"]
    raise AssertionError(f"no run of {DAG_ID} for {day}")


def _get(stack, path: str, *, token: str | None = None, cookie: str | None = None) -> tuple[int, str, str]:
    """(status, content type, body) of a GET on the API server, raw: the path is sent exactly as given."""
    status, headers, body = _request(stack, path, token=token, cookie=cookie)
    return status, headers.get("content-type", ""), body


def _request(stack, path: str, *, token: str | None = None, cookie: str | None = None):
    """(status, headers with lower-case names, body) of a GET on the API server."""
    conn = http.client.HTTPConnection("127.0.0.1", stack.cfg.airflow_port, timeout=60)
    headers = {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if cookie:
        headers["Cookie"] = f"_token={cookie}"
    conn.request("GET", path, headers=headers)
    resp = conn.getresponse()
    body = resp.read().decode(errors="replace")
    conn.close()
    return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body


@pytest.fixture(scope="module")
def ui(pipeline):
    stack, settings = pipeline
    return stack, settings, airflow_api.api_token(stack.cfg)


def test_airflow_plugins_lists_the_views_and_links(ui):
    stack, _, _ = ui
    out = subprocess.run(
        [components.executable("airflow"), "plugins", "--output", "json"],
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    (plugin,) = [p for p in json.loads(out[out.index("[") :]) if p["name"] == "driftwatch"]
    views = {(v["name"], v["destination"]) for v in plugin["external_views"]}
    assert {
        ("Drift report", "dag_run"),
        ("Model monitor", "dag_run"),
        ("Validation", "dag_run"),
        ("Model history", "nav"),
        ("Model history", "dag"),
    } <= views
    assert "MLflowRunLink" in str(plugin["operator_extra_links"])
    assert "MLflowModelLink" in str(plugin["operator_extra_links"])
    api_plugins = stack.api("GET", "/api/v2/plugins")["plugins"]
    (served,) = [p for p in api_plugins if p["name"] == "driftwatch"]
    assert {v["href"] for v in served["external_views"]} >= {
        "/driftwatch/dags/{DAG_ID}/runs/{RUN_ID}/drift",
        "/driftwatch/history",
    }


def test_pages_answer_only_to_an_authenticated_user(ui):
    stack, _, token = ui
    run = _run_id(stack, DRIFT_DAY)
    paths = [
        f"/driftwatch/dags/{DAG_ID}/runs/{run}/drift",
        f"/driftwatch/dags/{DAG_ID}/runs/{run}/drift/report",
        f"/driftwatch/dags/{DAG_ID}/runs/{run}/validation",
        f"/driftwatch/dags/{DAG_ID}/runs/{run}/monitor",
        f"/driftwatch/dags/{DAG_ID}/history",
        "/driftwatch/history",
        f"/driftwatch/reports/{DAG_ID}/date={DRIFT_DAY}/drift.html",
    ]
    for path in paths:
        assert _get(stack, path)[0] == 401, path
        assert _get(stack, path, token="not-a-token")[0] in (401, 403), path
        assert _get(stack, path, cookie="forged.jwt.value")[0] in (401, 403), path
        assert _get(stack, path, token=token)[0] == 200, path
    # the UI's session cookie is accepted like the bearer token (that is what the iframe tabs send)
    assert _get(stack, paths[0], cookie=token)[0] == 200


def test_drift_tab_serves_the_days_evidently_report(ui):
    from ml import report_html

    stack, settings, token = ui
    tab = f"/driftwatch/dags/{DAG_ID}/runs/{_run_id(stack, DRIFT_DAY)}/drift"
    status, headers, body = _request(stack, tab, token=token)
    # the tab is a page of ours framing the report in a sandbox that allows scripts but no origin
    assert status == 200 and headers["content-security-policy"] == report_html.WRAPPER_CSP
    assert "sandbox='allow-scripts'" in body and "src='drift/report'" in body and "<script" not in body
    status, headers, body = _request(stack, f"{tab}/report", token=token)
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert body == (settings.report_dir(DRIFT_DAY) / "drift.html").read_text()  # written safe by detect_drift
    assert "window.drawDashboard(" in body and "temp" in body  # an Evidently report, of the day with temp +50
    csp = headers["content-security-policy"]
    assert csp.endswith("sandbox allow-scripts") and "connect-src 'none'" in csp and "unsafe-eval" not in csp
    assert headers["x-content-type-options"] == "nosniff" and headers["referrer-policy"] == "no-referrer"


def test_drift_tab_of_a_day_never_opened_renders_its_report_once(ui):
    """A monitored day that did not retrain keeps only its numbers (drift.json): the first request of its
    report renders it in the API server from the kept batch and the champion's reference, with the methods
    and thresholds the day was decided on; the next requests are served from the file."""
    from ml.history import History

    stack, settings, token = ui
    row = History(settings.history_url).get_day(settings.name, CALM_DAY)
    assert row["decision"] == "skip" and row["drift_share"] is not None, row
    html = settings.report_dir(CALM_DAY) / "drift.html"
    assert not html.exists()
    tab = f"/driftwatch/dags/{DAG_ID}/runs/{_run_id(stack, CALM_DAY)}/drift"
    assert _get(stack, tab, token=token)[0] == 200
    started = time.perf_counter()
    status, headers, body = _request(stack, f"{tab}/report", token=token)
    first = time.perf_counter() - started
    assert status == 200 and "window.drawDashboard(" in body, body[:500]
    assert headers["content-security-policy"].endswith("sandbox allow-scripts")
    assert html.is_file() and body == html.read_text()
    kept = json.loads(html.with_name("drift.json").read_text())
    assert all(column in body for column in kept["columns"])
    modified = html.stat().st_mtime_ns
    started = time.perf_counter()
    assert _request(stack, f"{tab}/report", token=token)[2] == body
    print(
        f"drift report of a never-opened day: {first:.2f} s; from the file: {time.perf_counter() - started:.2f} s"
    )
    assert html.stat().st_mtime_ns == modified  # not rendered again


def test_monitor_tab_serves_the_days_model_monitor_report(ui):
    from ml.history import History

    stack, settings, token = ui
    status, ctype, body = _get(
        stack, f"/driftwatch/dags/{DAG_ID}/runs/{_run_id(stack, DRIFT_DAY)}/monitor", token=token
    )
    assert status == 200 and ctype.startswith("text/html")
    assert body == (settings.report_dir(DRIFT_DAY) / "model_monitor.html").read_text()
    row = History(settings.history_url).get_day(settings.name, DRIFT_DAY)
    assert f"{row['attribution_ndcg']:.2f}" in body and "LGA" in body  # attribution score, an origin segment
    assert row["estimated_quality"]["roc_auc"] is not None and row["quality"]["roc_auc"] is not None


def test_validation_tab_shows_the_failure_of_the_quarantined_batch(ui):
    stack, _, token = ui
    status, _, body = _get(
        stack, f"/driftwatch/dags/{DAG_ID}/runs/{_run_id(stack, BAD_DAY)}/validation", token=token
    )
    assert status == 200
    assert "distance" in body  # the missing column is named
    status, _, good = _get(
        stack, f"/driftwatch/dags/{DAG_ID}/runs/{_run_id(stack, DRIFT_DAY)}/validation", token=token
    )
    assert status == 200 and good != body


def test_a_day_without_a_report_explains_why(ui):
    stack, _, token = ui
    status, _, body = _get(
        stack, f"/driftwatch/dags/{DAG_ID}/runs/{_run_id(stack, COLLECT_DAY)}/drift", token=token
    )
    assert status == 404 and "driftwatch-missing" in body and "collecting the original window" in body
    assert _get(stack, f"/driftwatch/dags/{DAG_ID}/runs/no_such_run/drift", token=token)[0] == 404
    assert _get(stack, "/driftwatch/dags/not_a_driftwatch_dag/history", token=token)[0] in (403, 404)


@pytest.mark.parametrize(
    "path",
    [
        "../../airflow/simple_auth_manager_passwords.json.generated",
        "..%2f..%2fairflow%2fsimple_auth_manager_passwords.json.generated",
        "%2e%2e/%2e%2e/airflow/simple_auth_manager_passwords.json.generated",
        "%2E%2E%2F%2E%2E%2Fairflow%2Fdriftwatch-secrets.json",
        "%252e%252e%252f%252e%252e%252fairflow%252fdriftwatch-secrets.json",
        "date=2013-01-07/../../../airflow/driftwatch-secrets.json",
        "date=2013-01-07/..%5c..%5c..%5cairflow%5cdriftwatch-secrets.json",
        "%2fetc%2fpasswd",
        "/etc/passwd",
        "date=2013-01-07/%00drift.html",
        "date=2013-01-07/escape.json",  # a symlink pointing out of the report store
        "date=2013-01-07",  # a directory
    ],
)
def test_report_files_outside_the_store_are_refused(ui, path):
    stack, settings, token = ui
    link = settings.report_dir(DRIFT_DAY) / "escape.json"
    if not link.is_symlink():
        link.symlink_to(stack.home / "airflow" / "driftwatch-secrets.json")
    status, _, body = _get(stack, f"/driftwatch/reports/{DAG_ID}/{path}", token=token)
    assert status in (400, 404), (status, body[:200])
    secrets = json.loads((stack.home / "airflow" / "driftwatch-secrets.json").read_text())
    assert not any(value in body for value in secrets.values())
    assert stack.cfg.admin_password not in body


def test_report_files_inside_the_store_are_served(ui):
    stack, settings, token = ui
    status, ctype, body = _get(
        stack, f"/driftwatch/reports/{DAG_ID}/date={DRIFT_DAY}/drift.json", token=token
    )
    assert status == 200 and ctype.startswith("application/json")
    assert json.loads(body) == json.loads((settings.report_dir(DRIFT_DAY) / "drift.json").read_text())


def test_model_history_plots_the_days_and_lists_the_events(ui):
    stack, _, token = ui
    status, _, body = _get(stack, f"/driftwatch/dags/{DAG_ID}/history", token=token)
    assert status == 200
    assert "<svg" in body and 'id="history-plot"' in body
    assert "quarantined" in body and "promoted v" in body and BAD_DAY.isoformat() in body
    assert _get(stack, "/driftwatch/history", token=token)[2].count("<svg") == 1  # one dataset: its page
    status, ctype, png = _get(stack, f"/driftwatch/dags/{DAG_ID}/history.png", token=token)
    assert status == 200 and ctype == "image/png"
    data = json.loads(_get(stack, f"/driftwatch/dags/{DAG_ID}/history.json", token=token)[2])
    days = {d["day"]: d for d in data["days"]}
    assert days[BAD_DAY.isoformat()]["status"] == "quarantined"
    assert days[DRIFT_DAY.isoformat()]["drift_share"] >= data["drift_threshold"]
    assert [p["day"] for p in data["promotions"]][:1] == [BOOT_DAY.isoformat()]


def test_train_evaluate_promote_link_to_the_mlflow_run_and_version(ui):
    stack, settings, _ = ui
    from mlflow import MlflowClient

    run = _run_id(stack, BOOT_DAY)
    client = MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)
    version = client.get_model_version_by_alias(settings.registered_model, "champion")
    boot = min(int(v.version) for v in client.search_model_versions(f"name='{settings.registered_model}'"))
    for task_id in ("train_challenger", "evaluate_challenger", "promote_challenger"):
        links = stack.api(
            "GET",
            f"/api/v2/dags/{DAG_ID}/dagRuns/{airflow_api.url_segment(run)}/taskInstances/{task_id}/links",
        )
        links = links["extra_links"]
        mv = client.get_model_version(settings.registered_model, str(boot))
        assert links["MLflow run"] == (
            f"{stack.cfg.mlflow_url}/#/experiments/{client.get_run(mv.run_id).info.experiment_id}/runs/{mv.run_id}"
        ), task_id
        assert links["MLflow model version"] == (
            f"{stack.cfg.mlflow_url}/#/models/{settings.registered_model}/versions/{boot}"
        ), task_id
    # a task without MLflow work has no such buttons
    links = stack.api(
        "GET",
        f"/api/v2/dags/{DAG_ID}/dagRuns/{airflow_api.url_segment(run)}/taskInstances/detect_drift/links",
    )
    assert "MLflow run" not in links["extra_links"]
    # the MLflow side links back: the run carries its Airflow DAG run, the version its decision evidence
    mv = client.get_model_version(settings.registered_model, str(boot))
    tags = client.get_run(mv.run_id).data.tags
    assert tags["driftwatch.dag_run_id"] == run
    assert (
        tags["driftwatch.dag_run_url"]
        == f"{stack.cfg.airflow_url}/dags/{DAG_ID}/runs/{airflow_api.url_segment(run)}"
    )
    assert mv.tags["driftwatch.decision"] == "promoted" and mv.description.startswith("Decision on")
    assert int(version.version) >= boot


def _alerts(settings) -> list[dict]:
    if not settings.paths.alerts.is_file():
        return []
    return [json.loads(line) for line in settings.paths.alerts.read_text().splitlines() if line.strip()]


def test_quarantine_and_promotion_alerts_come_from_the_notifier(ui):
    _, settings, _ = ui
    alerts = _alerts(settings)
    quarantine = [a for a in alerts if a["kind"] == "quarantine"]
    # one per run of the bad day (test_reproducibility re-runs it)
    assert quarantine and {a["day"] for a in quarantine} == {BAD_DAY.isoformat()}
    assert {a["path"] for a in quarantine} == {str(settings.quarantine_dir(BAD_DAY))}
    promotions = [a for a in alerts if a["kind"] == "promotion"]
    assert BOOT_DAY.isoformat() in [a["day"] for a in promotions]
    assert all(a["version"] and a["dag_run_id"].startswith("backfill__") for a in promotions)


def test_a_failed_run_raises_one_failure_alert(ui, flights_frame):
    stack, settings, _ = ui
    frame = flights_frame[flights_frame["date"] == FAIL_DAY.isoformat()][settings.columns]
    part = stack.lake / "flights" / f"date={FAIL_DAY.isoformat()}"
    part.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(part / "part-0.parquet", index=False)
    run_id = f"manual__{FAIL_DAY}_bad_params"
    conf = {"force_retrain": True, "model_params": {"no_such_parameter": 1}}
    state = stack.trigger(DAG_ID, FAIL_DAY, conf, run_id=run_id, timeout=400)
    assert state == "failed"
    deadline = dt.datetime.now() + dt.timedelta(seconds=60)  # the DAG callback runs in the dag-processor
    failures: list[dict] = []
    while not failures and dt.datetime.now() < deadline:
        failures = [a for a in _alerts(settings) if a["kind"] == "failure" and a["dag_run_id"] == run_id]
        time.sleep(1)
    assert len(failures) == 1, _alerts(settings)[-3:]
    assert failures[0]["day"] == FAIL_DAY.isoformat() and "train_challenger" in failures[0]["message"]
    assert "no_such_parameter" in failures[0]["message"]
    assert failures[0]["url"].endswith(f"/dags/{DAG_ID}/runs/{airflow_api.url_segment(run_id)}")


@pytest.mark.parametrize(
    "conf",
    [
        {"drift_share": 2},
        {"force_retrain": "yes"},
        {"dataset": "other"},
        {"min_delta": "high"},
        {"model_params": [1, 2]},
    ],
)
def test_a_manual_run_with_invalid_params_is_refused(ui, conf):
    stack, _, _ = ui
    with pytest.raises(airflow_api.ApiError) as err:
        stack.api(
            "POST",
            f"/api/v2/dags/{DAG_ID}/dagRuns",
            {
                "logical_date": "2013-02-20T00:00:00Z",
                "dag_run_id": f"bad_params_{len(str(conf))}",
                "conf": conf,
            },
        )
    assert err.value.status == 400, err.value
    assert list(conf)[0] in str(err.value)
    assert not [r for r in stack.runs(DAG_ID) if r["dag_run_id"].startswith("bad_params_")]
