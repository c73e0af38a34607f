"""`promotion.approval: manual` without services where possible: who is asked (`automatic`), how Airflow's
answer is read (`answer_of`), the DAG a manual-approval YAML gets (Airflow's ApprovalOperator between the gate
and the promotion, Reject on timeout, a comment field only), and config checks. The real scheduler, the REST
answer and the promotion or rejection that follows: tests/integration/test_approval.py."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json

import pytest

from ml.day import Day, RunParams
from ml.exceptions import ConfigError
from ml.tasks import approve_challenger as step
from tests.unit.test_dag import DAGS, MARKER, _run


def _day(settings, approval: str, param: str | None = None) -> Day:
    s = settings.with_overrides(promotion=dataclasses.replace(settings.promotion, approval=approval))
    return Day(s, None, dt.date(2013, 1, 5), "manual__2013-01-05", params=RunParams(approval=param))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("approval", "param", "run_type", "asked"),
    [
        ("auto", None, "manual", False),
        ("manual", None, "manual", True),
        ("manual", None, "scheduled", True),
        ("manual", None, "backfill", False),  # backfills are approved automatically ...
        ("manual", "manual", "backfill", True),  # ... unless the run's param says to ask
        ("manual", "auto", "manual", False),
        ("manual", None, "local", False),  # in one process: nobody to ask
    ],
)
def test_who_is_asked(settings, approval, param, run_type, asked):
    why = step.automatic(_day(settings, approval, param), run_type)
    assert (why is None) is asked
    if not asked:
        assert why  # the reason the history records


def test_the_answer_is_read_with_who_and_the_comment():
    ok = {
        "chosen_options": ["Approve"],
        "responded_by_user": {"id": "7", "name": "alice"},
        "params_input": {"comment": "fine"},
    }
    assert step.answer_of(ok) == (True, "alice", "fine")
    no = {"chosen_options": ["Reject"], "responded_by_user": {"id": "7", "name": ""}, "params_input": {}}
    assert step.answer_of(no) == (False, "7", "")
    timed_out = {"chosen_options": ["Reject"], "responded_by_user": None}
    assert step.answer_of(timed_out) == (False, "timeout", "")


def test_config_refuses_an_unknown_approval_and_a_zero_timeout(tmp_path):
    from ml.schema import read_promotion

    assert read_promotion({"promotion": {"approval": "manual"}}, "x.yaml").approval_timeout_hours == 24
    with pytest.raises(ConfigError, match="approval auto or manual"):
        read_promotion({"promotion": {"approval": "sometimes"}}, "x.yaml")
    with pytest.raises(ConfigError, match="approval_timeout_hours > 0"):
        read_promotion({"promotion": {"approval": "manual", "approval_timeout_hours": 0}}, "x.yaml")


def test_a_manual_approval_dag_asks_between_the_gate_and_the_promotion(tmp_path):
    code = f"""
        import json
        from airflow.dag_processing.dagbag import DagBag

        bag = DagBag(dag_folder={str(DAGS)!r})
        dag = bag.dags["retraining_pipeline"]
        t = dag.get_task("approve_challenger") if "approve_challenger" in dag.task_ids else None
        out = {{"errors": {{str(k): str(v) for k, v in bag.import_errors.items()}}, "tasks": sorted(dag.task_ids)}}
        if t is not None:
            out.update(kind=type(t).__mro__[1].__name__, options=t.options, defaults=t.defaults,
                       timeout_s=t.response_timeout.total_seconds(), params=sorted(t.params.keys()),
                       upstream=sorted(t.upstream_task_ids), downstream=sorted(t.downstream_task_ids),
                       promote_upstream=sorted(dag.get_task("promote_challenger").upstream_task_ids),
                       evaluate_downstream=sorted(dag.get_task("evaluate_challenger").downstream_task_ids))
        print({MARKER!r} + json.dumps(out))
    """
    off = json.loads(_run(code, tmp_path / "off"))
    assert off["errors"] == {} and "approve_challenger" not in off["tasks"]
    on = json.loads(
        _run(
            code,
            tmp_path / "on",
            DRIFTWATCH__PROMOTION__APPROVAL="manual",
            DRIFTWATCH__PROMOTION__APPROVAL_TIMEOUT_HOURS="2",
        )
    )
    assert on["errors"] == {}
    assert on["kind"] == "ApprovalOperator"
    assert (on["options"], on["defaults"]) == (["Approve", "Reject"], ["Reject"])  # no answer: Reject
    assert on["timeout_s"] == 2 * 3600
    assert on["params"] == ["comment"]  # the reviewer is asked for a comment, not the run's params
    assert on["upstream"] == ["evaluate_challenger"] and on["downstream"] == ["promote_challenger"]
    assert on["promote_upstream"] == ["approve_challenger"]
    assert on["evaluate_downstream"] == ["approve_challenger", "reject_challenger"]


def test_data_values_in_the_question_are_plain_text_in_markdown():
    import re

    hostile = "carrier=</script><img src=x onerror=alert(1)>\n[x](javascript:alert(1)) **b**"
    shown = step._text(hostile)
    assert "\n" not in shown
    # every markdown/HTML character is backslash-escaped: nothing opens a tag, a link or emphasis
    assert not re.search(r"(?<!\\)[<>\[\]()*]", shown), shown
    assert shown.replace("\\", "") == " ".join(hostile.split())  # and the text itself is kept
