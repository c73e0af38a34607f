"""`promotion.approval: manual` under the real scheduler and API server (Airflow's HITL ApprovalOperator): a
backfill is approved automatically and its history says so; on a manual run the `approve_challenger` task
waits in `awaiting_input` with the evidence, and the answer given through Airflow's REST API (what the
Required Actions page sends) decides: approved -> promoted, who and why in the audit and on the MLflow
version; rejected -> the champion stays and the challenger is tagged rejected with the reviewer's comment.
The pure parts: tests/unit/test_approve_challenger.py."""

from __future__ import annotations

import datetime as dt
import time

import pytest
from stack_fixtures import APPROVAL_DAG_ID, APPROVAL_NAME, use_stack_env

pytestmark = pytest.mark.integration

DAYS = [dt.date(2013, 1, 1) + dt.timedelta(days=i) for i in range(6)]
FIRST = dt.date(2013, 1, 4)  # the first champion (end of the original window), in the backfill
FORCED = {"force_retrain": True, "min_delta": -1.0}  # a challenger that passes the offline gate


@pytest.fixture(scope="module")
def approval(yaml_datasets, flights_frame):
    stack, folder = yaml_datasets
    mp = use_stack_env(stack, folder)
    try:
        from ml.config import load_settings

        s = load_settings(APPROVAL_NAME)
        assert s.promotion.approval == "manual"
        for day in DAYS:
            frame = flights_frame[flights_frame["date"] == day.isoformat()][s.columns].reset_index(drop=True)
            part = s.partition_dir(day)
            part.mkdir(parents=True, exist_ok=True)
            frame.to_parquet(part / "part-0.parquet", index=False)
        stack.wait_for_dag(APPROVAL_DAG_ID, timeout=180)
        result = stack.backfill(APPROVAL_DAG_ID, DAYS[0], FIRST, timeout=900)
        assert result["failed"] == 0, (result, stack.failure_report())
        yield stack, s
    finally:
        mp.undo()


def _history(s):
    from ml.history import History

    return History(s.history_url)


def _ask_and_answer(stack, s, day: dt.date, option: str, comment: str) -> tuple[str, dict, dict]:
    """Trigger a forced run of `day`, wait for the question, answer it; (run id, question, answer)."""
    stack.trigger(APPROVAL_DAG_ID, day, FORCED, wait=False)
    run_id = next(
        r["dag_run_id"] for r in stack.runs(APPROVAL_DAG_ID) if r["logical_date"].startswith(day.isoformat())
    )
    path = f"/api/v2/dags/{APPROVAL_DAG_ID}/dagRuns/{run_id}/taskInstances/approve_challenger/-1/hitlDetails"
    until = time.monotonic() + 600
    state = None
    while time.monotonic() < until:
        tis = {t["task_id"]: t["state"] for t in stack.task_instances(APPROVAL_DAG_ID, run_id)}
        state = tis.get("approve_challenger")
        if state == "awaiting_input" or tis.get("record") in ("success", "failed"):
            break
        time.sleep(2)
    assert state == "awaiting_input", (tis, stack.failure_report())
    question = stack.api("GET", path)
    answer = stack.api("PATCH", path, json={"chosen_options": [option], "params_input": {"comment": comment}})
    until = time.monotonic() + 600
    while time.monotonic() < until:
        run = next(r for r in stack.runs(APPROVAL_DAG_ID) if r["dag_run_id"] == run_id)
        if run["state"] in ("success", "failed"):
            break
        time.sleep(2)
    assert run["state"] == "success", stack.failure_report()
    return run_id, question, answer


def test_a_backfill_is_approved_automatically_and_the_history_says_so(approval):
    stack, s = approval
    h = _history(s)
    assert h.champion_at(s.name, FIRST) == 1
    row = h.get_day(s.name, FIRST)
    assert row["approval"]["approved"] is True
    assert row["approval"]["by"].startswith("auto (a backfill is approved automatically")


def test_an_approved_challenger_is_promoted_with_who_and_why(approval):
    stack, s = approval
    day = DAYS[4]
    run_id, question, answer = _ask_and_answer(stack, s, day, "Approve", "gain is real, ship it")
    assert "Promote flights-approval v2" in question["subject"] and "replacing v1" in question["subject"]
    assert "Offline gate" in question["body"] and "MLflow version 2" in question["body"]
    assert question["options"] == ["Approve", "Reject"] and question["defaults"] == ["Reject"]
    who = answer["responded_by"]["name"] or answer["responded_by"]["id"]
    tis = {t["task_id"]: t["state"] for t in stack.task_instances(APPROVAL_DAG_ID, run_id)}
    assert tis["approve_challenger"] == "success" and tis["promote_challenger"] == "success", tis
    h = _history(s)
    assert h.champion_at(s.name, day) == 2
    [event] = [e for e in h.alias_events(s.name, "champion") if e["after_version"] == 2]
    assert f"approved by {who}: gain is real, ship it" in event["reason"]
    row = h.get_day(s.name, day)
    assert (row["approval"]["approved"], row["approval"]["by"]) == (True, who)
    from ml.registry import client

    tags = client(s).get_model_version(s.registered_model, "2").tags
    assert (tags["driftwatch.approval"], tags["driftwatch.approval.by"]) == ("approved", who)
    assert tags["driftwatch.approval.comment"] == "gain is real, ship it"
    assert tags["driftwatch.decision"] == "promoted"


def test_a_rejected_challenger_leaves_the_champion_and_says_who_and_why(approval):
    stack, s = approval
    day = DAYS[5]
    run_id, _, answer = _ask_and_answer(stack, s, day, "Reject", "holdout too small")
    who = answer["responded_by"]["name"] or answer["responded_by"]["id"]
    tis = {t["task_id"]: t["state"] for t in stack.task_instances(APPROVAL_DAG_ID, run_id)}
    assert tis["approve_challenger"] == "success" and tis["promote_challenger"] == "skipped", tis
    h = _history(s)
    assert h.champion_at(s.name, day) == 2  # unchanged
    row = h.get_day(s.name, day)
    assert (
        row["promotion"] == "rejected"
        and f"not approved by {who}: holdout too small" in row["promotion_reason"]
    )
    from ml.registry import client

    tags = client(s).get_model_version(s.registered_model, "3").tags
    assert (tags["driftwatch.approval"], tags["driftwatch.decision"]) == ("rejected", "rejected")
    assert "holdout too small" in tags["driftwatch.reason"]
