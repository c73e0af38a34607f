"""Airflow-side pieces of driftwatch: every task's body, the alert notifier and the MLflow links.

Imported by the DAG file and the plugin only (everything else in `ml` runs without Airflow).

- `run_step`: the body of every task (the DAG is built from `ml.flow`): the day from the task's context,
  the outputs the step reads from XCom, its module's `run`, its output back to XCom; `on_task_failure`
  keeps a failed step's error in the day's row; `explain_retry` says what a killed previous try means.

- `DriftwatchNotifier`: Airflow's notifier mechanism (`on_success_callback` / `on_failure_callback`) for the
  three alerts: a quarantined batch, a promotion, a failed run. It delivers to the one configured target of
  `ml.alerts` (log file, webhook) or, for a `mailto:` target, through Airflow's `SmtpNotifier`.
- `MLflowRunLink` / `MLflowModelLink`: buttons on the train, evaluate and promote task instances. The task
  pushes XCom `mlflow` = {"run_id", "experiment_id", "model", "version"}; at the end of the task the worker
  turns it into the two URLs (Airflow 3 stores operator links in XCom), the API server shows them.
- `mlflow_task` / `mlflow_branch_task`: `@task` / `@task.branch` whose operator carries those links.
- the earlier runs `wait_for_earlier_days` waits for and the tasks `record` reports as failed: questions
  about this DAG's other runs and tasks, asked through the Task SDK (tasks have no metadata DB).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from typing import Any
from urllib.parse import quote

from airflow.providers.common.compat.sdk import task_decorator_factory
from airflow.providers.standard.decorators.branch_python import _BranchPythonDecoratedOperator
from airflow.providers.standard.decorators.python import _PythonDecoratedOperator
from airflow.sdk import BaseNotifier, BaseOperatorLink

log = logging.getLogger(__name__)

MLFLOW_XCOM_KEY = "mlflow"
OUTPUT_KEY = "output"  # a branch task's output (its return value is the task to follow)
UI_URL_ENV = "DRIFTWATCH_MLFLOW_UI_URL"


def mlflow_ui_url() -> str:
    """Where users open MLflow: DRIFTWATCH_MLFLOW_UI_URL, else an http(s) tracking URI, else the local default."""
    url = os.environ.get(UI_URL_ENV) or ""
    if not url:
        tracking = os.environ.get("MLFLOW_TRACKING_URI", "")
        url = tracking if tracking.startswith(("http://", "https://")) else "http://127.0.0.1:5050"
    return url.rstrip("/")


def mlflow_run_url(experiment_id: Any, run_id: Any) -> str:
    return f"{mlflow_ui_url()}/#/experiments/{quote(str(experiment_id))}/runs/{quote(str(run_id))}"


def mlflow_version_url(model: str, version: Any) -> str:
    return f"{mlflow_ui_url()}/#/models/{quote(model, safe='')}/versions/{quote(str(version))}"


def airflow_ui_url() -> str:
    """Where users open Airflow: [api] base_url when set, else the local API server's address."""
    base = os.environ.get("AIRFLOW__API__BASE_URL") or (
        f"http://127.0.0.1:{os.environ.get('AIRFLOW__API__PORT', '8080')}"
    )
    return base.rstrip("/")


def dag_run_url(dag_id: str, run_id: str) -> str:
    return f"{airflow_ui_url()}/dags/{quote(dag_id)}/runs/{quote(run_id, safe='')}"


def push_mlflow(context: Any, info: dict[str, Any] | None) -> None:
    """Record the MLflow run and model version this task worked on (read by the links at task end)."""
    if info:
        context["ti"].xcom_push(
            key=MLFLOW_XCOM_KEY,
            value={k: info.get(k) for k in ("run_id", "experiment_id", "model", "version")},
        )


def _mlflow_info(ti_key: Any) -> dict[str, Any]:
    from airflow.sdk.execution_time.xcom import XCom

    try:
        value = XCom.get_value(ti_key=ti_key, key=MLFLOW_XCOM_KEY)
    except Exception:  # noqa: BLE001 - no XCom (task skipped or failed before logging): no link
        return {}
    return value if isinstance(value, dict) else {}


