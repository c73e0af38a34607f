"""The real DAG on real flight data, run by the real Airflow scheduler, with a real MLflow tracking server.

Scenario (a small variant of flights.yaml: original window Jan 1-5, holdout 2 days, no cooldown):
  Jan 1-4  collect the original window            Jan 5  bootstrap the first champion
  Jan 6    a real day: no retrain                  Jan 7  injected drift -> retrain
  Jan 8    a batch missing a column -> quarantine  Jan 9  manual run, forced, weak hyper-parameters
                                                          -> the worse challenger is rejected
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys

import pytest
from stack_fixtures import BAD_DAY, DAG_ID, DAYS, DRIFT_DAY, MANUAL_DAY

from ml.config import REPO_ROOT

pytestmark = pytest.mark.integration


def _history(settings):
    from ml.history import History

    return {r["day"]: r for r in History(settings.history_url).days(settings.name)}


def _client(settings):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)


def test_no_import_errors(pipeline):
    stack, _ = pipeline
    assert stack.api("GET", "/api/v2/importErrors")["import_errors"] == []


def test_first_champion_is_bootstrapped_and_has_the_alias(pipeline):
    stack, settings = pipeline
    rows = _history(settings)
    assert [rows[d.isoformat()]["decision"] for d in DAYS[:4]] == ["collect"] * 4
    boot = rows["2013-01-05"]
    assert boot["decision"] == "bootstrap" and boot["promotion"] == "promoted", boot
    champion = _client(settings).get_model_version_by_alias(settings.registered_model, "champion")
    tags = champion.tags
    assert float(tags["holdout.roc_auc"]) > 0.5
    assert tags["driftwatch.decision"] == "promoted"
    assert tags["driftwatch.dag_run_id"].startswith("backfill__")


def test_status_cli_names_the_champion(pipeline):
    stack, settings = pipeline
    out = subprocess.run(
        [sys.executable, "-m", "ml.cli", "status", "--json"],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO_ROOT,
    )
    status = json.loads(out.stdout)
    alias = _client(settings).get_model_version_by_alias(settings.registered_model, "champion")
    assert status["champion"]["version"] == int(alias.version)
    assert status["champion"]["alias_version"] == int(alias.version)
    assert status["quarantined"] == 1 and status["days_run"] >= len(DAYS) - 1


def test_each_monitored_day_keeps_its_numbers_and_a_retrain_day_its_report(pipeline):
    _, settings = pipeline
    rows = _history(settings)
    for day in (dt.date(2013, 1, 6), DRIFT_DAY):
        kept = json.loads((settings.report_dir(day) / "drift.json").read_text())
        assert kept["drift_share"] == rows[day.isoformat()]["drift_share"]
        assert (settings.report_dir(day) / "validation.html").is_file()
        report = settings.report_dir(day) / "drift.html"
        # rendered on the day that triggered a retrain (the challenger's evidence); else when opened
        assert report.is_file() == (rows[day.isoformat()]["decision"] == "retrain"), day
        if report.is_file():
            text = report.read_text(errors="replace")
            assert "drawDashboard" in text, "not an Evidently report"  # Evidently's dashboard renderer
            for column in rows[day.isoformat()]["drifted_columns"]:
                assert column in text


def test_a_real_day_does_not_retrain_and_the_injected_drift_does(pipeline):
    _, settings = pipeline
    rows = _history(settings)
    calm, drifted = rows["2013-01-06"], rows[DRIFT_DAY.isoformat()]
    assert calm["decision"] == "skip", calm
    assert calm["drift_share"] < 0.5
    assert drifted["decision"] == "retrain", drifted
    assert drifted["drift_share"] >= 0.5 and "drift share" in drifted["reason"]
    assert drifted["candidate_version"] is not None
    assert drifted["promotion"] in ("promoted", "rejected")
    version = _client(settings).get_model_version(
        settings.registered_model, str(drifted["candidate_version"])
    )
    assert version.tags["driftwatch.decision"] == drifted["promotion"]
    assert "Decision on 2013-01-07" in version.description


def test_a_bad_batch_is_quarantined_and_nothing_is_lost(pipeline):
    _, settings = pipeline
    from ml.history import History

    rows = _history(settings)
    bad = rows[BAD_DAY.isoformat()]
    assert bad["status"] == "quarantined" and bad["decision"] == "quarantine"
    assert "distance" in bad["reason"]
    quarantined = settings.quarantine_dir(BAD_DAY)
    assert (quarantined / "part-0.parquet").is_file(), "the raw file must be kept"
    assert "distance" in (quarantined / "_reason.json").read_text()
    assert not list(settings.partition_dir(BAD_DAY).glob("*.parquet"))
    h = History(settings.history_url)
    assert h.champion_at(settings.name, BAD_DAY) == h.champion_at(settings.name, DRIFT_DAY)
    alerts = settings.paths.alerts.read_text()
    assert '"kind": "quarantine"' in alerts and "2013-01-08" in alerts


def test_a_worse_challenger_is_rejected_and_the_champion_stays(pipeline):
    stack, settings = pipeline
    from ml.config import load_settings

    client = _client(settings)
    before = client.get_model_version_by_alias(settings.registered_model, "champion").version
    frame_dir = stack.lake / "flights" / f"date={MANUAL_DAY.isoformat()}"
    assert frame_dir.is_dir()
    conf = {
        "force_retrain": True,
        "model_params": {"max_iter": 1, "learning_rate": 0.01, "max_leaf_nodes": 2},
    }
    run_id = f"manual__{MANUAL_DAY.isoformat()}_weak_challenger"
    state = stack.trigger(DAG_ID, MANUAL_DAY, conf, run_id=run_id, timeout=600)
    states = {ti["task_id"]: ti["state"] for ti in stack.task_instances(DAG_ID, run_id)}
    assert state == "success", (states, stack.failure_report())
    assert states["reject_challenger"] == "success", (states, stack.failure_report())
    assert states["promote_challenger"] == "skipped"
    row = _history(load_settings("flights"))[MANUAL_DAY.isoformat()]
    assert row["decision"] == "retrain" and "force_retrain" in row["reason"]
    assert row["promotion"] == "rejected" and row["promotion_reason"].startswith("rejected")
    after = client.get_model_version_by_alias(settings.registered_model, "champion").version
    assert after == before
    rejected = client.get_model_version(settings.registered_model, str(row["candidate_version"]))
    assert rejected.tags["driftwatch.decision"] == "rejected"
    assert float(rejected.tags["gain.ci_low"]) <= 0
