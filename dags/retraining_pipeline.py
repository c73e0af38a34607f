"""Drift-triggered retraining, one DAG per dataset YAML (flights -> `retraining_pipeline`).

The file only wires tasks: every task body is a lazy import of `ml.steps` and one call keyed by the run's
logical date. Nothing heavy is imported and nothing is read at parse time except the small dataset YAML
files that say which DAGs exist (the dynamic-DAG pattern).
"""

from __future__ import annotations

import datetime as dt

import pendulum
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import Param, TriggerRule, dag, get_current_context, task

from ml.airflow_ext import (
    DriftwatchNotifier,
    dag_run_url,
    explain_retry,
    mlflow_branch_task,
    mlflow_task,
    push_mlflow,
)
from ml.catalog import DagSpec, dag_specs

DAG_DOC = """
### Drift-triggered retraining: `{dataset}`

{description}

One run per **logical date** (the date picks the batch, never "now"):

| step | what it does |
|---|---|
| `wait_for_earlier_days` | waits while a run of an earlier date is unfinished (a backfill ahead of a manual run): days are processed in date order, each scored by the champion the day before left |
| `wait_for_batch` | waits for `<lake>/{dataset}/date=YYYY-MM-DD/*.parquet` (or a quarantined copy when re-run) |
| `validate_batch` | Great Expectations suite from the champion's training data + the YAML rules; branch |
| `quarantine_batch` | a failing batch is **moved** (never deleted) to the quarantine area with a reason file; alert; champion untouched |
| `score_batch` | champion scores stored beside the batch (`_predictions.parquet`, data capture) |
| `monitor_model` (beside `detect_drift`) | bias drift (segment disparities vs the reference), feature-attribution drift (nDCG < {min_ndcg}), AUC and accuracy estimated without labels (CBPE); labels arrive {delay} |
| `detect_drift` | Evidently drift vs the champion's training data; quality on the batch's labels; HTML report; both monitors log to the day's MLflow monitoring run |
| `decide` | after both monitors: retrain when drift share >= {drift_share} or AUC drop >= {quality_drop} (or a monitor set to `retrain` is violated), outside a {cooldown}-day cooldown and with >= {min_rows} new rows; `force_retrain` bypasses |
| `train_challenger` | original window + accepted days, the last holdout days excluded; logged and registered in MLflow |
| `evaluate_challenger` | champion and challenger on the **same** holdout rows; paired bootstrap CI of the AUC gain; log-loss guardrail |
| `promote_challenger` / `reject_challenger` | alias `champion` (and `previous`) moved under a lock and audited / version tagged with the reason |
| `record` | closes the day's history row; repairs (and alerts) if the MLflow aliases do not mirror the audit log; fails the run if a step failed |

Before the first champion exists the runs collect the original window; the first champion is trained on
its last day. Params below apply to a manual run only.
"""


def _day() -> dt.date:
    ctx = get_current_context()
    logical = ctx.get("logical_date")
    if logical is None:
        raise ValueError(
            "this run has no logical date: trigger it with one (the date selects the batch to process)"
        )
    return dt.date(logical.year, logical.month, logical.day)


def _run_id() -> str:
    return str(get_current_context()["run_id"])


