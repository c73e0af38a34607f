"""`promotion.approval: manual` under the real scheduler (Airflow's HITL ApprovalOperator): a backfill is
approved automatically, its history says so, and nobody is left waiting. A person approving one promotion and
rejecting another on the Required Actions panel of the real UI: tests/e2e/test_ui_approval.py (it runs on
this backfill). Who is asked, the DAG's shape, how an answer is read: tests/unit/test_approve_challenger.py."""

from __future__ import annotations

import datetime as dt

import pytest
from stack_fixtures import APPROVAL_DAG_ID, APPROVAL_NAME, use_stack_env, write_days

pytestmark = pytest.mark.integration

DAYS = [dt.date(2013, 1, 1) + dt.timedelta(days=i) for i in range(6)]
FIRST = dt.date(2013, 1, 4)  # the first champion (end of the original window), in the backfill


@pytest.fixture(scope="module")
def approval(yaml_datasets, flights_frame):
    stack, folder = yaml_datasets
    mp = use_stack_env(stack, folder)
    try:
        from ml.config import load_settings

        s = load_settings(APPROVAL_NAME)
        assert s.promotion.approval == "manual"
        write_days(s, flights_frame, DAYS)
        stack.wait_for_dag(APPROVAL_DAG_ID, timeout=180)
        result = stack.backfill(APPROVAL_DAG_ID, DAYS[0], FIRST, timeout=900)
        assert result["failed"] == 0, (result, stack.failure_report())
        yield stack, s
    finally:
        mp.undo()


def _history(s):
    from ml.history import History

    return History(s.history_url)


def test_a_backfill_is_approved_automatically_and_the_history_says_so(approval):
    stack, s = approval
    h = _history(s)
    assert h.champion_at(s.name, FIRST) == 1
    row = h.get_day(s.name, FIRST)
    assert row["approval"]["approved"] is True
    assert row["approval"]["by"].startswith("auto (a backfill is approved automatically")
