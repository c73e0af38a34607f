"""A dataset added with a YAML file alone: the synthetic stream runs through the real DAG.

The bundled ml/datasets/synthetic_abrupt.yaml, shortened so the test backfills 9 days instead of 90 (only
YAML keys change: a shorter stream and original window, the onset on day 8, no cooldown; written by
tests/stack_fixtures.py). No Python is
written for it: `driftwatch prepare` generates the partitions from the YAML, the DAG file turns the YAML
into `retraining_pipeline__<name>`, and the scheduler runs it against the real MLflow server:

  Jan 1-4  collect    Jan 5  bootstrap the first champion    Jan 6-7  no drift: monitored, skip
  Jan 8    abrupt covariate drift (x1, x2, x4 move 1.5 sd) -> retrain    Jan 9  drifted as well
"""

from __future__ import annotations

import datetime as dt
import subprocess
import sys

import pytest
from stack_fixtures import SYNTHETIC_NAME as NAME
from stack_fixtures import use_stack_env

from ml.config import REPO_ROOT

pytestmark = pytest.mark.integration

ONSET = dt.date(2024, 1, 8)
DAYS = [dt.date(2024, 1, d) for d in range(1, 10)]


@pytest.fixture(scope="module")
def synthetic(yaml_datasets):
    stack, folder = yaml_datasets
    mp = use_stack_env(stack, folder)  # the test process reads the same YAML and stores as the tasks
    try:
        out = subprocess.run(
            [sys.executable, "-m", "ml.cli", "prepare", NAME],
            capture_output=True,
            text=True,
            cwd=REPO_ROOT,
            timeout=300,
        )
        assert out.returncode == 0, out.stderr
        parts = sorted(p.name for p in (stack.lake / NAME).glob("date=*"))
        assert parts == [f"date={d.isoformat()}" for d in DAYS], parts
        dag_id = f"retraining_pipeline__{NAME}"
        stack.wait_for_dag(dag_id, timeout=180)
        result = stack.backfill(dag_id, DAYS[0], DAYS[-1], timeout=900)
        from ml.config import load_settings

        yield stack, load_settings(NAME), result, dag_id
    finally:
        mp.undo()


def test_every_day_of_the_stream_runs_through_the_dag(synthetic):
    stack, _, result, dag_id = synthetic
    assert result["failed"] == 0 and result["success"] == len(DAYS), (result, stack.failure_report())
    assert stack.api("GET", "/api/v2/importErrors")["import_errors"] == []
    assert stack.api("GET", f"/api/v2/dags/{dag_id}")["dag_id"] == dag_id


def test_drift_is_detected_on_the_onset_day_and_not_before(synthetic):
    from ml.history import History

    _, settings, _, _ = synthetic
    rows = {r["day"]: r for r in History(settings.history_url).days(NAME)}
    assert [rows[d.isoformat()]["decision"] for d in DAYS[:4]] == ["collect"] * 4
    assert rows["2024-01-05"]["decision"] == "bootstrap"
    for day in DAYS[5:7]:  # Jan 6-7: the same distribution as the training data
        row = rows[day.isoformat()]
        assert row["decision"] == "skip", row
        assert row["drift_share"] < settings.thresholds.drift_share, row
    onset = rows[ONSET.isoformat()]
    assert onset["decision"] == "retrain", onset
    assert onset["drift_share"] >= settings.thresholds.drift_share, onset
    assert {"x1", "x2", "x4"} <= set(onset["drifted_columns"]), onset["drifted_columns"]
    assert "x3" not in onset["drifted_columns"] and "x5" not in onset["drifted_columns"]
    assert onset["promotion"] in ("promoted", "rejected"), onset
    assert (settings.report_dir(ONSET) / "drift.html").is_file()


def test_the_registry_holds_the_streams_champion(synthetic):
    from mlflow import MlflowClient

    _, settings, _, _ = synthetic
    client = MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)
    champion = client.get_model_version_by_alias("synthetic-short", "champion")
    assert float(champion.tags["holdout.roc_auc"]) > 0.6  # the label rule is learnable
    from ml.history import History

    trained = [
        r["day"]
        for r in History(settings.history_url).days(NAME)
        if r["decision"] in ("bootstrap", "retrain")
    ]
    assert trained[:2] == ["2024-01-05", ONSET.isoformat()], trained  # Jan 9 may retrain again (no cooldown)
    versions = client.search_model_versions("name='synthetic-short'")
    assert len(versions) == len(trained)  # one registered version per training, nothing else
