"""Close the day's history row (runs whatever happened: trigger rule all_done), check that the MLflow aliases
mirror the audit log (repaired, with an error in the log and an alert, when they do not), and fail the run
when a step failed, naming it; the history row keeps what happened and why."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, TypedDict

from ml import promotion
from ml.day import Day
from ml.exceptions import ModelError

log = logging.getLogger(__name__)

CHALLENGER_STEPS = ("train_challenger", "evaluate_challenger", "promote_challenger")


class Output(TypedDict):
    status: str | None
    rows: int | None
    drift_share: float | None
    decision: str | None
    reason: str | None
    candidate_version: int | None
    promotion: str | None
    champion_after: int | None
    registry_repaired: list[dict[str, Any]]


def run(day: Day, failed_tasks: Mapping[str, str] | None = None) -> Output:
    """Args:
    failed_tasks: {task id: state} of this run's tasks that did not succeed, as the orchestrator knows
        them now (Airflow: after retries and clears). A step whose retry succeeded is not in it, so an error
        an earlier try left in the row is history, not a failure. None: the row's `error` decides.
    """
    s, d = day.settings, day.date
    row = day.history.get_day(s.name, d)
    problems = []
    if failed_tasks is not None:
        failed = [t for t, state in failed_tasks.items() if state == "failed"]
        for task in failed:
            error = (row or {}).get("error") or ""
            problems.append(error if error.startswith(f"{task} failed") else f"{task} failed (see its log)")
        if row is not None and row.get("error") and not failed:
            day.record(error=None)  # left by a try that a retry or a clear has since made good
            row["error"] = None
    elif row is not None and row.get("error"):
        problems.append(row["error"])
    if row is None:
        problems.append("no history row: the batch was never validated (see wait_for_batch)")
        raise ModelError(f"{day}: " + "; ".join(problems))
    if row["status"] == "invalid":
        problems.append("the batch failed validation but was not quarantined")
    if row["status"] == "accepted" and not row.get("decision"):
        problems.append("no retrain decision was recorded")
    if row.get("decision") in ("retrain", "bootstrap") and not row.get("promotion"):
        problems.append("a retrain was decided but no challenger was evaluated; the champion is unchanged")
    repaired = _repair_registry(day)
    day.record(dag_run_id=day.run_id or row.get("dag_run_id"))
    out: Output = {
        "status": row.get("status"),
        "rows": row.get("rows"),
        "drift_share": row.get("drift_share"),
        "decision": row.get("decision"),
        "reason": row.get("reason"),
        "candidate_version": row.get("candidate_version"),
        "promotion": row.get("promotion"),
        "champion_after": day.history.champion_at(s.name, d),
        "registry_repaired": repaired,
    }
    if problems:
        raise ModelError(f"{day}: " + "; ".join(problems))
    return out


def _repair_registry(day: Day) -> list[dict[str, Any]]:
    """Every run ends with the MLflow aliases naming what the audit log names: a promotion killed after its
    commit and never retried, or an alias moved by hand in MLflow, is put right here, loudly (error log +
    alert). The registry out of reach is a warning: the audit log stays the truth and status shows it."""
    from ml import alerts

    s = day.settings
    if day.history.latest_alias(s.name, promotion.CHAMPION) is None:
        return []
    try:
        drift = promotion.repair(s, day.history, holder=f"record:{day.run_id or day.date.isoformat()}")
    except Exception as exc:  # noqa: BLE001 - reported; the decisions of the day stand
        log.warning(
            "%s: could not compare the MLflow aliases with the audit log (%s: %s); `driftwatch status` shows "
            "the difference, `driftwatch repair` fixes it",
            day,
            type(exc).__name__,
            exc,
        )
        return []
    if drift:
        alerts.send_once(s, alerts.registry_alert(s, day.date, drift, day.run_id))
    return drift


def on_failure(day: Day, task_id: str, error: str) -> None:
    """A step failed for good (Airflow's failure callback, or the in-process runner): keep the error in the
    day's row (the run-level alert is the DAG's failure notifier). A promotion that an earlier try committed
    to the audit log stays a promotion: only its MLflow mirror is incomplete, and `run` completes it."""
    s, d = day.settings, day.date
    message = f"{task_id} failed: {error}"[:4000]
    fields: dict[str, Any] = {"error": message}
    version = day.row().get("candidate_version")
    committed = version is not None and any(
        e["logical_date"] == d.isoformat() and e["after_version"] == int(version)
        for e in day.history.alias_events(s.name, "champion")
    )
    if task_id.endswith(CHALLENGER_STEPS) and not committed:
        fields["promotion"] = "failed"
        fields["promotion_reason"] = f"{message}; champion unchanged"
    day.record(**fields)
    if fields.get("promotion") == "failed" and version is not None:
        _tag_failed(day, int(version), message)


def _tag_failed(day: Day, version: int, message: str) -> None:
    """A registered challenger whose evaluation or promotion failed says so in the registry too (best effort:
    MLflow itself may be what failed; the history row already has the error)."""
    from ml import registry

    try:
        registry.mark_failed(day.settings, version, day.date, message)
    except Exception as exc:  # noqa: BLE001 - reported, not raised: the failure is already recorded
        log.error("%s: could not tag version %s as failed: %s", day.settings.name, version, exc)
