"""A person approves the promotion (`promotion.approval: manual`): the challenger passed the offline gate;
this task asks on Airflow's Required Actions page (the HITL ApprovalOperator) with the evidence — the gain
and its CI, the guardrails, links to the MLflow version and the day's drift report — and waits up to
`promotion.approval_timeout_hours`. Approve: `promote_challenger` runs. Reject, or no answer in time: the
challenger is rejected (tagged, the day's row says who and why) and the champion stays. Who answered and
their comment go in the day's row (`approval`), on the MLflow version and in the promotion's audit reason.
Backfills (and a run whose `approval` param is `auto`) are approved automatically; the row says so."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal, TypedDict

from ml import promotion, registry
from ml.day import Day
from ml.registry import TAG
from ml.tasks import evaluate_challenger, train_challenger

APPROVE, REJECT = "Approve", "Reject"  # Airflow's ApprovalOperator options


class Output(TypedDict):
    next: Literal["promote_challenger"] | list[str]  # approved: promote; rejected: nothing (it is skipped)
    approved: bool
    by: str  # the user who answered; "auto (...)" when nobody was asked; "timeout"
    comment: str
    version: int


def automatic(day: Day, run_type: str | None) -> str | None:
    """Why nobody is asked today (None: ask): the dataset's approval is auto, the run is a backfill, an
    in-process run (replay, run-day), or its `approval` param says auto."""
    if day.settings.promotion.approval != "manual":
        return "promotion.approval is auto"
    if day.params.approval == "auto":
        return "the run's approval param is auto"
    if day.params.approval == "manual":
        return None
    if run_type == "backfill":
        return "a backfill is approved automatically (approval param: manual to ask)"
    if run_type == "local":
        return "an in-process run (replay, run-day) has nobody to ask"
    return None


def run(day: Day, trained: train_challenger.Output, evaluated: evaluate_challenger.Output) -> Output:
    """In one process (replay, run-day): nobody to ask, approved automatically."""
    return answered(
        day, trained, evaluated, approved=True, by=f"auto ({automatic(day, 'local')})", comment=""
    )


def question(
    day: Day, trained: train_challenger.Output, evaluated: evaluate_challenger.Output
) -> tuple[str, str]:
    """(subject, body in markdown) of the approval request: the evidence of the offline gate."""
    from ml.airflow_ext import airflow_ui_url, mlflow_version_url

    s, version = day.settings, int(trained["version"])
    ev = evaluate_challenger.load(evaluated)
    champion = ev.get("champion_version")
    subject = f"Promote {s.registered_model} v{version} to champion (replacing v{champion}) on {day.date}?"
    lines = [f"**Offline gate**: {_text(ev['reason'])}", ""]
    ci = ev.get("bootstrap_ci") or {}
    if ci:
        lines.append(
            f"- gain {ci.get('delta', 0):+.4f}, {s.thresholds.confidence:.0%} CI "
            f"[{ci.get('low', 0):+.4f}, {ci.get('high', 0):+.4f}] on {ev.get('holdout_rows')} holdout rows"
        )
    for name, check in (ev.get("checks") or {}).items():
        where = f" (worst: {_text(check['segment'])})" if check.get("segment") else ""
        verdict = "pass" if check.get("passed") else "FAIL"
        lines.append(f"- {name}: {check['value']:.4f} {check['rule']} {check['threshold']}: {verdict}{where}")
    dag_id = s.dag_id
    lines += [
        "",
        f"- [MLflow version {version}]({mlflow_version_url(s.registered_model, version)})",
        f"- [Drift report of {day.date}]({airflow_ui_url()}/driftwatch/dags/{dag_id}/runs/{day.run_id}/drift)",
        "",
        f"No answer within {s.promotion.approval_timeout_hours:g} h rejects it. "
        "Say why in the comment: it goes on the MLflow version and in the audit.",
    ]
    return subject, "\n".join(lines)


def _text(value: object) -> str:
    """A value from the data (a segment's name: a carrier, a destination) as plain text in the markdown the
    Airflow UI renders: every markdown and HTML character escaped, on one line."""
    import re

    return re.sub(r"([\\`*_{}\[\]()<>#+\-.!|~&])", r"\\\1", " ".join(str(value).split()))


def answered(
    day: Day,
    trained: train_challenger.Output,
    evaluated: evaluate_challenger.Output,
    *,
    approved: bool,
    by: str,
    comment: str,
) -> Output:
    """Record the answer: the day's row, the version's tags; a rejection is carried out here (the champion
    stays; `promote_challenger` is skipped)."""
    s, version = day.settings, int(trained["version"])
    at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    answer = {"approved": approved, "by": by, "comment": comment, "at": at, "version": version}
    day.record(approval=answer)
    registry._set_tags(
        registry.client(s),
        s,
        version,
        {
            f"{TAG}approval": "approved" if approved else "rejected",
            f"{TAG}approval.by": by[:250],
            f"{TAG}approval.comment": comment[:5000],
            f"{TAG}approval.at": at,
        },
    )
    if not approved:
        ev = evaluate_challenger.load(evaluated)
        why = f"not approved by {by}" + (f": {comment}" if comment else "")
        ev = {**ev, "promote": False, "reason": f"{why} (offline gate: {ev['reason']})"}
        promotion.reject(s, version=version, day=day.date, evaluation=ev, champion=ev.get("champion_version"))
        day.record(promotion="rejected", promotion_reason=ev["reason"])
    return {
        "next": "promote_challenger" if approved else [],
        "approved": approved,
        "by": by,
        "comment": comment,
        "version": version,
    }


def answer_of(event: dict[str, Any]) -> tuple[bool, str, str]:
    """(approved, by, comment) of Airflow's HITL answer (`HITLTriggerEventSuccessPayload`)."""
    chosen = list(event.get("chosen_options") or [])
    user = event.get("responded_by_user") or {}
    name = user.get("name") or user.get("id") if isinstance(user, dict) else str(user or "")
    comment = str((event.get("params_input") or {}).get("comment") or "")
    if not name:
        name = "timeout"  # the scheduler's sweep answered with the default
    return chosen == [APPROVE], str(name), comment
