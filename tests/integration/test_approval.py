"""`promotion.approval: manual` under the real scheduler (Airflow's HITL ApprovalOperator): a backfill is
approved automatically, its history says so, and nobody is left waiting. A person approving one promotion and
rejecting another on the Required Actions panel of the real UI: tests/e2e/test_ui_approval.py (it runs on
this backfill). Who is asked, the DAG's shape, how an answer is read: tests/unit/test_approve_challenger.py."""

from __future__ import annotations

import datetime as dt

import pytest
from stack_fixtures import APPROVAL_FIRST, approval_dataset

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