class MLflowRunLink(BaseOperatorLink):
    """The MLflow run of the challenger (its params, metrics, drift trigger report and evaluation)."""

    name = "MLflow run"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        info = _mlflow_info(ti_key)
        if not (info.get("run_id") and info.get("experiment_id")):
            return ""
        return mlflow_run_url(info["experiment_id"], info["run_id"])


class MLflowModelLink(BaseOperatorLink):
    """The registered model version (its description and `driftwatch.*` tags carry the decision evidence)."""

    name = "MLflow model version"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        info = _mlflow_info(ti_key)
        if not (info.get("model") and info.get("version")):
            return ""
        return mlflow_version_url(info["model"], info["version"])


LINKS = (MLflowRunLink(), MLflowModelLink())


class MLflowTaskOperator(_PythonDecoratedOperator):
    """`@task` with links to MLflow."""

    operator_extra_links = LINKS
    custom_operator_name = "@task"


class MLflowBranchOperator(_BranchPythonDecoratedOperator):
    """`@task.branch` with links to MLflow."""

    operator_extra_links = LINKS
    custom_operator_name = "@task.branch"


def mlflow_task(python_callable: Any = None, **kwargs: Any) -> Any:
    return task_decorator_factory(
        python_callable=python_callable, decorated_operator_class=MLflowTaskOperator, **kwargs
    )


def mlflow_branch_task(python_callable: Any = None, **kwargs: Any) -> Any:
    return task_decorator_factory(
        python_callable=python_callable, decorated_operator_class=MLflowBranchOperator, **kwargs
    )


# ---------------------------------------------------------------------------------------------- runs in order


def _value(x: Any) -> str:
    """An Airflow state or run type (a str enum, or already its value) as its plain value."""
    return str(getattr(x, "value", x))


def _day(context: Any, dataset: str) -> Any:
    """The `ml.day.Day` of this task's run: the dataset, the logical date, the run id, the run's params."""
    from ml.day import Day, RunParams

    logical = context.get("logical_date")
    if logical is None:
        raise ValueError(
            "this run has no logical date: trigger it with one (the date selects the batch to process)"
        )
    run_id = str(context["run_id"])
    dag = context.get("dag")
    return Day.of(
        dataset,
        dt.date(logical.year, logical.month, logical.day),
        run_id,
        run_url=dag_run_url(dag.dag_id, run_id) if dag is not None else None,
        params=RunParams.from_airflow(context.get("params") or {}),
    )


def _earlier_runs(context: Any) -> list[Any]:
    """This DAG's runs of earlier logical dates that are running or queued (the latest of each state: one is
    enough to wait for), asked through the Task SDK."""
    from ml.tasks.wait_for_earlier_days import OtherRun

    ti = context["ti"]
    found = [ti.get_previous_dagrun(state="running"), ti.get_previous_dagrun(state="queued")]
    return [
        OtherRun(r.run_id, r.logical_date.date(), _value(r.state), _value(r.run_type))
        for r in found
        if r is not None and r.logical_date is not None
    ]


def run_step(step_id: str, dataset: str) -> Any:
    """The body of every task of the DAG: build the day, give the step the outputs it reads (XCom), run its
    module, hand its output on. A branch returns the step to follow (its output goes to XCom key "output"),
    a sensor True when the day may go on, a task its output."""
    from airflow.exceptions import AirflowFailException
    from airflow.sdk import get_current_context

    from ml import flow
    from ml.tasks.wait_for_earlier_days import DaysOutOfOrderError

    context = get_current_context()
    step, ti = flow.BY_ID[step_id], context["ti"]
    day = _day(context, dataset)
    module = step.module
    if step_id == "wait_for_earlier_days":
        try:
            return module.run(
                day, earlier=_earlier_runs(context), run_type=_value(context["dag_run"].run_type)
            )
        except DaysOutOfOrderError as exc:  # waiting cannot help: fail now, without retries
            raise AirflowFailException(str(exc)) from None
    if step_id == "record":
        return module.run(day, failed_tasks=unfinished_tasks(context))
    inputs = {
        arg: ti.xcom_pull(task_ids=up, key=OUTPUT_KEY if flow.BY_ID[up].kind == "branch" else "return_value")
        for arg, up in step.reads.items()
    }
    from ml.exceptions import StepSkipped

    try:
        out = module.run(day, **inputs)
    except StepSkipped as exc:  # nothing to do: the task is skipped, not failed
        from airflow.exceptions import AirflowSkipException

        raise AirflowSkipException(str(exc)) from None
    if step.links:
        push_mlflow(context, out)
    if step.kind == "branch":
        ti.xcom_push(key=OUTPUT_KEY, value=out)
        return out["next"]
    return out


