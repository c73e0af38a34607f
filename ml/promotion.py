"""Promotion as a recoverable transaction: move the `champion` / `previous` aliases, roll back, repair.

One source of truth: the history database. A promotion happens when one transaction commits the audit
events and the day's row (`History.record_promotion`); the MLflow tags, description and aliases mirror it and
are completed by a retry, by the day's `record` task or by `driftwatch repair` after a crash in between. Every
alias move runs under the dataset's promotion lock (`History.lock`: a dead holder is taken over at once).
The crash points are in `ml.faults`; tests/unit/test_crash_points.py kills a real process at each one.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
from typing import TYPE_CHECKING, Any

from ml.config import Settings
from ml.history import History
from ml.registry import CHAMPION, PREVIOUS, SHADOW, TAG, _set_tags, client

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)


def evidence_tags(evaluation: dict[str, Any]) -> dict[str, Any]:
    ch = evaluation["challenger"]
    if evaluation.get("task", "binary") != "binary":
        return _task_tags(evaluation)
    tags: dict[str, Any] = {
        f"{TAG}decision": "promoted" if evaluation["promote"] else "rejected",
        f"{TAG}reason": evaluation["reason"][:5000],
        "holdout.roc_auc": ch["roc_auc"],
        "holdout.log_loss": ch["log_loss"],
        "holdout.accuracy": ch["accuracy"],
        "holdout.f1": ch["f1"],
        "holdout.rows": evaluation["holdout_rows"],
    }
    if evaluation.get("champion"):
        ci = evaluation["bootstrap_ci"]
        tags.update(
            {
                "champion.roc_auc": evaluation["champion"]["roc_auc"],
                "champion.log_loss": evaluation["champion"]["log_loss"],
                "gain.roc_auc": ci["delta"],
                "gain.ci_low": ci["low"],
                "gain.ci_high": ci["high"],
            }
        )
    segment = evaluation.get("checks", {}).get("worst_segment_auc_drop")
    if segment:
        tags["guardrail.worst_segment_drop"] = segment["value"]
        tags["guardrail.worst_segment"] = segment.get("segment")
    return tags


def _task_tags(evaluation: dict[str, Any]) -> dict[str, Any]:
    """The evidence of a multiclass or regression decision (ml/evaluate_tasks.py) as version tags."""
    metric = evaluation["metric"]
    tags: dict[str, Any] = {
        f"{TAG}decision": "promoted" if evaluation["promote"] else "rejected",
        f"{TAG}reason": evaluation["reason"][:5000],
        "holdout.rows": evaluation["holdout_rows"],
    }
    tags.update(
        {f"holdout.{k}": v for k, v in evaluation["challenger"].items() if isinstance(v, int | float)}
    )
    if evaluation.get("champion"):
        ci = evaluation["bootstrap_ci"]
        tags.update(
            {
                f"champion.{metric}": evaluation["champion"][metric],
                f"gain.{metric}": ci["delta"],
                "gain.ci_low": ci["low"],
                "gain.ci_high": ci["high"],
            }
        )
    segment = evaluation.get("checks", {}).get("worst_segment_drop")
    if segment:
        tags["guardrail.worst_segment_drop"] = segment["value"]
        tags["guardrail.worst_segment"] = segment.get("segment")
    return tags


def _description(settings: Settings, day: dt.date, evaluation: dict[str, Any], before: int | None) -> str:
    lines = [
        f"Decision on {day}: {evaluation['reason']}.",
        f"Holdout: {evaluation['holdout_rows']} rows, the same rows for champion and challenger.",
    ]
    for name, check in evaluation["checks"].items():
        where = f" (worst: {check['segment']})" if check.get("segment") else ""
        lines.append(
            f"- {name}: {check['value']:.5f} {check['rule']} {check['threshold']} -> "
            f"{'pass' if check['passed'] else 'FAIL'}{where}"
        )
    if evaluation["promote"]:
        lines.append(f"Replaced champion version {before}." if before else "First champion of the dataset.")
    return "\n".join(lines)


def promote(
    settings: Settings,
    history: History,
    *,
    version: int,
    day: dt.date,
    evaluation: dict[str, Any],
    dag_run_id: str | None,
) -> dict[str, Any]:
    """Make `version` the champion as of `day`, under the dataset's promotion lock. Crash-safe and retry-safe.

    One source of truth: the history database. The promotion happens when one transaction commits the
    `champion` and `previous` audit events and the day's row (`History.record_promotion`); the MLflow tags,
    description and aliases are then brought to mirror it. A process killed at any point leaves either
    nothing (before the commit: the retry promotes) or a committed promotion whose mirror is incomplete:
    the retry, a re-run, the day's `record` step or `driftwatch repair` finds the audit rows and completes
    the mirror. A killed holder's lock row is taken over at once (see `History.lock`).

    An old day re-run after later promotions records its event but leaves the aliases on the later champion.
    `before` is the champion in force just before this event in the audit timeline, including events of
    the same logical date (a manual and a scheduled run of one day, or a rollback stamped that day): the
    second promotion of a day replaces the first, so each event's `before` is the previous event's `after`.

    Returns: {"promoted", "champion", "previous", "recorded_before"}: `recorded_before` is True when an
    earlier try had already committed this promotion (nothing new happened, no new alert is due).
    """
    from ml import faults

    c = client(settings)
    holder = f"promote:{dag_run_id or 'manual'}:v{version}"
    with history.lock(f"promote:{settings.name}", holder):
        faults.point("promote.after_lock", settings.name)
        done = [
            e
            for e in history.alias_events(settings.name, CHAMPION)
            if e["logical_date"] == day.isoformat() and e["after_version"] == version
        ]
        if done:  # an earlier try committed it: complete the mirror, report what that promotion replaced
            before = done[0]["before_version"]
            log.info(
                "%s %s: the promotion of version %s was recorded by an earlier try or run (%s); completing "
                "the MLflow side",
                settings.name,
                day,
                version,
                done[0]["dag_run_id"],
            )
            # a re-run of the day started its row afresh: it says promoted again
            history.update_day(
                settings.name,
                day,
                promotion="promoted",
                promotion_reason=evaluation["reason"],
                candidate_version=version,
            )
        else:
            before = history.champion_at(settings.name, day)
            if before == version:
                return {
                    "promoted": False,
                    "champion": version,
                    "previous": None,
                    "note": "already champion",
                    "recorded_before": True,
                }
            history.record_promotion(
                dataset=settings.name,
                model=settings.registered_model,
                day=day,
                version=version,
                before=before,
                reason=evaluation["reason"],
                dag_run_id=dag_run_id,
            )
            faults.point("promote.after_audit", settings.name)
        _set_tags(
            c,
            settings,
            version,
            {
                **evidence_tags(evaluation),
                f"{TAG}promoted_on": day.isoformat(),
                f"{TAG}replaced_version": before,
            },
        )
        c.update_model_version(
            settings.registered_model,
            str(version),
            description=_description(settings, day, evaluation, before),
        )
        faults.point("promote.after_tags", settings.name)
        sync_aliases(settings, history, c)
    return {"promoted": True, "champion": version, "previous": before, "recorded_before": bool(done)}


def _alias_version(c: MlflowClient, settings: Settings, alias: str) -> int | None:
    from mlflow.exceptions import MlflowException

    try:
        return int(c.get_model_version_by_alias(settings.registered_model, alias).version)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            return None  # no model yet, or no such alias
        raise


def alias_drift(settings: Settings, history: History, c: MlflowClient | None = None) -> list[dict[str, Any]]:
    """Where the MLflow aliases differ from the audit log's latest events (nothing is changed):
    [{"alias", "audit", "mlflow", "since", "reason"}]. Empty when the registry mirrors the audit log."""
    c = c or client(settings)
    out = []
    for alias in (CHAMPION, PREVIOUS, SHADOW):
        last = history.latest_alias(settings.name, alias)
        if last is None or (last["after_version"] is None and alias != SHADOW):
            continue
        current = _alias_version(c, settings, alias)
        wanted = None if last["after_version"] is None else int(last["after_version"])
        if current != wanted:
            out.append(
                {
                    "alias": alias,
                    "audit": wanted,
                    "mlflow": current,
                    "since": last["logical_date"],
                    "reason": last["reason"],
                }
            )
    return out


def sync_aliases(
    settings: Settings, history: History, c: MlflowClient | None = None
) -> dict[str, int | None]:
    """Point the MLflow aliases at the latest entries of the audit log (idempotent); `champion` first."""
    from ml import faults

    c = c or client(settings)
    latest: dict[str, int | None] = {}
    for alias in (CHAMPION, PREVIOUS, SHADOW):
        last = history.latest_alias(settings.name, alias)
        if last is None:
            continue
        latest[alias] = last["after_version"]
        if last["after_version"] is None:
            if alias == SHADOW and _alias_version(c, settings, alias) is not None:
                c.delete_registered_model_alias(settings.registered_model, alias)  # the shadow test ended
            continue
        if _alias_version(c, settings, alias) != int(last["after_version"]):
            c.set_registered_model_alias(settings.registered_model, alias, str(last["after_version"]))
            c.set_registered_model_tag(
                settings.registered_model,
                f"{TAG}audit.{alias}",
                json.dumps(
                    {
                        "version": last["after_version"],
                        "before": last["before_version"],
                        "logical_date": last["logical_date"],
                        "reason": (last["reason"] or "")[:200],
                        "dag_run_id": last["dag_run_id"],
                        "actor": last["actor"],
                        "at": last["at"],
                    }
                ),
            )
            if alias == CHAMPION:
                faults.point("promote.after_champion_alias", settings.name)
    return latest


def _complete_promotion_tags(settings: Settings, history: History, c: MlflowClient) -> None:
    """The evidence tags and description of the audit log's champion, when a promotion was interrupted before
    it set them (read back from the evaluation kept in the day's row)."""
    last = history.latest_alias(settings.name, CHAMPION)
    if last is None or last["after_version"] is None or (last["reason"] or "").startswith("rollback:"):
        return
    version = int(last["after_version"])
    if c.get_model_version(settings.registered_model, str(version)).tags.get(f"{TAG}promoted_on"):
        return
    day = dt.date.fromisoformat(last["logical_date"])
    evaluation = (history.get_day(settings.name, day) or {}).get("evaluation")
    if not isinstance(evaluation, dict) or evaluation.get("challenger_version") != version:
        return
    before = last["before_version"]
    _set_tags(
        c,
        settings,
        version,
        {**evidence_tags(evaluation), f"{TAG}promoted_on": day.isoformat(), f"{TAG}replaced_version": before},
    )
    c.update_model_version(
        settings.registered_model, str(version), description=_description(settings, day, evaluation, before)
    )


def repair(settings: Settings, history: History, *, holder: str = "repair") -> list[dict[str, Any]]:
    """Make the MLflow aliases name what the audit log names, under the promotion lock (so an in-flight
    promotion is not mistaken for drift). Returns the drift it repaired (empty: nothing was wrong); each
    repair is logged as an error: either a promotion was interrupted and never retried, or someone moved
    an alias outside driftwatch (use `driftwatch rollback` to change the champion, not the MLflow UI)."""
    c = client(settings)
    with history.lock(f"promote:{settings.name}", f"{holder}:{os.getpid()}"):
        drift = alias_drift(settings, history, c)
        if drift:
            _complete_promotion_tags(settings, history, c)
            sync_aliases(settings, history, c)
    for d in drift:
        log.error(
            "%s: MLflow alias %r of %s named %s, the audit log names version %s (since %s: %s); moved "
            "it back to %s",
            settings.name,
            d["alias"],
            settings.registered_model,
            f"version {d['mlflow']}" if d["mlflow"] is not None else "nothing",
            d["audit"],
            d["since"],
            d["reason"],
            d["audit"],
        )
    return drift


ROLLED_BACK_TAGS = (f"{TAG}rolled_back", f"{TAG}rolled_back_reason", f"{TAG}rolled_back_on")


def rollback(
    settings: Settings,
    history: History,
    *,
    reason: str,
    actor: str | None = None,
    day: dt.date | None = None,
) -> dict[str, Any]:
    """Move `champion` back to `previous`, under the promotion lock, with audit rows like a promotion's.

    Semantics:
        - current = the latest `champion` event of the audit log, target = the latest `previous` event.
        - `champion` goes current -> target and `previous` goes target -> current: `previous` points at the
          version rolled back from, so a second rollback undoes the first.
        - Both events are stamped with the latest of: the latest audit event's logical date, the latest
          processed day (so days already run keep the champion they had) — or `day`, which may not
          be earlier). A rollback is a manual act outside the daily schedule; stamped so, it sorts after
          every event already recorded, `champion_at` answers the restored version from that date on (that
          date included), the next scheduled day serves it, and the timeline stays in logical-date order.
          Dates before it keep their answers. The wall-clock time is in the events' `at` column.
        - The version rolled back from is tagged driftwatch.rolled_back=true with the reason and date; the
          restored version loses those tags.

    Args:
        reason: why (required); recorded as "rollback: <reason>".
        actor: who (default: $USER@host).
        day: logical date to stamp the events with (default: the latest audit event's).

    Returns: {"rolled_back", "champion", "previous", "logical_date", "reason"}.

    Raises:
        ModelError: no reason, no champion, no previous version, `day` before the latest audit event, or
            the registry refused the change (the message says what was recorded).
    """
    from mlflow.exceptions import MlflowException

    from ml.exceptions import ModelError

    reason = (reason or "").strip()
    if not reason:
        raise ModelError(f'{settings.name}: rollback needs a reason for the audit log (--reason "...").')
    c = client(settings)
    holder = f"rollback:{actor or 'manual'}"
    with history.lock(f"promote:{settings.name}", holder):
        events = history.alias_events(settings.name)

        def latest(alias: str) -> dict[str, Any] | None:
            return max(
                (e for e in events if e["alias"] == alias),
                key=lambda e: (e["logical_date"], e["id"]),
                default=None,
            )

        champion, previous = latest(CHAMPION), latest(PREVIOUS)
        if champion is None or champion["after_version"] is None:
            raise ModelError(f"{settings.name}: nothing to roll back: the audit log has no champion.")
        current = int(champion["after_version"])
        if previous is None or previous["after_version"] is None:
            raise ModelError(
                f"{settings.name}: cannot roll back champion version {current}: there is no previous "
                f"version to go back to (version {current} is the first champion)."
            )
        target = int(previous["after_version"])
        if target == current:
            raise ModelError(
                f"{settings.name}: cannot roll back: previous and champion are both version {current}."
            )
        # after the latest processed day (or audit event): days already run keep the champion they had
        processed = history.days(settings.name)
        stamp = max([e["logical_date"] for e in events] + ([processed[-1]["day"]] if processed else []))
        if day is not None:
            if day.isoformat() < stamp:
                raise ModelError(
                    f"{settings.name}: rollback date {day} is before the latest audit event ({stamp}); "
                    f"use {stamp} or later, so the timeline stays in logical-date order."
                )
            stamp = day.isoformat()
        # the registry is reached before the audit rows are written: unreachable, nothing is recorded
        try:
            restored = c.get_model_version(settings.registered_model, str(target))
        except MlflowException as exc:
            raise ModelError(
                f"{settings.name}: cannot roll back to version {target} of {settings.registered_model}: the MLflow "
                f"registry answered {exc.error_code}: {exc.message}. Nothing was recorded."
            ) from exc
        text = f"rollback: {reason}"
        who = {"actor": actor} if actor else {}
        with history.engine.begin() as conn:  # both audit rows or neither
            history.add_alias_event(
                conn,
                dataset=settings.name,
                model=settings.registered_model,
                alias=CHAMPION,
                logical_date=stamp,
                before_version=current,
                after_version=target,
                reason=text,
                dag_run_id=None,
                **who,
            )
            history.add_alias_event(
                conn,
                dataset=settings.name,
                model=settings.registered_model,
                alias=PREVIOUS,
                logical_date=stamp,
                before_version=target,
                after_version=current,
                reason=f"{text} (rolled back from version {current})",
                dag_run_id=None,
                **who,
            )
        try:
            _set_tags(
                c,
                settings,
                current,
                {ROLLED_BACK_TAGS[0]: "true", ROLLED_BACK_TAGS[1]: reason[:5000], ROLLED_BACK_TAGS[2]: stamp},
            )
            for key in ROLLED_BACK_TAGS:
                if key in restored.tags:
                    c.delete_model_version_tag(settings.registered_model, str(target), key)
            sync_aliases(settings, history, c)
        except Exception as exc:
            raise ModelError(
                f"{settings.name}: rollback {current} -> {target} is recorded in the audit log, but the MLflow "
                f"registry was not fully updated ({exc}). Do not roll back again (that would undo it); "
                f"`driftwatch repair` (or the next run) makes the MLflow aliases follow the audit log."
            ) from exc
    log.warning("%s: champion rolled back from version %s to %s (%s)", settings.name, current, target, reason)
    return {
        "rolled_back": current,
        "champion": target,
        "previous": current,
        "logical_date": stamp,
        "reason": text,
    }


def complete_rollback_tags(settings: Settings, version: int, reason: str, stamp: str) -> None:
    """The rolled-back tags of `version`, when the rollback that recorded its audit rows was killed before it
    set them (its retry finds the rows and does not roll back again; the aliases are repaired by `record`)."""
    c = client(settings)
    if c.get_model_version(settings.registered_model, str(version)).tags.get(ROLLED_BACK_TAGS[0]) != "true":
        _set_tags(
            c,
            settings,
            version,
            {ROLLED_BACK_TAGS[0]: "true", ROLLED_BACK_TAGS[1]: reason[:5000], ROLLED_BACK_TAGS[2]: stamp},
        )


def reject(
    settings: Settings, *, version: int, day: dt.date, evaluation: dict[str, Any], champion: int | None
) -> None:
    """Tag a rejected challenger with the reason and its metrics; the aliases are not touched."""
    c = client(settings)
    _set_tags(c, settings, version, evidence_tags(evaluation))
    c.update_model_version(
        settings.registered_model, str(version), description=_description(settings, day, evaluation, champion)
    )


def champion_alias(settings: Settings) -> int | None:
    """The version the MLflow `champion` alias points at now (None when there is none)."""
    return _alias_version(client(settings), settings, CHAMPION)
