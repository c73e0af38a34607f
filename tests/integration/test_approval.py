"""`promotion.approval: manual` under the real scheduler (Airflow's HITL ApprovalOperator): a backfill is
approved automatically, its history says so, and nobody is left waiting; a manual run nobody answers is
rejected by the scheduler's timeout sweep and the champion stays. A person approving one promotion and
rejecting another on the Required Actions panel of the real UI: tests/e2e/test_ui_approval.py (it runs on
this backfill). Who is asked, the DAG's shape, how an answer is read: tests/unit/test_approve_challenger.py."""

from __future__ import annotations

import datetime as dt
import time

import pytest
from stack_fixtures import APPROVAL_DAG_ID, APPROVAL_FIRST, APPROVAL_TIMEOUT_S, approval_dataset

pytestmark = pytest.mark.integration

DAYS = [dt.date(2013, 1, 1) + dt.timedelta(days=i) for i in range(6)]
FIRST = APPROVAL_FIRST


@pytest.fixture(scope="module")
def approval(yaml_datasets, flights_frame):
    yield from approval_dataset(yaml_datasets, flights_frame, DAYS)


def test_a_backfill_is_approved_automatically_and_the_history_says_so(approval):
    stack, s, h = approval
    assert h.champion_at(s.name, FIRST) == 1
    row = h.get_day(s.name, FIRST)
    assert row["approval"]["approved"] is True
    assert row["approval"]["by"].startswith("auto (a backfill is approved automatically")


def test_no_answer_within_the_timeout_rejects_the_challenger_and_the_champion_stays(approval):
    stack, s, h = approval
    day = DAYS[4]  # a manual run: a person is asked
    champion = h.champion_at(s.name, FIRST)
    started = time.monotonic()
    state = stack.trigger(APPROVAL_DAG_ID, day, {"force_retrain": True, "min_delta": -1.0}, timeout=900)
    waited = time.monotonic() - started
    assert state == "success", stack.failure_report()
    run_id = next(
        r["dag_run_id"] for r in stack.runs(APPROVAL_DAG_ID) if r["logical_date"].startswith(str(day))
    )
    tis = {t["task_id"]: t for t in stack.task_instances(APPROVAL_DAG_ID, run_id)}
    assert tis["approve_challenger"]["state"] == "success"
    assert tis["promote_challenger"]["state"] == "skipped"
    # it waited for the answer that never came: no sooner than the timeout
    assert waited >= APPROVAL_TIMEOUT_S
    row = h.get_day(s.name, day)
    assert row["approval"]["approved"] is False and row["approval"]["by"] == "timeout"
    assert row["promotion"] == "rejected" and "not approved by timeout" in row["promotion_reason"]
    assert h.champion_at(s.name, day) == champion
    log = stack.task_log(APPROVAL_DAG_ID, run_id, "approve_challenger")
    assert "Rejected by timeout" in log, log[-2000:]
    from ml.registry import client

    tags = client(s).get_model_version(s.registered_model, str(row["candidate_version"])).tags
    assert (tags["driftwatch.approval"], tags["driftwatch.approval.by"]) == ("rejected", "timeout")
    assert tags["driftwatch.decision"] == "rejected"