def on_task_failure(context: Any) -> None:
    """Every task's failure callback: keep the failing step's error in the day's history row (the run's
    failure alert is the DAG's notifier)."""
    from ml.tasks import record

    ti = context["ti"]
    if context.get("logical_date") is None:
        return
    day = _day(context, str((context.get("params") or {}).get("dataset")))
    error = context.get("exception")
    message = f"{type(error).__name__}: {error}" if error else "task failed"
    if ti.task_id == "wait_for_batch":
        message = f"no batch at {day.settings.partition_dir(day.date)} before the wait timed out ({message})"
    record.on_failure(day, ti.task_id, message)


def explain_retry(context: Any) -> None:
    """`pre_execute` of every task: on a retry, say what the previous try's end may mean. Airflow reports a
    SIGKILLed try only as "Process terminated by signal. Likely out of memory error (OOM)"."""
    ti = context["ti"]
    if (ti.try_number or 1) <= 1:
        return
    log.warning(
        "%s try %s: the previous try failed or was killed. If its log ends with 'Process terminated by signal' "
        "(SIGKILL), the kernel's out-of-memory killer, an operator's kill -9 or a lost worker stopped it half-way. "
        "Every driftwatch step is safe to retry after that: a lock the killed try held is taken over at once, a "
        "model version it registered is adopted, a promotion it committed is completed, and the lines below "
        "say which of these happened (README: 'What protects the champion').",
        ti.task_id,
        ti.try_number,
    )


def unfinished_tasks(context: Any) -> dict[str, str]:
    """{task id: state} of this run's other tasks that did not succeed or skip (as the metadata DB has them
    now: a task whose retry, or a clear and re-run, succeeded is not among them)."""
    ti = context["ti"]
    states = ti.get_task_states(dag_id=ti.dag_id, run_ids=[ti.run_id]).get(ti.run_id, {})
    return {
        task: _value(state)
        for task, state in states.items()
        if task != ti.task_id and _value(state) not in ("success", "skipped")
    }


# ---------------------------------------------------------------------------------------------- alerts


def _logical_day(context: Any) -> dt.date | None:
    logical = context.get("logical_date")
    if logical is None and context.get("dag_run") is not None:
        logical = getattr(context["dag_run"], "logical_date", None)
    return dt.date(logical.year, logical.month, logical.day) if logical is not None else None


def _run_id(context: Any) -> str | None:
    run_id = context.get("run_id")
    if run_id is None and context.get("dag_run") is not None:
        run_id = getattr(context["dag_run"], "run_id", None)
    return str(run_id) if run_id is not None else None


