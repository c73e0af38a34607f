"""Labels that arrive late, through the real DAG: the pipeline still runs daily and decides from estimates.

flights (a YAML file written by tests/stack_fixtures.py: original window Jan 1-5, holdout 2 days) with
`label_delay_days: 2` and `monitoring.estimation.use_for_decisions: true`, `quality_drop: -0.05` so that
the estimate triggers a retrain whenever there are new labelled rows. The scheduler backfills Jan 1-9:

  Jan 1-4 collect   Jan 5 bootstrap   Jan 6-9 monitored: estimate on the day, realized two days later
  (Jan 6 on Jan 8, Jan 7 on Jan 9; Jan 8-9 still wait for their labels when the backfill ends)
"""

from __future__ import annotations

import datetime as dt

import pytest
from stack_fixtures import LATE_DAG_ID, LATE_DAYS, LATE_DELAY, LATE_NAME, use_stack_env

from devstack import airflow_api

pytestmark = pytest.mark.integration

BOOTSTRAP = dt.date(2013, 1, 5)
MONITORED = [d for d in LATE_DAYS if d > BOOTSTRAP]


@pytest.fixture(scope="module")
def late(yaml_datasets, flights_frame):
    stack, folder = yaml_datasets
    mp = use_stack_env(stack, folder)
    try:
        from ml.config import load_settings
        from ml.history import History

        s = load_settings(LATE_NAME)
        assert s.label_delay_days == LATE_DELAY and s.monitoring.estimation.use_for_decisions
        for day in LATE_DAYS:
            frame = flights_frame[flights_frame["date"] == day.isoformat()][s.columns].reset_index(drop=True)
            part = s.partition_dir(day)
            part.mkdir(parents=True, exist_ok=True)
            frame.to_parquet(part / "part-0.parquet", index=False)
        stack.wait_for_dag(LATE_DAG_ID, timeout=180)
        result = stack.backfill(LATE_DAG_ID, LATE_DAYS[0], LATE_DAYS[-1], timeout=1200)
        rows = {r["day"]: r for r in History(s.history_url).days(s.name)}
        yield stack, s, result, rows
    finally:
        mp.undo()


def test_every_day_runs(late):
    stack, _, result, _ = late
    assert result["failed"] == 0 and result["success"] == len(LATE_DAYS), (result, stack.failure_report())


def test_each_monitored_day_is_estimated_and_realized_once_its_labels_arrive(late):
    _, s, _, rows = late
    for day in MONITORED:
        row = rows[day.isoformat()]
        assert 0.5 < row["estimated_quality"]["roc_auc"] < 0.95, row["estimated_quality"]
        arrival = day + dt.timedelta(days=LATE_DELAY)
        if arrival <= LATE_DAYS[-1]:
            assert row["labels_known_on"] == arrival.isoformat()
            assert row["quality"]["roc_auc"] is not None and row["quality_drop"] is not None
            # the estimate made on the day and the realized value stand side by side
            assert abs(row["estimated_quality"]["roc_auc"] - row["quality"]["roc_auc"]) < 0.15
        else:
            assert row["quality"] is None and row["labels_known_on"] is None
        report = (s.report_dir(day) / "model_monitor.html").read_text()
        assert "CBPE" in report and f"labels arrive {LATE_DELAY} days later" in report


def test_decisions_come_from_the_estimate_and_training_waits_for_labels(late):
    from ml.history import History

    _, s, _, rows = late
    retrained = [d for d in MONITORED if rows[d.isoformat()]["decision"] == "retrain"]
    assert retrained, {d.isoformat(): rows[d.isoformat()]["reason"] for d in MONITORED}
    for day in retrained:
        assert "estimated AUC drop (CBPE" in rows[day.isoformat()]["reason"]
    for model in History(s.history_url).models(s.name):
        trained_on = dt.date.fromisoformat(model["trained_on"])
        used = [dt.date.fromisoformat(x) for x in model["train_days"] + model["holdout_days"]]
        unlabelled = [d for d in used if d > s.original_end and (trained_on - d).days < LATE_DELAY]
        assert not unlabelled, (
            f"v{model['version']} trained on {trained_on} with unlabelled days {unlabelled}"
        )


def test_the_monitor_task_and_its_tab(late):
    stack, _, _, _ = late
    runs = stack.runs(LATE_DAG_ID)
    run = next(r for r in runs if r["logical_date"].startswith(MONITORED[0].isoformat()))
    tis = {t["task_id"]: t["state"] for t in stack.task_instances(LATE_DAG_ID, run["dag_run_id"])}
    assert tis["monitor_model"] == "success" and tis["detect_drift"] == "success"
    token = airflow_api.api_token(stack.cfg)
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", stack.cfg.airflow_port, timeout=30)
    conn.request(
        "GET",
        f"/driftwatch/dags/{LATE_DAG_ID}/runs/{run['dag_run_id']}/monitor",
        headers={"Authorization": f"Bearer {token}"},
    )
    resp = conn.getresponse()
    body = resp.read().decode()
    assert resp.status == 200 and "Model monitor" in body and "nDCG" in body
