"""The `approve_challenger` task in Airflow (`promotion.approval: manual`): Airflow's human-in-the-loop
ApprovalOperator (standard provider, Airflow 3.1+), asking with the evidence of ml/tasks/approve_challenger.py.

On Airflow 3.3 the task waits in the `awaiting_input` state (no triggerer needed); the answer is given on the
Required Actions page (or through the REST API). "Reject", or no answer within the timeout (the default
option), rejects the challenger; `promote_challenger` then skips itself. The DAG file imports this module only when a
dataset asks for approval.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from airflow.providers.standard.exceptions import HITLTimeoutError
from airflow.providers.standard.operators.hitl import ApprovalOperator, HITLOperator
from airflow.sdk import Param

from ml.airflow_ext import LINKS, OUTPUT_KEY, _day, _value, push_mlflow


class DriftwatchApproval(ApprovalOperator):
    """Approve or reject the challenger that passed the offline gate; the reviewer's comment is kept."""

    operator_extra_links = LINKS

    def __init__(self, *, dataset: str, timeout_s: float, **kwargs: Any) -> None:
        # the DAG's params (force_retrain...) are not questions for the reviewer: the form asks only for a
        # comment; the run's own values stay in its conf
        kwargs.pop("params", None)
        super().__init__(
            subject=f"Promote the {dataset} challenger?",
            defaults=ApprovalOperator.REJECT,  # what the timeout answers
            response_timeout=dt.timedelta(seconds=timeout_s),
            params={
                "comment": Param(
                    "", type="string", description="Why (kept on the MLflow version and in the audit)."
                )
            },
            **kwargs,
        )
        self.dataset = dataset

    def _inputs(self, context: Any) -> tuple[Any, Any, Any]:
        ti = context["ti"]
        trained = ti.xcom_pull(task_ids="train_challenger", key="return_value")
        evaluated = ti.xcom_pull(task_ids="evaluate_challenger", key=OUTPUT_KEY)
        return _day(context, self.dataset), trained, evaluated

    def execute(self, context: Any) -> Any:
        from ml.tasks import approve_challenger as step

        day, trained, evaluated = self._inputs(context)
        push_mlflow(context, {"model": day.settings.registered_model, "version": trained["version"]})
        why = step.automatic(day, _value(context["dag_run"].run_type))
        if why is not None:
            self.log.info("Not asked: %s. Approved automatically.", why)
            return step.answered(day, trained, evaluated, approved=True, by=f"auto ({why})", comment="")
        self.subject, self.body = step.question(day, trained, evaluated)
        return super().execute(context)

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        from ml.tasks import approve_challenger as step

        day, trained, evaluated = self._inputs(context)
        try:
            # the answer without ApprovalOperator's own skipping (its skip from a resumed task failed the task
            # on Airflow 3.3.2): promote_challenger skips itself when the day's approval says no
            answer = HITLOperator.execute_complete(self, context=context, event=event)
        except HITLTimeoutError:
            answer = {"chosen_options": [ApprovalOperator.REJECT], "responded_by_user": None}
        approved, by, comment = step.answer_of(dict(answer))
        self.log.info(
            "%s by %s%s", "Approved" if approved else "Rejected", by, f": {comment}" if comment else ""
        )
        step.answered(day, trained, evaluated, approved=approved, by=by, comment=comment)
        return answer
