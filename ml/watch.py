"""Watching a new champion on live data (pure: no I/O, MLflow or Airflow; `ml.tasks.watch_champion` runs it).

For `promotion.watch_days` after a promotion the champion it replaced keeps scoring each day's batch in
shadow. Once labelled rows come in, the two are compared on the same rows:

- **early**: once `watch_min_rows` labelled rows are in, the paired bootstrap of the primary metric's gain
  (new over old; the promotion gate's own `Objective.paired_bootstrap`) on all of them; its upper bound
  below zero means the new champion is worse beyond the noise: roll back now;
- **at the end** (every one of the `watch_days` days labelled): the mean over those days of the daily
  primary metric of each model (the measure of `make bench`'s "promotions worse over the next 7 days");
  the new champion is kept when its mean is no worse than the old one's by more than `watch_tolerance`,
  otherwise rolled back.

A day whose labels have not arrived waits; a quarantined day has no rows and does not count.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

Verdict = Literal["collecting", "watching", "keep", "roll_back", "shadowing", "promote", "reject"]


@dataclass(frozen=True)
class WatchDay:
    """One watched day's labelled rows: the labels and both models' outputs on the same rows."""

    day: str
    y: Any
    new: Any  # the serving (new) champion's output, as `Objective.from_frame` gives it
    old: Any  # the replaced champion's output on the same rows (its shadow scores)


@dataclass(frozen=True)
class Judgement:
    verdict: Verdict
    reason: str
    rows: int
    days: int
    ci: dict[str, float] | None  # the pooled paired bootstrap {"delta", "low", "high", "resamples"}
    mean_new: float | None  # mean daily primary metric, when every watched day is labelled
    mean_old: float | None
    # a shadow test: the guardrail on the pooled rows {"name", "change" (positive: worse), "tolerance"}
    guardrail: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        out = {
            "verdict": self.verdict,
            "reason": self.reason,
            "rows": self.rows,
            "days": self.days,
            "ci": self.ci,
            "mean_new": self.mean_new,
            "mean_old": self.mean_old,
        }
        return {**out, "guardrail": self.guardrail} if self.guardrail is not None else out


def judge(
    objective: Any,
    days: Sequence[WatchDay],
    *,
    new_version: int,
    old_version: int,
    window_days: int,
    window_complete: bool,
    min_rows: int,
    tolerance: float,
    confidence: float,
    resamples: int,
    seed: int,
) -> Judgement:
    """The watch's verdict on the labelled days so far.

    Args:
        objective: the dataset's `ml.objective.Objective` (primary metric, direction, paired bootstrap).
        days: the watched days whose labels are in, in order.
        window_complete: every day of the window has run and is labelled (or quarantined).
    """
    import numpy as np

    name = objective.primary
    rows = sum(len(d.y) for d in days)
    ci = None
    if rows >= min_rows and days:
        y = np.concatenate([np.asarray(d.y) for d in days])
        new = np.concatenate([np.asarray(d.new) for d in days])
        old = np.concatenate([np.asarray(d.old) for d in days])
        ci = objective.paired_bootstrap(y, old, new, resamples=resamples, confidence=confidence, seed=seed)
    mean_new = mean_old = None
    if window_complete and days:
        pairs = [(objective.value(d.y, d.new), objective.value(d.y, d.old)) for d in days]
        pairs = [(a, b) for a, b in pairs if a is not None and b is not None]
        if pairs:
            mean_new = float(np.mean([a for a, _ in pairs]))
            mean_old = float(np.mean([b for _, b in pairs]))
    vs = f"version {new_version} vs {old_version}"
    level = f"{confidence:.0%}"
    if ci is not None and ci["high"] < 0:
        return Judgement(
            "roll_back",
            f"{vs} on {rows} labelled rows of {len(days)} days: {name} gain {ci['delta']:+.4f}, "
            f"{level} CI [{ci['low']:+.4f}, {ci['high']:+.4f}] entirely below 0: worse beyond the noise",
            rows,
            len(days),
            ci,
            mean_new,
            mean_old,
        )
    if mean_new is not None and mean_old is not None:
        gain = objective.gain(mean_old, mean_new)
        summary = (
            f"{vs} over the {len(days)} watched days: mean daily {name} {mean_new:.4f} vs {mean_old:.4f} "
            f"(gain {gain:+.4f}, tolerance {tolerance})"
        )
        if gain < -tolerance:
            return Judgement("roll_back", summary + ": worse", rows, len(days), ci, mean_new, mean_old)
        return Judgement("keep", summary + ": kept", rows, len(days), ci, mean_new, mean_old)
    if ci is None:
        return Judgement(
            "collecting",
            f"{vs}: {rows} labelled rows of {len(days)} days so far (comparing from {min_rows}); "
            f"watch of {window_days} days",
            rows,
            len(days),
            None,
            None,
            None,
        )
    return Judgement(
        "watching",
        f"{vs} on {rows} labelled rows of {len(days)} days: {name} gain {ci['delta']:+.4f}, {level} CI "
        f"[{ci['low']:+.4f}, {ci['high']:+.4f}]; watch of {window_days} days goes on",
        rows,
        len(days),
        ci,
        None,
        None,
    )


def judge_shadow(
    objective: Any,
    days: Sequence[WatchDay],
    *,
    shadow_version: int,
    champion_version: int,
    shadow_days: int,
    window_complete: bool,
    min_rows: int,
    min_delta: float,
    confidence: float,
    resamples: int,
    seed: int,
    guardrail_tolerance: float | None = None,
) -> Judgement:
    """A challenger in shadow (`promotion.mode: shadow`): its verdict on the labelled live days so far.

    `days[i].new` is the shadow challenger's output, `.old` the serving champion's, on the same rows. The
    decision is due once `min_rows` labelled rows are in, or when the whole window of `shadow_days` days is
    (`window_complete`), whichever comes first: the paired bootstrap of the primary metric's gain on all
    those rows (`Objective.paired_bootstrap`, as the offline gate) promotes when its lower bound is above
    `min_delta` and, as offline, the guardrail (log loss; for regression MAE, relative) is no worse on the
    same rows than `guardrail_tolerance` allows (None: not checked); else it rejects. Before that the
    verdict is `shadowing` (with the CI and the guardrail so far, once rows exist).
    """
    import numpy as np

    name = objective.primary
    rows = sum(len(d.y) for d in days)
    vs = f"shadow version {shadow_version} vs champion {champion_version}"
    ci = pooled_new = pooled_old = guard = None
    if rows:
        y = np.concatenate([np.asarray(d.y) for d in days])
        new = np.concatenate([np.asarray(d.new) for d in days])
        old = np.concatenate([np.asarray(d.old) for d in days])
        pooled_new, pooled_old = objective.value(y, new), objective.value(y, old)
        if pooled_new is not None and pooled_old is not None:
            ci = objective.paired_bootstrap(
                y, old, new, resamples=resamples, confidence=confidence, seed=seed
            )
            if guardrail_tolerance is not None:
                change = objective.guardrail_change(objective.metrics(y, old), objective.metrics(y, new))
                guard = {"name": objective.guardrail, "change": change, "tolerance": guardrail_tolerance}
    due = rows >= min_rows or window_complete
    level = f"{confidence:.0%}"
    if ci is None:
        if not due:
            return Judgement(
                "shadowing",
                f"{vs}: {rows} labelled live rows of {len(days)} days so far (deciding at {min_rows} rows or "
                f"after {shadow_days} days)",
                rows,
                len(days),
                None,
                None,
                None,
            )
        return Judgement(
            "reject",
            f"{vs}: the {shadow_days} days of shadow ended with {rows} labelled live rows on which {name} "
            "can be compared: no live evidence, not promoted",
            rows,
            len(days),
            None,
            None,
            None,
        )
    summary = (
        f"{vs} on {rows} labelled live rows of {len(days)} days: {name} {pooled_new:.4f} vs {pooled_old:.4f}, "
        f"gain {ci['delta']:+.4f}, {level} CI [{ci['low']:+.4f}, {ci['high']:+.4f}]"
    )
    worse = guard is not None and guard["change"] > guard["tolerance"]
    if guard is not None:
        summary += f"; {guard['name']} worse by {guard['change']:+.4f} (tolerance {guard['tolerance']})"
    if not due:
        return Judgement(
            "shadowing",
            f"{summary}; deciding at {min_rows} rows or after {shadow_days} days",
            rows,
            len(days),
            ci,
            pooled_new,
            pooled_old,
            guard,
        )
    verdict: Verdict = "reject"
    if ci["low"] <= min_delta:
        text = f"{summary}: lower bound not above min_delta {min_delta}: rejected"
    elif worse:
        text = f"{summary}: lower bound above min_delta {min_delta} but the guardrail fails: rejected"
    else:
        verdict, text = "promote", f"{summary}: lower bound above min_delta {min_delta}: promoted"
    return Judgement(verdict, text, rows, len(days), ci, pooled_new, pooled_old, guard)
