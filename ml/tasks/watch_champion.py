"""Watch a new champion on live data, and roll it back when it does worse than the one it replaced.

For `promotion.watch_days` after a promotion, the champion it replaced scores each day's batch in shadow
(`_shadow_predictions.parquet` beside the champion's `_predictions.parquet`; never served). As the watched
days' labels arrive, `ml.watch.judge` compares the two on the same rows: rolled back early when the
paired-bootstrap CI of the new one's gain lies below 0 (`watch_min_rows` rows at least), or at the end of
the window when its mean daily primary metric is worse by more than `watch_tolerance`; otherwise kept.

A rollback is the audited one of `driftwatch rollback` (`ml.promotion.rollback`: under the promotion lock,
both audit rows, tags on both versions, the MLflow aliases), stamped with this logical date: the replaced
version serves again from the next day on, and `decide` trains no challenger today. The judgement is in the
day's history row (`watch`, `watch_verdict`) and the log; a rollback alerts. Off with `watch_days: 0`.

With `promotion.mode: shadow` it also judges the challenger in shadow (ml/shadow.py): scores the day's
batch with it, and once `min_shadow_rows` labelled live rows or `shadow_days` days are in, promotes it
(the champion from tomorrow) or rejects it (`shadow`, `shadow_verdict` in the row; an alert either way).
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any, TypedDict

from ml import data as lake
from ml import live, registry
from ml.day import Day

log = logging.getLogger(__name__)

ACTOR = "driftwatch-watch"


class Output(TypedDict):
    watching: bool
    champion: int | None  # the new champion under watch
    replaced: int | None  # the champion it replaced (scoring in shadow)
    verdict: str | None  # ml.watch.Verdict
    reason: str
    rolled_back: bool
    shadow: dict[str, Any] | None  # the challenger in shadow: ml.shadow.judge's judgement (None: none)


def run(day: Day) -> Output:
    out = _watch(day)
    if not out["rolled_back"]:  # a rollback today ends a shadow test tomorrow (it compared with this one)
        from ml import shadow

        out["shadow"] = shadow.judge(day)
    return out


def _watch(day: Day) -> Output:
    s, h, d = day.settings, day.history, day.date
    found = watched_promotion(day)
    if found is None:
        return _idle("no promotion under watch")
    event, first, last = found
    new, old = int(event["after_version"]), int(event["before_version"])
    done = _rolled_back_today(day, new)
    if done is not None:  # a re-run (or the retry of a killed try) of the day that rolled back
        from ml import promotion

        reason = str(done["reason"]).removeprefix("rollback: ")
        promotion.complete_rollback_tags(s, new, reason, d.isoformat())
        return {
            "watching": True,
            "champion": new,
            "replaced": old,
            "verdict": "roll_back",
            "reason": str(done["reason"]),
            "rolled_back": True,
            "shadow": None,
        }
    if d <= last:
        live.version_scores(day, d, old, lake.SHADOW_FILE)
    days, complete = live.labelled_days(day, first, last, new, old, lake.SHADOW_FILE)
    from ml import watch

    p, t = s.promotion, s.thresholds
    judged = watch.judge(
        s.objective,
        days,
        new_version=new,
        old_version=old,
        window_days=p.watch_days,
        window_complete=complete,
        min_rows=p.watch_min_rows,
        tolerance=p.watch_tolerance,
        confidence=t.confidence,
        resamples=t.bootstrap_resamples,
        seed=s.training.seed,
    )
    day.record(
        watch={**judged.as_dict(), "champion": new, "replaced": old, "promoted_on": event["logical_date"]},
        watch_verdict=judged.verdict,
    )
    rolled_back, reason = False, judged.reason
    later = [r["day"] for r in h.days(s.name) if r["day"] > d.isoformat()]
    if judged.verdict == "roll_back" and later:
        # a re-run of a past day: the days after it were served as they were; history is not rewritten
        reason += f"; not rolled back: later days ({later[0]}..{later[-1]}) have run already"
        log.warning("%s: %s", day, reason)
    elif judged.verdict == "roll_back":
        from ml import promotion

        promotion.rollback(s, h, reason=f"watch: {judged.reason}", actor=ACTOR, day=d)
        rolled_back = True
        log.warning("%s: version %s rolled back to %s: %s", day, new, old, judged.reason)
    else:
        log.info("%s: watch of version %s (replaced %s): %s", day, new, old, judged.reason)
    return {
        "watching": True,
        "champion": new,
        "replaced": old,
        "verdict": judged.verdict,
        "reason": reason,
        "rolled_back": rolled_back,
        "shadow": None,
    }


def watched_promotion(day: Day) -> tuple[dict[str, Any], dt.date, dt.date] | None:
    """(the promotion event, first, last day of its window) when the day's serving champion was promoted by
    the flow within the window and its labels may still be judged; None otherwise."""
    s, d = day.settings, day.date
    if s.promotion.watch_days <= 0:
        return None
    champion = day.serving_champion()
    earlier = [
        e for e in day.history.alias_events(s.name, registry.CHAMPION) if e["logical_date"] < d.isoformat()
    ]
    if champion is None or not earlier:
        return None
    event = max(earlier, key=lambda e: (e["logical_date"], e["id"]))
    manual = str(event.get("reason") or "").startswith("rollback")
    if event["after_version"] != champion or event["before_version"] is None or manual:
        return None  # the first champion, or a rollback: nothing to compare with / nothing to watch
    promoted = dt.date.fromisoformat(event["logical_date"])
    first, last = promoted + dt.timedelta(days=1), promoted + dt.timedelta(days=s.promotion.watch_days)
    if d > last + dt.timedelta(days=s.label_delay_days):
        return None  # the window's last labels were judged on an earlier day
    return event, first, last


def _rolled_back_today(day: Day, new: int) -> dict[str, Any] | None:
    for e in day.history.alias_events(day.settings.name, registry.CHAMPION):
        if (
            e["logical_date"] == day.date.isoformat()
            and e["before_version"] == new
            and e.get("actor") == ACTOR
        ):
            return e
    return None


def _idle(reason: str) -> Output:
    return {
        "watching": False,
        "champion": None,
        "replaced": None,
        "verdict": None,
        "reason": reason,
        "rolled_back": False,
        "shadow": None,
    }
