"""A challenger in shadow (`promotion.mode: shadow`): live evidence before the champion alias moves.

A challenger that passes the offline gate on day S is not promoted: `start` gives it the registry alias
`shadow` (an audited event, like a promotion's, under the promotion lock). From S+1 on it scores the same
rows as the champion: the model server scores every request with it too (never answered; captured to
`_capture_shadow`, ml/capture.py), and the day's `watch_champion` step scores the day's batch with it (the
server's scores when they cover the day, else its own: a replay or a backfill gives the same numbers).
`judge` pools the labelled live rows of the window [S+1, S+shadow_days] and decides with
`ml.watch.judge_shadow` (the paired bootstrap and the log-loss/MAE guardrail of the offline gate): promoted
through `ml.promotion.promote` (stamped with the day that decided; the new champion serves from the next
day, and is watched), or rejected; either way the `shadow` alias is removed. The verdict is in the day's
history row (`shadow`, `shadow_verdict`) and on the MLflow version (`driftwatch.shadow.*`, `live.*` tags). A
rollback of the champion ends a shadow test (its comparison was against the version rolled back).
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from ml import live, promotion, registry
from ml.day import Day
from ml.registry import SHADOW, TAG

log = logging.getLogger(__name__)

ACTOR = "driftwatch-shadow"


def active(day: Day) -> dict[str, Any] | None:
    """The audit event that put today's shadow challenger in shadow (on an earlier day), or None."""
    s, d = day.settings, day.date
    events = [e for e in day.history.alias_events(s.name, SHADOW) if e["logical_date"] < d.isoformat()]
    if not events:
        return None
    last = max(events, key=lambda e: (e["logical_date"], e["id"]))
    return last if last["after_version"] is not None else None


def start(day: Day, version: int, evaluation: dict[str, Any]) -> dict[str, Any]:
    """Put `version` (which passed the offline gate today) in shadow: audit event, the day's row, the
    version's tags and the MLflow alias. Idempotent (a retry or re-run completes what a killed try began).
    Returns {"version", "replaced": the shadow it replaced or None, "recorded_before"}."""
    s, h, d = day.settings, day.history, day.date
    c = registry.client(s)
    with h.lock(f"promote:{s.name}", f"shadow:{day.run_id or 'manual'}:v{version}"):
        events = h.alias_events(s.name, SHADOW)
        done = [e for e in events if e["logical_date"] == d.isoformat() and e["after_version"] == version]
        last = max(events, key=lambda e: (e["logical_date"], e["id"]), default=None)
        before = done[0]["before_version"] if done else (last or {}).get("after_version")
        if not done:
            _event(day, before, version, f"shadow: {evaluation['reason']}")
        day.record(
            promotion="shadow",
            promotion_reason=f"in shadow beside the champion from {d + dt.timedelta(days=1)}: {evaluation['reason']}",
            candidate_version=version,
        )
        registry._set_tags(
            c,
            s,
            version,
            {
                **promotion.evidence_tags(evaluation),
                f"{TAG}decision": "shadow",
                f"{TAG}shadow.since": d.isoformat(),
                f"{TAG}shadow.champion": day.serving_champion(),
            },
        )
        promotion.sync_aliases(s, h, c)
    return {"version": version, "replaced": before, "recorded_before": bool(done)}


