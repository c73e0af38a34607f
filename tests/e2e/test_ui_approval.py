"""Approving a promotion in the real Airflow UI (`promotion.approval: manual`), in Debian's headless Chromium:
two forced runs of the `flights_approval` dataset wait in `approve_challenger`; on each task's Required
Actions panel the test reads the question, types a comment and clicks Approve on one, Reject on the other.
The approved challenger becomes the champion with the reviewer's name and comment in the audit; the rejected
one leaves the champion as it was. Screenshots: test-artifacts/e2e/approval-*.png."""

from __future__ import annotations

import datetime as dt
import time
import urllib.parse

import pytest
from stack_fixtures import APPROVAL_DAG_ID, approval_dataset

from ml.config import REPO_ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

SHOTS = REPO_ROOT / "test-artifacts" / "e2e"
DAYS = [dt.date(2013, 1, 1) + dt.timedelta(days=i) for i in range(8)]
FORCED = {"force_retrain": True, "min_delta": -1.0}


@pytest.fixture(scope="module")
def approvals(yaml_datasets, flights_frame):
    """The approval dataset with a champion (backfilled when no earlier test did it)."""
    yield from approval_dataset(yaml_datasets, flights_frame, DAYS)


def _waiting(stack, day: dt.date) -> str:
    """Trigger a forced run of `day`; its run id once approve_challenger waits for an answer."""
    stack.trigger(APPROVAL_DAG_ID, day, FORCED, wait=False)
    run_id = next(
        r["dag_run_id"] for r in stack.runs(APPROVAL_DAG_ID) if r["logical_date"].startswith(day.isoformat())
    )
    until, tis = time.monotonic() + 600, {}
    while time.monotonic() < until:
        tis = {t["task_id"]: t["state"] for t in stack.task_instances(APPROVAL_DAG_ID, run_id)}
        if tis.get("approve_challenger") == "awaiting_input" or tis.get("record") in ("success", "failed"):
            break
        time.sleep(2)
    assert tis.get("approve_challenger") == "awaiting_input", (tis, stack.failure_report())
    return run_id


def _finished(stack, run_id: str) -> dict[str, str]:
    until = time.monotonic() + 600
    while time.monotonic() < until:
        run = next(r for r in stack.runs(APPROVAL_DAG_ID) if r["dag_run_id"] == run_id)
        if run["state"] in ("success", "failed"):
            break
        time.sleep(2)
    assert run["state"] == "success", stack.failure_report()
    return {t["task_id"]: t["state"] for t in stack.task_instances(APPROVAL_DAG_ID, run_id)}


def _answer_in_the_ui(page, stack, run_id: str, option: str, comment: str, shot: str) -> str:
    """Open the task's Required Actions panel, check the question, comment, click `option`. Returns the text
    the panel showed."""
    run = urllib.parse.quote(run_id, safe="")
    page.goto(
        f"{stack.cfg.airflow_url}/dags/{APPROVAL_DAG_ID}/runs/{run}/tasks/approve_challenger/required_actions"
    )
    page.get_by_text("Promote flights-approval", exact=False).first.wait_for()
    shown = page.locator("body").inner_text()
    page.locator("input[name=element_comment]").fill(comment)  # the approval's `comment` param
    page.screenshot(path=SHOTS / f"{shot}-asked.png", full_page=True)
    page.get_by_role("button", name=option, exact=True).click()
    time.sleep(2)
    page.screenshot(path=SHOTS / f"{shot}-answered.png", full_page=True)
    return shown


def test_approve_one_and_reject_one_in_the_airflow_ui(approvals, airflow_page):
    stack, s, h = approvals
    page = airflow_page(stack)
    champion = h.champion_at(s.name, DAYS[-3])
    assert champion is not None

    approve_day, reject_day = DAYS[-2], DAYS[-1]
    run_id = _waiting(stack, approve_day)
    shown = _answer_in_the_ui(page, stack, run_id, "Approve", "looks right in the UI", "approval-approve")
    assert "Offline gate" in shown and "MLflow version" in shown
    tis = _finished(stack, run_id)
    assert tis["promote_challenger"] == "success", tis
    approved = h.get_day(s.name, approve_day)
    new = approved["candidate_version"]
    assert approved["approval"]["approved"] and approved["approval"]["by"] == "admin"
    assert approved["approval"]["comment"] == "looks right in the UI"
    assert h.champion_at(s.name, approve_day) == new != champion
    [event] = [e for e in h.alias_events(s.name, "champion") if e["after_version"] == new]
    assert "approved by admin: looks right in the UI" in event["reason"]
    from ml.registry import client

    tags = client(s).get_model_version(s.registered_model, str(new)).tags
    assert (tags["driftwatch.approval"], tags["driftwatch.approval.by"]) == ("approved", "admin")
    assert tags["driftwatch.approval.comment"] == "looks right in the UI"

    run_id = _waiting(stack, reject_day)
    _answer_in_the_ui(page, stack, run_id, "Reject", "not convinced", "approval-reject")
    tis = _finished(stack, run_id)
    assert tis["promote_challenger"] == "skipped", tis
    rejected = h.get_day(s.name, reject_day)
    assert rejected["approval"] == {**rejected["approval"], "approved": False, "by": "admin"}
    assert (
        rejected["promotion"] == "rejected"
        and "not approved by admin: not convinced" in rejected["promotion_reason"]
    )
    assert h.champion_at(s.name, reject_day) == new  # unchanged
    tags = client(s).get_model_version(s.registered_model, str(rejected["candidate_version"])).tags
    assert (tags["driftwatch.approval"], tags["driftwatch.decision"]) == ("rejected", "rejected")
    assert "not convinced" in tags["driftwatch.reason"]
