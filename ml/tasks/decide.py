"""Retrain or not, with the reason recorded in the history. Before the first champion: collect the original
window, then train the first champion on its last day (bootstrap). After it: the retrain policy decides
(`ml.policy.DriftTriggered` with the YAML's thresholds: drift share or AUC drop past its threshold, or a
monitor whose action is `retrain` violated; outside the cooldown; with enough new labelled rows), from what
`detect_drift` and `monitor_model` measured today. `force_retrain` (a manual run's param) bypasses it. On a
day `watch_champion` rolled the champion back, no challenger is trained: the restored champion serves from
tomorrow, and today's signals measured the one rolled back. Nor while a challenger is in shadow
(`promotion.mode: shadow`), nor on the day it is promoted from shadow. Branch: `train_challenger` or `skip_retrain`."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from typing import Literal, TypedDict

from ml import policy as policies
from ml.day import Day
from ml.tasks import detect_drift, monitor_model, validate_batch, watch_champion

log = logging.getLogger(__name__)

# how a decision's reason names the quality trigger, per task (ml/objective.py: Objective.drop)
QUALITY_NAMES = {"binary": "AUC drop", "multiclass": "macro F1 drop", "regression": "relative RMSE increase"}


class Output(TypedDict):
    next: Literal["train_challenger", "skip_retrain"]
    retrain: bool
    bootstrap: bool
    decision: Literal["collect", "bootstrap", "retrain", "skip"]
    reason: str


def policy_for(day: Day) -> policies.RetrainPolicy:
    """The run's policy: forced by `force_retrain`, else the one passed in (a replay's) or the dataset's
    drift-triggered policy, with this run's threshold overrides."""
    p, s = day.params, day.settings
    if p.force_retrain:
        return policies.Forced()
    policy = p.policy or policies.DriftTriggered()
    if isinstance(policy, policies.DriftTriggered):
        t = s.thresholds
        t = t if p.drift_share is None else dataclasses.replace(t, drift_share=float(p.drift_share))
        t = t if p.quality_drop is None else dataclasses.replace(t, quality_drop=float(p.quality_drop))
        return policy.for_dataset(
            t,
            s.monitoring.attribution.min_ndcg,
            min_new_days=s.min_new_days,
            false_alarm_rate=s.drift.false_alarm_rate if s.drift.calibrate else None,
        )
    return policy


def signals(
    day: Day,
    drift: detect_drift.Output | None,
    monitored: monitor_model.Output | None,
    validated: validate_batch.Output | None = None,
) -> policies.Signals:
    """What today's monitors measured, as the policy reads it. The AUC drop is the day's own when its labels
    came with the batch; with delayed labels, the CBPE estimate (`monitoring.estimation.use_for_decisions`)
    or else the realized drop of the day whose labels arrived today."""
    s, d = day.settings, day.date
    drift, monitored = drift or {}, monitored or {}
    se = None
    if s.labels_known(d, d):
        drop, name, se = drift.get("quality_drop"), QUALITY_NAMES[s.task], drift.get("quality_se")
    elif s.monitoring.estimation.use_for_decisions:
        drop, name = monitored.get("estimated_quality_drop"), "estimated AUC drop (CBPE, labels not in yet)"
    else:
        labelled = d - dt.timedelta(days=s.label_delay_days)
        arrived = monitored.get("labels_arrived")
        drop = arrived["quality_drop"] if arrived and arrived["day"] == labelled.isoformat() else None
        name = f"AUC drop on {labelled} (its labels arrived today)"
    mon = s.monitoring
    return policies.Signals(
        drift_share=drift.get("drift_share"),
        quality_drop=drop,
        quality_name=name,
        quality_se=se,
        bias_violation=monitored.get("bias_reason") if mon.bias.action == "retrain" else None,
        attribution_ndcg=monitored.get("attribution_ndcg")
        if mon.attribution.action == "retrain" and monitored.get("attribution_violation")
        else None,
        novelty=validated.get("novelty") if validated and s.validation.novelty == "retrain" else None,
    )


def facts(day: Day) -> policies.Facts:
    """The last training before the day, and the rows a challenger could train on today (accepted days since
    it whose labels have arrived)."""
    s, d = day.settings, day.date
    last = max(
        (m["trained_on"] for m in day.history.models(s.name) if m["trained_on"] < d.isoformat()), default=None
    )
    new = [
        r
        for r in day.history.days(s.name, until=d)
        if r["status"] == "accepted"
        and (last is None or r["day"] > last)
        and s.labels_known(dt.date.fromisoformat(r["day"]), d)
    ]
    return policies.Facts(
        day=d,
        last_trained=dt.date.fromisoformat(last) if last else None,
        new_rows=sum((r["rows"] or 0) for r in new),
        new_days=len(new),
    )


def run(
    day: Day,
    drift: detect_drift.Output | None = None,
    monitored: monitor_model.Output | None = None,
    validated: validate_batch.Output | None = None,
    watched: watch_champion.Output | None = None,
) -> Output:
    s, d = day.settings, day.date
    champion = day.serving_champion()
    retrain = bootstrap = False
    shadowed = watched.get("shadow") if watched else None
    if watched and watched.get("rolled_back") and not day.params.force_retrain:
        reason = (
            f"no retrain: version {watched['champion']} was rolled back to {watched['replaced']} today "
            f"(watch: {watched['reason']})"
        )
    elif (
        shadowed
        and (
            shadowed.get("verdict") == "shadowing"
            or (shadowed.get("verdict") == "promote" and shadowed.get("acted"))
        )
        and not day.params.force_retrain
    ):
        reason = (
            f"no retrain: version {shadowed.get('version')} is in shadow (shadow: {shadowed.get('reason')})"
            if shadowed.get("verdict") == "shadowing"
            else f"no retrain: shadow version {shadowed.get('version')} was promoted today"
        )
    elif champion is None:
        if d >= s.original_end:
            retrain = bootstrap = True
            reason = f"bootstrap: no champion yet; training the first one on the original window ending {s.original_end}"
        else:
            n = (d - s.original_start).days + 1
            total = (s.original_end - s.original_start).days + 1
            reason = f"collecting the original window: day {n} of {total}; the first champion is trained on {s.original_end}"
    else:
        decided = policy_for(day).decide(signals(day, drift, monitored, validated), facts(day))
        retrain, reason = decided.retrain, decided.reason
    decision: Literal["collect", "bootstrap", "retrain", "skip"] = (
        "bootstrap" if bootstrap else "retrain" if retrain else ("collect" if champion is None else "skip")
    )
    day.record(decision=decision, reason=reason)
    log.info("%s: %s", day, reason)
    return {
        "next": "train_challenger" if retrain else "skip_retrain",
        "retrain": retrain,
        "bootstrap": bootstrap,
        "decision": decision,
        "reason": reason,
    }
