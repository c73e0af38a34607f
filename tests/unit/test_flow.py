"""The flow declared once (ml/flow.py): consistent, one module per task named like it, and run in process
(ml/runner.py) with the semantics Airflow gives it (branches skip, failures propagate, record runs always)."""

from __future__ import annotations

import ast

import pytest

from ml import flow
from ml.config import REPO_ROOT
from ml.runner import _state_before

TASKS = REPO_ROOT / "ml" / "tasks"


def test_the_declaration_is_consistent():
    flow.check()
    assert len(flow.BY_ID) == len(flow.steps(approval=True)) == len(flow.STEPS) + 1
    assert flow.STEPS[-1].id == "record" and flow.STEPS[-1].all_done


def test_manual_approval_puts_approve_challenger_between_the_gate_and_the_promotion():
    with_approval = {s.id: s for s in flow.steps(approval=True)}
    assert with_approval["approve_challenger"].after == ("evaluate_challenger",)
    assert with_approval["approve_challenger"].kind == "approval"
    assert with_approval["promote_challenger"].after == ("approve_challenger",)
    assert flow.BY_ID["promote_challenger"].after == ("evaluate_challenger",)  # without: unchanged
    assert "approve_challenger" not in {s.id for s in flow.steps()}


def test_every_task_module_is_a_step_and_every_step_has_its_module():
    modules = {p.stem for p in TASKS.glob("*.py") if p.stem != "__init__"}
    working = {s.id for s in flow.steps(approval=True) if s.kind != "empty"}
    assert modules == working


@pytest.mark.parametrize(
    "step", [s for s in flow.steps(approval=True) if s.kind != "empty"], ids=lambda s: s.id
)
def test_each_task_module_documents_itself_and_runs_with_what_it_reads(step):
    tree = ast.parse((TASKS / f"{step.id}.py").read_text())
    assert ast.get_docstring(tree), f"ml/tasks/{step.id}.py has no docstring (the task's doc in Airflow)"
    (run,) = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "run"]
    args = [a.arg for a in run.args.args + run.args.kwonlyargs]
    assert args[0] == "day"
    assert set(step.reads) <= set(args), f"run() of {step.id} does not take {set(step.reads) - set(args)}"
    assert flow.summary(step) and flow.summary(step) in " ".join(flow.doc(step).split())


def test_a_branch_skips_what_it_did_not_choose_and_record_runs_whatever_happened():
    validate = {"wait_for_earlier_days": "success", "wait_for_batch": "success", "validate_batch": "success"}
    chose_score = {"validate_batch": {"score_batch"}}

    assert _state_before(flow.BY_ID["score_batch"], validate, chose_score) is None
    assert _state_before(flow.BY_ID["quarantine_batch"], validate, chose_score) == "skipped"
    skipped_downstream = {**validate, "quarantine_batch": "skipped", "score_batch": "skipped"}
    assert _state_before(flow.BY_ID["monitor_model"], skipped_downstream, chose_score) == "skipped"
    assert _state_before(flow.BY_ID["record"], skipped_downstream, chose_score) is None


def test_a_failure_fails_what_follows_but_not_record():
    states = {"score_batch": "success", "monitor_model": "failed", "detect_drift": "success"}

    assert _state_before(flow.BY_ID["decide"], states, {}) == "upstream_failed"
    states["decide"] = "upstream_failed"
    assert _state_before(flow.BY_ID["train_challenger"], states, {}) == "upstream_failed"
    assert _state_before(flow.BY_ID["record"], states, {}) is None


def test_no_copy_of_the_flow_elsewhere():
    """The order of the steps is written once: nothing else in ml/ calls one task module after another."""
    callers = []
    for path in (REPO_ROOT / "ml").rglob("*.py"):
        if path.parent == TASKS or path.name in ("flow.py", "runner.py"):
            continue
        text = path.read_text()
        called = [s.id for s in flow.STEPS if f"{s.id}.run(" in text]
        if len(called) > 1:
            callers.append((str(path.relative_to(REPO_ROOT)), called))
    assert callers == []


def test_modules_stay_small():
    sizes = {
        str(p.relative_to(REPO_ROOT)): len(p.read_text().splitlines())
        for folder in ("ml", "dags", "plugins", "devstack")
        for p in (REPO_ROOT / folder).rglob("*.py")
    }
    assert {path: n for path, n in sizes.items() if n > 520} == {}
