"""A regression and a multiclass dataset, each a YAML only, through the real DAG (issue 18).

The bundled ml/datasets/flights_delay_minutes.yaml (arrival delay in minutes) and flights_lateness.yaml
(on_time / late / very_late), shortened by tests/stack_fixtures.py to an 8-day original window and a
challenger every day after it. The scheduler runs Jan 1-11 of each against the real MLflow server: collect,
bootstrap on Jan 8, then three days whose drift step measures the task's quality, whose model monitors are
the task's (ml/monitor_tasks.py) and whose challengers go through the task's promotion gate.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from stack_fixtures import TASK_DAYS as DAYS
from stack_fixtures import TASK_NAMES, use_stack_env

from ml.config import REPO_ROOT

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def tasks(yaml_datasets):
    stack, folder = yaml_datasets
    mp = use_stack_env(stack, folder)
    try:
        results = {}
        for name in TASK_NAMES:
            out = subprocess.run(
                [sys.executable, "-m", "ml.cli", "prepare", name],
                capture_output=True,
                text=True,
                cwd=REPO_ROOT,
                timeout=300,
            )
            assert out.returncode == 0, out.stderr
        for name in TASK_NAMES:
            dag_id = f"retraining_pipeline__{name}"
            stack.wait_for_dag(dag_id, timeout=180)
            results[name] = stack.backfill(dag_id, DAYS[0], DAYS[-1], timeout=900)
        from ml.config import load_settings

        yield stack, {n: load_settings(n) for n in TASK_NAMES}, results
    finally:
        mp.undo()


def _rows(settings):
    from ml.history import History

    return {r["day"]: r for r in History(settings.history_url).days(settings.name)}


@pytest.mark.parametrize("name", TASK_NAMES)
def test_every_day_runs_and_each_challenger_meets_the_tasks_gate(tasks, name):
    stack, settings, results = tasks
    s = settings[name]
    assert results[name]["failed"] == 0 and results[name]["success"] == len(DAYS), (
        results[name],
        stack.failure_report(),
    )
    rows = _rows(s)
    assert rows["2013-01-08"]["decision"] == "bootstrap" and rows["2013-01-08"]["promotion"] == "promoted", (
        rows["2013-01-08"]["reason"],
        (rows["2013-01-08"]["evaluation"] or {}).get("reason"),
    )
    primary = s.objective.primary
    for day in DAYS[8:]:
        row = rows[day.isoformat()]
        assert row["decision"] == "retrain", row
        assert row["promotion"] in ("promoted", "rejected"), row
        # the drift step measured the task's own quality on the day's labels
        assert row["quality"][primary] is not None and row["quality_drop"] is not None, row["quality"]
        assert f"{primary}_se" in row["quality"]
        evaluation = row["evaluation"]
        assert evaluation["task"] == s.task and evaluation["metric"] == primary
        assert set(evaluation["checks"]) >= {"gain_ci_low", "guardrail_increase"}
        assert s.objective.label in evaluation["reason"]


def test_the_regression_scores_are_minutes_and_its_versions_carry_the_rmse(tasks):
    from mlflow import MlflowClient

    _, settings, _ = tasks
    s = settings["flights_delay_minutes"]
    preds = pd.read_parquet(s.partition_dir(DAYS[-1]) / "_predictions.parquet")
    assert (
        preds["score"].max() > 1.0 and preds["score"].min() < 0.0
    )  # delays, early arrivals: not probabilities
    client = MlflowClient(tracking_uri=s.tracking_uri, registry_uri=s.tracking_uri)
    champion = client.get_model_version_by_alias(s.registered_model, "champion")
    assert float(champion.tags["holdout.rmse"]) > 0 and "holdout.roc_auc" not in champion.tags
    monitored = _rows(s)[DAYS[-1].isoformat()]
    assert monitored["prediction_drift"] is not None  # on the predicted minutes
    # the model monitors of a regression: no label-free estimate (the page says why), bias gaps of the mean
    # prediction and the absolute error between origins, attribution on the predicted value
    assert monitored["estimated_quality"] is None
    gaps = monitored["bias"]["columns"]["origin"]
    assert (
        gaps["prediction_gap"] > 0
        and gaps["error_gap"] is not None
        and gaps["reference_error_gap"] is not None
    )
    assert 0 <= monitored["attribution_ndcg"] <= 1
    page = (s.report_dir(DAYS[-1]) / "model_monitor.html").read_text()
    assert "Estimated: none. no label-free estimate for a regression" in page and "RMSE" in page


def test_the_multiclass_scores_are_a_class_and_its_probabilities(tasks):
    from mlflow import MlflowClient

    _, settings, _ = tasks
    s = settings["flights_lateness"]
    preds = pd.read_parquet(s.partition_dir(DAYS[-1]) / "_predictions.parquet")
    proba = preds[["p_0", "p_1", "p_2"]].to_numpy()
    assert np.allclose(proba.sum(axis=1), 1.0)
    assert set(preds["score"]) <= set(s.classes)
    assert (preds["score"].to_numpy() == np.asarray(s.classes, dtype=object)[proba.argmax(axis=1)]).all()
    client = MlflowClient(tracking_uri=s.tracking_uri, registry_uri=s.tracking_uri)
    champion = client.get_model_version_by_alias(s.registered_model, "champion")
    assert 0 < float(champion.tags["holdout.macro_f1"]) < 1
    drift = _rows(s)[DAYS[-1].isoformat()]
    assert (
        drift["prediction_drift"] is None or drift["prediction_drift"] >= 0
    )  # the predicted class, categorical
    # the model monitors of a multiclass task: CBPE's macro F1 beside the realized one, predicted-class share
    # gaps between origins, attribution on the class probabilities
    estimated, realized = drift["estimated_quality"], drift["quality"]
    assert 0 < estimated["macro_f1"] < 1 and 0 < estimated["accuracy"] < 1, estimated
    assert abs(estimated["accuracy"] - realized["accuracy"]) < 0.15, (estimated, realized)
    gaps = drift["bias"]["columns"]["origin"]
    assert gaps["prediction_gap"] is not None and gaps["error_gap"] is not None
    assert 0 <= drift["attribution_ndcg"] <= 1
    page = (s.report_dir(DAYS[-1]) / "model_monitor.html").read_text()
    assert "macro F1" in page and "predicted-class share gap" in page
