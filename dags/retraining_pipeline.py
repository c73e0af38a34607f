"""Drift-triggered retraining, one DAG per dataset YAML (flights -> `retraining_pipeline`).

The tasks, their order, branches and what each reads are declared once in ml/flow.py; this file turns that
declaration into Airflow tasks. Each task's work is the module named like it (`detect_drift` ->
ml/tasks/detect_drift.py), imported lazily when the task runs; its docstring is the task's doc in the UI.
Nothing heavy is imported and nothing is read at parse time except the small dataset YAML files that say
which DAGs exist (the dynamic-DAG pattern) and the task modules' docstrings.
"""

from __future__ import annotations

import datetime as dt

import pendulum
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import (
    DeadlineAlert,
    DeadlineReference,
    Param,
    SyncCallback,
    TriggerRule,
    dag,
    get_parsing_context,
    task,
)

from ml import flow
from ml.airflow_ext import (
    DriftwatchNotifier,
    explain_retry,
    mlflow_branch_task,
    mlflow_task,
    on_task_failure,
    run_step,
)
from ml.catalog import DagSpec, dag_specs

DAG_DOC = """
### Drift-triggered retraining: `{dataset}`

{description}

One run per **logical date** (the date picks the batch, never "now"). Retrain when the drift share is
>= {drift_share} or the AUC drop >= {quality_drop} (or a monitor set to `retrain` is violated), outside a
{cooldown}-day cooldown and with >= {min_days} new labelled days (>= {min_rows} rows); labels arrive {delay}. Each task's work
is the module of the same name in `ml/tasks/` (the flow is declared in `ml/flow.py`):

| task | what it does |
|---|---|
{table}

Before the first champion exists the runs collect the original window; the first champion is trained on
its last day. Params below apply to a manual run only.
"""


def _table(approval: bool) -> str:
    return "\n".join(f"| `{s.id}` | {flow.summary(s)} |" for s in flow.steps(approval))


def _operator(step: flow.Step, spec: DagSpec):
    """The Airflow task of one step of the flow."""
    doc = f"{flow.doc(step)}\n\nCode: `ml/tasks/{step.id}.py`" if step.kind != "empty" else step.doc
    if step.kind == "empty":  # marked done by the scheduler itself: no task process
        return EmptyOperator(task_id=step.id, doc_md=doc)
    if step.kind == "approval":  # promotion.approval: manual: Airflow's human-in-the-loop ApprovalOperator
        from ml.airflow_approval import DriftwatchApproval

        assert spec.approval_timeout_s is not None
        return DriftwatchApproval(
            task_id=step.id, doc_md=doc, dataset=spec.dataset, timeout_s=spec.approval_timeout_s
        )
    kwargs: dict = {"task_id": step.id, "doc_md": doc}
    if step.priority != 1:
        kwargs["priority_weight"] = step.priority
    if step.alert:
        kwargs["on_success_callback"] = DriftwatchNotifier(step.alert, spec.dataset)
    if step.all_done:
        kwargs.update(trigger_rule=TriggerRule.ALL_DONE, retries=0)
    if step.kind == "sensor":
        timeout = spec.earlier_days_timeout_s if step.id == "wait_for_earlier_days" else spec.wait_timeout_s
        decorator = task.sensor(poke_interval=spec.poke_s, timeout=timeout, mode="reschedule", **kwargs)
    elif step.kind == "branch":
        decorator = mlflow_branch_task(**kwargs) if step.links else task.branch(**kwargs)
    else:
        decorator = mlflow_task(**kwargs) if step.links else task(**kwargs)

    def work():
        return run_step(step.id, spec.dataset)

    return decorator(work)()


def _deadline(spec: DagSpec) -> DeadlineAlert | None:
    """`wait.late_after_hours` after the logical day ends: a run still going then alerts "late" when the
    day's batch has not arrived (`ml.airflow_ext.late_batch_alert`, run by the executor)."""
    if spec.late_after_s is None:
        return None
    return DeadlineAlert(
        reference=DeadlineReference.DAGRUN_LOGICAL_DATE,
        interval=dt.timedelta(days=1, seconds=spec.late_after_s),
        callback=SyncCallback("ml.airflow_ext.late_batch_alert", kwargs={"dataset": spec.dataset}),
        name="batch late",
    )


def build(spec: DagSpec):
    t = spec.thresholds

    @dag(
        dag_id=spec.dag_id,
        schedule="@daily",
        start_date=pendulum.datetime(
            spec.start_date.year, spec.start_date.month, spec.start_date.day, tz="UTC"
        ),
        catchup=False,
        max_active_runs=1,  # champion history is sequential: day D serves the champion of day D-1
        tags=["driftwatch", spec.dataset],
        on_failure_callback=DriftwatchNotifier("failure", spec.dataset),
        deadline=_deadline(spec),
        doc_md=DAG_DOC.format(
            dataset=spec.dataset,
            description=spec.description,
            drift_share=t["drift_share"],
            quality_drop=t["quality_drop"],
            cooldown=t["cooldown_days"],
            min_rows=t["min_new_rows"],
            min_days=t["min_new_days"],
            delay=f"{spec.label_delay_days} days after the batch"
            if spec.label_delay_days
            else "with the batch",
            table=_table(spec.approval_timeout_s is not None),
        ),
        default_args={
            "retries": spec.retries,
            "retry_delay": dt.timedelta(seconds=spec.retry_delay_s),
            "on_failure_callback": on_task_failure,
            "pre_execute": explain_retry,
        },
        params={
            "dataset": Param(
                spec.dataset,
                type="string",
                const=spec.dataset,
                description="The dataset this DAG runs (fixed).",
            ),
            "force_retrain": Param(
                False, type="boolean", description="Train a challenger whatever the drift."
            ),
            "dry_run": Param(False, type="boolean", description="Train and evaluate, never promote."),
            "drift_share": Param(
                None,
                type=["null", "number"],
                minimum=0.0,
                maximum=1.0,
                description="Override the drift-share threshold for this run.",
            ),
            "quality_drop": Param(
                None,
                type=["null", "number"],
                minimum=0.0,
                maximum=1.0,
                description="Override the AUC-drop threshold for this run.",
            ),
            "min_delta": Param(
                None,
                type=["null", "number"],
                minimum=-1.0,
                maximum=1.0,
                description="Override the minimum AUC gain (lower CI bound) to promote.",
            ),
            "approval": Param(
                None,
                type=["null", "string"],
                enum=[None, "auto", "manual"],
                description="promotion.approval: manual only: auto approves this run's promotion without "
                "asking, manual asks even in a backfill (backfills are approved automatically otherwise).",
            ),
            "model_params": Param(
                {}, type="object", description="Override model hyper-parameters for this run's challenger."
            ),
        },
        render_template_as_native_obj=True,
    )
    def pipeline():
        steps = flow.steps(approval=spec.approval_timeout_s is not None)
        tasks = {step.id: _operator(step, spec) for step in steps}
        for step in steps:
            for up in step.after:
                tasks[up] >> tasks[step.id]

    return pipeline()


# A task process parses this file to run one task of one DAG: Airflow's parsing context names that DAG, and
# building the others (every dataset's) would only delay the task (~0.07 s a DAG). The scheduler and the DAG
# processor get no context and build them all.
_only = get_parsing_context().dag_id
for _spec in dag_specs():
    if _only is None or _spec.dag_id == _only:
        globals()[_spec.dag_id] = build(_spec)
