"""The DAG's Deadline Alert under the real scheduler: a run whose batch never arrives is still waiting at its
deadline (`wait.late_after_hours`), Airflow calls ml.airflow_ext.late_batch_alert in the executor, and one
"late" alert names the folder; the run's sensor then times out (its own failure alert). The callback's
decisions (a slow run with its batch, a backfill): tests/unit/test_alerts.py."""

from __future__ import annotations

import datetime as dt
import json
import time

import pytest
from stack_fixtures import NOBATCH_DAG_ID, NOBATCH_NAME, use_stack_env

pytestmark = pytest.mark.integration

DAY = dt.date(2013, 1, 3)


def test_a_batch_that_never_arrives_alerts_late_at_the_deadline(yaml_datasets):
    stack, folder = yaml_datasets
    mp = use_stack_env(stack, folder)
    try:
        from ml.config import load_settings

        s = load_settings(NOBATCH_NAME)
        assert s.wait.late_after_hours == 2 and not s.partition_dir(DAY).exists()
        stack.wait_for_dag(NOBATCH_DAG_ID, timeout=180)
        state = stack.trigger(NOBATCH_DAG_ID, DAY, timeout=400)
        assert state == "failed", stack.failure_report()  # wait_for_batch timed out: no batch, ever
        late: list[dict] = []
        until = time.monotonic() + 60  # the callback's executor slot may come after the run's end
        while time.monotonic() < until and not late:
            if s.paths.alerts.exists():
                lines = [json.loads(x) for x in s.paths.alerts.read_text().splitlines()]
                late = [a for a in lines if a["kind"] == "late" and a["dataset"] == NOBATCH_NAME]
            time.sleep(2)
        assert len(late) == 1, stack.failure_report()
        assert late[0]["day"] == DAY.isoformat() and str(s.partition_dir(DAY)) in late[0]["message"]
        assert late[0]["dag_run_id"].startswith("manual__")
    finally:
        mp.undo()
