"""The daily flow, declared once: its steps, their order and branches, and what each step reads.

The Airflow DAG (dags/retraining_pipeline.py) is built from this declaration, and so is the in-process runner
(`ml.runner`: `driftwatch run-day` and the replay), so the two cannot disagree. A step's id is its Airflow
task id and the module that does its work: `detect_drift` -> ml/tasks/detect_drift.py, whose `run(day, ...)`
gets the outputs of the steps named in `reads` (as keyword arguments named by `reads`' keys) and returns a
small typed dict that goes through XCom.

    wait_for_earlier_days ─┐
    wait_for_batch ────────┴─▶ validate_batch ──bad──▶ quarantine_batch ───────────────────────┐
                                     │ok                                                        │
                               score_batch ─┬─▶ monitor_model ──┐                               │
                                            ├─▶ detect_drift ───┼─▶ decide ──no──▶ skip_retrain ─┤
                                            └─▶ watch_champion ─┘     │yes                       │
                                                             train_challenger                   │
                                                                      │                          │
                                                           evaluate_challenger ──▶ promote_challenger ─┤
                                                                               └─▶ reject_challenger ──┤
                                                                                                  record
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import importlib
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Literal

Kind = Literal["task", "branch", "sensor", "empty", "approval"]


@dataclass(frozen=True)
class Step:
    """One step of the daily flow (one Airflow task).

    Attributes:
        id: the Airflow task id, and the module ml.tasks.<id> (none for an `empty` step).
        kind: `task`; `branch` (its output's `next` names the step to follow, the others are skipped);
            `sensor` (`run` returns True when the day may go on; Airflow pokes again while False);
            `empty` (no work: a branch's "nothing to do" target); `approval` (a branch a person answers in
            the Airflow UI: Airflow's HITL ApprovalOperator; in one process it answers itself).
        after: the steps it runs after.
        reads: {argument name: step id}: the outputs it is given.
        all_done: runs whatever happened upstream (otherwise only when every step before it succeeded).
        alert: the alert raised when it succeeds (`ml.alerts`; the DAG's notifier, the runner's call).
        links: the Airflow task gets the MLflow run / model version buttons (its output names them).
        doc: the task's documentation when it has no module (an empty step).
        priority: Airflow's priority_weight: of steps waiting for a free slot at once, the higher goes first.
    """

    id: str
    kind: Kind = "task"
    after: tuple[str, ...] = ()
    reads: dict[str, str] = field(default_factory=dict)
    all_done: bool = False
    alert: str | None = None
    links: bool = False
    doc: str = ""
    priority: int = 1

    @property
    def module(self) -> ModuleType:
        return importlib.import_module(f"ml.tasks.{self.id}")


STEPS: tuple[Step, ...] = (
    Step("wait_for_earlier_days", kind="sensor"),
    Step("wait_for_batch", kind="sensor"),
    Step("validate_batch", kind="branch", after=("wait_for_earlier_days", "wait_for_batch"), alert="novelty"),
    Step(
        "quarantine_batch",
        after=("validate_batch",),
        reads={"validated": "validate_batch"},
        alert="quarantine",
    ),
    Step("score_batch", after=("validate_batch",)),
    # the monitors and the watch read the same scores and write different things: they run side by side;
    # with fewer free slots than the three, the longest (monitor_model) starts first, the shortest last
    Step("monitor_model", after=("score_batch",), alert="monitor", priority=3),
    Step("detect_drift", after=("score_batch",), priority=2),
    # a champion promoted in the last `promotion.watch_days`: compared on live labels with the one it replaced
    Step("watch_champion", after=("score_batch",), alert="rollback"),
    Step(
        "decide",
        kind="branch",
        after=("monitor_model", "detect_drift", "watch_champion"),
        reads={
            "validated": "validate_batch",
            "drift": "detect_drift",
            "monitored": "monitor_model",
            "watched": "watch_champion",
        },
    ),
    Step(
        "skip_retrain",
        kind="empty",
        after=("decide",),
        doc="No retrain today: the reason is in the history row and the `decide` log.",
    ),
    Step("train_challenger", after=("decide",), reads={"decided": "decide"}, links=True),
    Step(
        "evaluate_challenger",
        kind="branch",
        after=("train_challenger",),
        reads={"trained": "train_challenger"},
        links=True,
    ),
    Step(
        "promote_challenger",
        after=("evaluate_challenger",),
        reads={"trained": "train_challenger", "evaluated": "evaluate_challenger"},
        alert="promotion",
        links=True,
    ),
    Step(
        "reject_challenger",
        after=("evaluate_challenger",),
        reads={"trained": "train_challenger", "evaluated": "evaluate_challenger"},
    ),
    Step(
        "record",
        after=("quarantine_batch", "skip_retrain", "promote_challenger", "reject_challenger"),
        all_done=True,
    ),
)

# `promotion.approval: manual`: a person approves the promotion in the Airflow UI (ml/tasks/approve_challenger.py)
APPROVAL = Step(
    "approve_challenger",
    kind="approval",
    after=("evaluate_challenger",),
    reads={"trained": "train_challenger", "evaluated": "evaluate_challenger"},
    links=True,
)


def steps(approval: bool = False) -> tuple[Step, ...]:
    """The flow's steps; `approval` (`promotion.approval: manual`): with `approve_challenger` between
    `evaluate_challenger` and `promote_challenger`."""
    if not approval:
        return STEPS
    out: list[Step] = []
    for step in STEPS:
        if step.id == "promote_challenger":
            out += [APPROVAL, dataclasses.replace(step, after=(APPROVAL.id,))]
        else:
            out.append(step)
    return tuple(out)


BY_ID = {s.id: s for s in (*STEPS, APPROVAL)}
# steps whose outputs only a retrain policy reads: a replay of a policy that reads no signal skips them
SIGNAL_STEPS = ("monitor_model", "detect_drift")


def doc(step: Step) -> str:
    """The step's documentation: its module's docstring (what the Airflow UI shows for the task), read from
    the source without importing the module (the DAG file asks at parse time: no pandas, no MLflow)."""
    if step.kind == "empty":
        return step.doc
    return _docstring(step.id)


@functools.cache
def _docstring(step_id: str) -> str:
    # once per process: every DAG of the file asks for every step's doc, twice (doc and summary)
    source = Path(__file__).resolve().parent / "tasks" / f"{step_id}.py"
    return (ast.get_docstring(ast.parse(source.read_text())) or "").strip()


def summary(step: Step) -> str:
    """The first sentence of the step's documentation, on one line."""
    text = " ".join(doc(step).split())
    end = text.find(". ")
    return text if end < 0 else text[: end + 1]


def check() -> None:
    """The declaration is consistent: every `after`/`reads` names an earlier step, every branch target
    follows its branch, every non-empty step has a module with `run`. Raises ValueError otherwise."""
    for approval in (False, True):
        _check(steps(approval))


def _check(declared: tuple[Step, ...]) -> None:
    seen: set[str] = set()
    for step in declared:
        for up in (*step.after, *step.reads.values()):
            if up not in seen:
                raise ValueError(
                    f"flow: step {step.id!r} reads or follows {up!r}, which is not an earlier step"
                )
        if step.kind != "empty" and not callable(getattr(step.module, "run", None)):
            raise ValueError(f"flow: ml/tasks/{step.id}.py has no run()")
        seen.add(step.id)