class DriftwatchNotifier(BaseNotifier):
    """Send a driftwatch alert from an Airflow callback.

    kind "quarantine" / "promotion" / "monitor" / "novelty": use as `on_success_callback` of
    quarantine_batch / promote_challenger / monitor_model / validate_batch; the alert is built from the task's
    output (`ml.alerts.step_alert`: a monitor alerts only on a violation of a check whose action is alert or
    retrain, a validation only on novelty). kind "failure": use as the DAG's `on_failure_callback`
    (one alert per failed run; the failing step's error is read from the day's history row).
    """

    template_fields = ()

    def __init__(self, kind: str, dataset: str) -> None:
        super().__init__()
        self.kind = kind
        self.dataset = dataset

    def build(self, context: Any) -> dict[str, Any] | None:
        from ml import alerts, flow
        from ml.day import settings_for
        from ml.history import History

        s = settings_for(self.dataset)
        day = _logical_day(context)
        run_id = _run_id(context)
        if day is None and self.kind != "failure":
            raise ValueError(
                f"no logical date in the callback's context: the {self.kind} alert cannot be built"
            )
        if self.kind != "failure":
            ti = context["ti"]
            branch = ti.task_id in flow.BY_ID and flow.BY_ID[ti.task_id].kind == "branch"
            key = OUTPUT_KEY if branch else "return_value"
            result = ti.xcom_pull(task_ids=ti.task_id, key=key) or {}
            assert day is not None
            return alerts.step_alert(s, self.kind, day, result, run_id)
        failed: list[str] = []
        if day is not None:
            row = History(s.history_url).get_day(s.name, day) or {}
            if row.get("error"):
                failed.append(str(row["error"])[:500])
        reason = context.get("reason")
        if not failed and reason:
            failed.append(str(reason))
        dag = context.get("dag")
        url = dag_run_url(dag.dag_id if dag is not None else s.dag_id, run_id) if run_id else None
        return alerts.failure_alert(s, day, failed, run_id, url=url)

    def notify(self, context: Any) -> None:
        from ml import alerts
        from ml.day import settings_for

        try:
            s = settings_for(self.dataset)
            alert = self.build(context)
            if alert is None:  # nothing to report (a monitor without violations)
                return
            scheme, where = alerts.target(s)
            if scheme == "mailto":
                from airflow.providers.smtp.notifications.smtp import SmtpNotifier

                def by_mail(a: dict[str, Any]) -> str:
                    SmtpNotifier(
                        to=[x.strip() for x in where.split(",") if x.strip()],
                        subject=f"[driftwatch] {a['kind']}: {a['message'][:120]}",
                        html_content=f"<pre>{_escape(a)}</pre>",
                    ).notify(context)
                    log.warning("ALERT e-mailed to %s: %s", where, a["message"])
                    return f"mailto:{where}"

                alerts.send_once(s, alert, by_mail)
            else:
                alerts.send_once(s, alert)
        except Exception:  # noqa: BLE001 - an alert must never fail the task that raised it
            log.exception("driftwatch %s alert for %s not delivered", self.kind, self.dataset)


def late_batch_alert(dataset: str, context: dict[str, Any] | None = None) -> str:
    """The DAG's Deadline Alert callback (`wait.late_after_hours`; Airflow runs it in the executor when a
    run is not done by its deadline): a "late" alert when the day's batch is still not in the lake. A run
    that is only slow (its batch is there) and a backfill (history: the batch is there or never comes, and
    the run's sensor says so) alert nothing. Returns what it did, for the callback's log."""
    from ml import alerts
    from ml.data import as_date
    from ml.day import Day, settings_for
    from ml.tasks import wait_for_batch

    run = (context or {}).get("dag_run") or {}
    run_type, run_id = str(run.get("run_type") or ""), run.get("dag_run_id") or run.get("run_id")
    if not run.get("logical_date"):
        return "no logical date in the deadline's context: nothing to check"
    day = as_date(run["logical_date"])
    if run_type == "backfill":
        return f"{dataset} {day}: a backfill run: no late alert"
    s = settings_for(dataset)
    if wait_for_batch.run(Day.of(dataset, day, str(run_id or ""))):
        return f"{dataset} {day}: the batch is there; the run is only slow: no late alert"
    alert = alerts.event(
        s,
        "late",
        f"{s.name} {day}: the day's batch is not in {s.partition_dir(day)} "
        f"{s.wait.late_after_hours} hours after the day ended; run {run_id} is waiting for it",
        day=day.isoformat(),
        dag_run_id=run_id,
        deadline=((context or {}).get("deadline") or {}).get("deadline_time"),
    )
    return alerts.send_once(s, alert)


def _escape(alert: dict[str, Any]) -> str:
    import html
    import json

    return html.escape(json.dumps(alert, indent=2, default=str, sort_keys=True))