def _on_failure(context) -> None:
    """Keep the failing step's error in the day's history row (the run's failure alert is the DAG's notifier)."""
    from ml import steps

    ti = context["ti"]
    logical = context.get("logical_date")
    if logical is None:
        return
    error = context.get("exception")
    message = f"{type(error).__name__}: {error}" if error else "task failed"
    if ti.task_id == "wait_for_batch":
        s = steps.settings_for(context["params"]["dataset"])
        message = f"no batch at {s.partition_dir(logical.date())} before the wait timed out ({message})"
    steps.record_failure(
        context["params"]["dataset"], logical.date(), ti.task_id, message, str(context["run_id"])
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
        doc_md=DAG_DOC.format(
            dataset=spec.dataset,
            description=spec.description,
            drift_share=t["drift_share"],
            quality_drop=t["quality_drop"],
            cooldown=t["cooldown_days"],
            min_rows=t["min_new_rows"],
            min_ndcg=spec.monitoring.get("attribution", {}).get("min_ndcg", 0.9),
            delay=f"{spec.label_delay_days} days after the batch"
            if spec.label_delay_days
            else "with the batch",
        ),
        default_args={
            "retries": spec.retries,
            "retry_delay": dt.timedelta(seconds=spec.retry_delay_s),
            "on_failure_callback": _on_failure,
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
            "model_params": Param(
                {}, type="object", description="Override model hyper-parameters for this run's challenger."
            ),
        },
        render_template_as_native_obj=True,
    )
    def pipeline():
        dataset = spec.dataset

        @task.sensor(
            task_id="wait_for_earlier_days",
            poke_interval=spec.poke_s,
            timeout=spec.earlier_days_timeout_s,
            mode="reschedule",
        )
        def wait_for_earlier_days() -> bool:
            """Wait while a run of an earlier date of this DAG is unfinished: a day is scored by the champion
            the day before left, so day D does no model work before the runs of earlier dates finish,
            whatever created them (backfill, manual trigger, schedule)."""
            from ml.airflow_ext import earlier_runs_unfinished

            return earlier_runs_unfinished(get_current_context())

        @task.sensor(
            task_id="wait_for_batch",
            poke_interval=spec.poke_s,
            timeout=spec.wait_timeout_s,
            mode="reschedule",
        )
        def wait_for_batch() -> bool:
            """Wait until the logical date's partition is in the lake."""
            from ml import steps

            return steps.batch_ready(dataset, _day())

        @task.branch(task_id="validate_batch")
        def validate_batch() -> str:
            """Validate the batch (Great Expectations); branch to quarantine or scoring."""
            from ml import steps

            result = steps.validate(dataset, _day(), _run_id())
            return "score_batch" if result["ok"] else "quarantine_batch"

        @task(task_id="quarantine_batch", on_success_callback=DriftwatchNotifier("quarantine", dataset))
        def quarantine_batch() -> dict:
            """Move the failed batch to quarantine with a reason file; alert. The champion is untouched."""
            from ml import steps

            return steps.quarantine(dataset, _day(), _run_id())

        @task(task_id="score_batch")
        def score_batch() -> dict:
            """Score the batch with the serving champion and store the scores beside it."""
            from ml import steps

            return steps.score(dataset, _day())

        @task(task_id="monitor_model", on_success_callback=DriftwatchNotifier("monitor", dataset))
        def monitor_model() -> dict:
            """Bias drift per segment, feature-attribution drift (nDCG), performance estimated without labels;
            realized quality of the day whose labels arrive today. Alerts on a violation when configured."""
            from ml import steps

            return steps.monitor(dataset, _day())

        @task(task_id="detect_drift")
        def detect_drift() -> dict:
            """Evidently drift report against the champion's training data; quality on the batch's labels."""
            from ml import steps

            return steps.detect(dataset, _day())

        @task.branch(task_id="decide")
        def decide() -> str:
            """Retrain or not, with the reason recorded in the history."""
            from ml import steps

            params = get_current_context()["params"]
            out = steps.decide(
                dataset,
                _day(),
                force=bool(params.get("force_retrain")),
                overrides={k: params.get(k) for k in ("drift_share", "quality_drop")},
            )
            return "train_challenger" if out["retrain"] else "skip_retrain"

        @mlflow_task(task_id="train_challenger")
        def train_challenger() -> dict:
            """Train a challenger on the original window + accepted new days; log and register it in MLflow."""
            from ml import steps

            ctx = get_current_context()
            run_id = _run_id()
            out = steps.train(
                dataset,
                _day(),
                dag_run_id=run_id,
                dag_run_url=dag_run_url(spec.dag_id, run_id),
                model_params=ctx["params"].get("model_params") or {},
            )
            push_mlflow(ctx, out)
            return out

        @mlflow_branch_task(task_id="evaluate_challenger")
        def evaluate_challenger(trained: dict) -> str:
            """Champion vs challenger on the same holdout rows; branch to promote or reject."""
            from ml import steps

            ctx = get_current_context()
            params = ctx["params"]
            out = steps.evaluate(
                dataset,
                _day(),
                trained["version"],
                dry_run=bool(params.get("dry_run")),
                min_delta=params.get("min_delta"),
            )
            push_mlflow(ctx, out)
            return "promote_challenger" if out["promote"] else "reject_challenger"

        @mlflow_task(
            task_id="promote_challenger", on_success_callback=DriftwatchNotifier("promotion", dataset)
        )
        def promote_challenger(trained: dict) -> dict:
            """Move alias `champion` to the challenger (old champion -> `previous`), audited, under a lock."""
            from ml import steps

            out = steps.promote(dataset, _day(), trained["version"], _run_id())
            push_mlflow(get_current_context(), out)
            return out

        @task(task_id="reject_challenger")
        def reject_challenger(trained: dict) -> dict:
            """Tag the challenger with the reason it lost; the champion stays."""
            from ml import steps

            return steps.reject(dataset, _day(), trained["version"])

        @task(task_id="record", trigger_rule=TriggerRule.ALL_DONE, retries=0)
        def record() -> dict:
            """Close the day's history row (runs whatever happened); fail the run if a step failed."""
            from ml import steps
            from ml.airflow_ext import unfinished_tasks

            return steps.record(
                dataset, _day(), _run_id(), failed_tasks=unfinished_tasks(get_current_context())
            )

        validated = validate_batch()
        [wait_for_earlier_days(), wait_for_batch()] >> validated
        quarantined, scored = quarantine_batch(), score_batch()
        validated >> [quarantined, scored]
        decided = decide()
        # the two monitors read the same scores and write different things: they run side by side
        scored >> [monitor_model(), detect_drift()] >> decided
        trained = train_challenger()
        # an EmptyOperator is marked done by the scheduler itself: no task process for the most common branch
        skip_retrain = EmptyOperator(
            task_id="skip_retrain",
            doc_md="No retrain today: the reason is in the history row and the `decide` log.",
        )
        decided >> [trained, skip_retrain]
        evaluated = evaluate_challenger(trained)
        promoted, rejected = promote_challenger(trained), reject_challenger(trained)
        evaluated >> [promoted, rejected]
        [quarantined, skip_retrain, promoted, rejected] >> record()

    return pipeline()


for _spec in dag_specs():
    globals()[_spec.dag_id] = build(_spec)