def judge(day: Day) -> dict[str, Any] | None:
    """Today's judgement of the challenger in shadow (None when there is none). Promotes or rejects it when
    the evidence is due; records the judgement in the day's row."""
    s, h, d = day.settings, day.history, day.date
    event = active(day)
    if event is None:
        return None
    version, started = int(event["after_version"]), dt.date.fromisoformat(event["logical_date"])
    champion = day.serving_champion()
    if champion is None or champion == version:
        return _end(day, version, "reject", f"version {version} is the champion already", None)
    if _rolled_back_since(day, started):
        return _end(day, version, "reject", f"the champion was rolled back since {started}: test ended", None)
    p, t = s.promotion, s.thresholds
    first, last = started + dt.timedelta(days=1), started + dt.timedelta(days=p.shadow_days)
    if d <= last:
        live.version_scores(day, d, version, live.CHALLENGER_FILE)
    days, complete = live.labelled_days(day, first, last, None, version, live.CHALLENGER_FILE)
    from ml.evaluate_tasks import guardrail_tolerance
    from ml.watch import WatchDay, judge_shadow

    judged = judge_shadow(
        s.objective,
        [WatchDay(x.day, x.y, x.old, x.new) for x in days],  # new: the challenger, old: the champion
        shadow_version=version,
        champion_version=champion,
        shadow_days=p.shadow_days,
        window_complete=complete,
        min_rows=p.min_shadow_rows,
        min_delta=t.min_delta,
        confidence=t.confidence,
        resamples=t.bootstrap_resamples,
        seed=s.training.seed,
        guardrail_tolerance=guardrail_tolerance(s.objective.task, t),
    )
    later = [r["day"] for r in h.days(s.name) if r["day"] > d.isoformat()]
    if judged.verdict == "shadowing" or later:
        # a re-run of a past day: the days after it ran with the aliases as they were; not rewritten
        note = f"; not acted on: later days ({later[0]}..{later[-1]}) have run already" if later else ""
        out = {**judged.as_dict(), "version": version, "champion": champion, "since": started.isoformat()}
        out["reason"] += note
        out["acted"] = False  # a verdict of a past day's re-run is recorded, not carried out
        day.record(shadow=out, shadow_verdict=judged.verdict)
        log.info("%s: %s", day, judged.reason)
        return out
    return _end(day, version, judged.verdict, judged.reason, judged, started=started, champion=champion)


def _end(
    day: Day,
    version: int,
    verdict: str,
    reason: str,
    judged: Any,
    *,
    started: dt.date | None = None,
    champion: int | None = None,
) -> dict[str, Any]:
    """Promote or reject the shadow challenger today (idempotent: a retry finds what a killed try did)."""
    s, h, d = day.settings, day.history, day.date
    c = registry.client(s)
    evidence = live.as_evidence(judged) if judged is not None else {}
    out = {
        **(judged.as_dict() if judged is not None else {"verdict": verdict, "reason": reason}),
        "version": version,
        "champion": champion,
        "since": started.isoformat() if started else None,
        "acted": True,
    }
    day.record(shadow=out, shadow_verdict=verdict)
    if verdict == "promote":
        kept = (h.get_day(s.name, started) or {}).get("evaluation") if started else None
        evaluation = dict(kept) if isinstance(kept, dict) else {}
        evaluation.update(reason=f"shadow: {reason}", live=out)
        # the promotion's tags and description are completed from the deciding day's row after a crash
        day.record(evaluation=evaluation)
        promotion.promote(s, h, version=version, day=d, evaluation=evaluation, dag_run_id=day.run_id)
    with h.lock(f"promote:{s.name}", f"shadow-end:{day.run_id or 'manual'}:v{version}"):
        ended = [
            e
            for e in h.alias_events(s.name, SHADOW)
            if e["logical_date"] == d.isoformat()
            and e["before_version"] == version
            and e["after_version"] is None
        ]
        if not ended:
            outcome = "promoted" if verdict == "promote" else "rejected"
            _event(day, version, None, f"shadow {outcome}: {reason}", actor=ACTOR)
        registry._set_tags(
            c,
            s,
            version,
            {
                **evidence,
                f"{TAG}shadow.verdict": "promoted" if verdict == "promote" else "rejected",
                f"{TAG}shadow.reason": reason[:5000],
                f"{TAG}shadow.ended": d.isoformat(),
                **({} if verdict == "promote" else {f"{TAG}decision": "rejected"}),
            },
        )
        promotion.sync_aliases(s, h, c)
    (log.warning if verdict == "reject" else log.info)(
        "%s: shadow version %s %s: %s", day, version, verdict, reason
    )
    return out


def _event(day: Day, before: int | None, after: int | None, reason: str, **who: Any) -> None:
    """One audit event of the `shadow` alias, stamped with the day (`who`: the actor, else $USER@host)."""
    s = day.settings
    day.history.add_alias_event(
        dataset=s.name,
        model=s.registered_model,
        alias=SHADOW,
        logical_date=day.date.isoformat(),
        before_version=before,
        after_version=after,
        reason=reason,
        dag_run_id=day.run_id,
        **who,
    )


def _rolled_back_since(day: Day, started: dt.date) -> bool:
    return any(
        str(e.get("reason") or "").startswith("rollback")
        and started.isoformat() <= e["logical_date"] < day.date.isoformat()
        for e in day.history.alias_events(day.settings.name, registry.CHAMPION)
    )
