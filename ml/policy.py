"""When to retrain: the retrain policies, as pure calculators (no I/O, no MLflow, no Airflow).

A policy gets what the day's monitors measured (`Signals`) and what the history says about training so
far (`Facts`) and returns a `Decision` with its reason. The `decide` task builds both from its inputs and
the history; the replay passes another policy to compare them over a year:

    DriftTriggered   the platform's own: drift share or AUC drop past its threshold (or a monitor whose
                     action is `retrain`), outside a cooldown, with enough new labelled rows
    Scheduled        every N days after the last training (every day: N=1); never: N=None
    Forced           always (the `force_retrain` parameter of a manual run)

Before the first champion exists no policy is asked: the runs collect the original window and the first
champion is trained on its last day (the `decide` task).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Protocol

from ml.config import Thresholds
from ml.exceptions import ConfigError


@dataclass(frozen=True)
class Signals:
    """What the day's monitors measured (None: not measured today)."""

    drift_share: float | None = None
    quality_drop: float | None = None
    quality_name: str = "AUC drop"  # which drop it is (the day's own, an estimate, an earlier day's)
    # the standard error of the day's metric (its sampling noise: large for a small batch); None: not known
    quality_se: float | None = None
    bias_violation: str | None = None  # the first reason, when a bias violation counts as a trigger
    attribution_ndcg: float | None = None  # the nDCG, when an attribution violation counts as a trigger
    novelty: str | None = None  # values the champion never saw, when `validation.novelty` is `retrain`


@dataclass(frozen=True)
class Facts:
    """What the history says about training before the day."""

    day: dt.date
    last_trained: dt.date | None  # logical date of the last training before `day`
    new_rows: int  # accepted, labelled rows since then (what a challenger could train on today)
    new_days: int | None = None  # accepted days with labels since then (None: not counted)


NOT_TRIGGERED = "no retrain: "  # how the drift-triggered policy's reason starts when no threshold was crossed


@dataclass(frozen=True)
class Decision:
    retrain: bool
    reason: str


def triggered(reason: str | None) -> bool:
    """Whether a drift-triggered decision crossed a threshold (retrained, or held back by the cooldown or too
    little new data), read from its reason."""
    return bool(reason) and not str(reason).startswith(NOT_TRIGGERED)


class RetrainPolicy(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def label(self) -> str: ...

    @property
    def reads_signals(self) -> bool:
        """False: the monitors' outputs are not read (a replay need not run them)."""
        ...

    def decide(self, signals: Signals, facts: Facts) -> Decision: ...


@dataclass(frozen=True)
class DriftTriggered:
    """The platform's own policy. `thresholds` / `min_ndcg` None: the dataset's (`for_dataset` fills them).

    `min_new_days`: accepted days needed since the last training. `false_alarm_rate` (None: off): a quality
    drop counts only when it is also beyond the day's sampling noise, `z * quality_se` with z the one-sided
    normal quantile of half the rate (the drift share gets the other half, ml/calibration.py), so a small
    batch's noisy AUC does not trigger retrains.
    """

    thresholds: Thresholds | None = None
    min_ndcg: float | None = None
    min_new_days: int = 0
    false_alarm_rate: float | None = None
    name: str = "drift"
    label: str = "drift-triggered"
    reads_signals: bool = True

    def for_dataset(
        self,
        thresholds: Thresholds,
        min_ndcg: float,
        *,
        min_new_days: int = 0,
        false_alarm_rate: float | None = None,
    ) -> DriftTriggered:
        return DriftTriggered(
            self.thresholds or thresholds,
            self.min_ndcg if self.min_ndcg is not None else min_ndcg,
            min_new_days=min_new_days,
            false_alarm_rate=false_alarm_rate,
        )

    def noise_floor(self, se: float | None) -> float | None:
        """The drop the day's sampling noise alone exceeds with probability false_alarm_rate / 2."""
        if se is None or self.false_alarm_rate is None:
            return None
        return normal_quantile(1 - self.false_alarm_rate / 2) * se

    def decide(self, signals: Signals, facts: Facts) -> Decision:
        t = self.thresholds
        if t is None:
            raise ValueError("DriftTriggered.decide: no thresholds; use for_dataset() first")
        share, drop = signals.drift_share, signals.quality_drop
        floor = self.noise_floor(signals.quality_se)
        triggers = []
        if share is not None and share >= t.drift_share:
            triggers.append(f"drift share {share:.2f} >= {t.drift_share}")
        quality_noise = None
        if drop is not None and drop >= t.quality_drop:
            if floor is not None and drop < floor:
                quality_noise = (
                    f"{signals.quality_name} {drop:.3f} >= {t.quality_drop} but within the day's noise "
                    f"(< {floor:.3f}: {signals.quality_se:.3f} standard error)"
                )
            else:
                triggers.append(f"{signals.quality_name} {drop:.3f} >= {t.quality_drop}")
        if signals.bias_violation:
            triggers.append(f"bias drift ({signals.bias_violation})")
        if signals.attribution_ndcg is not None:
            triggers.append(f"attribution nDCG {signals.attribution_ndcg:.2f} < {self.min_ndcg}")
        if signals.novelty:
            triggers.append(f"novelty ({signals.novelty})")
        if not triggers:
            parts = [
                f"drift share {share:.2f} < {t.drift_share}" if share is not None else "no drift measured"
            ]
            if quality_noise is not None:
                parts.append(quality_noise)
            elif drop is not None:
                parts.append(f"{signals.quality_name} {drop:.3f} < {t.quality_drop}")
            return Decision(False, NOT_TRIGGERED + "; ".join(parts))
        why, last = " and ".join(triggers), facts.last_trained
        since = (facts.day - last).days if last else None
        if since is not None and since < t.cooldown_days:
            return Decision(
                False, f"{why}, but in cooldown: {since} of {t.cooldown_days} days since training on {last}"
            )
        if facts.new_rows == 0 and last is not None:
            return Decision(False, f"{why}, but no new labelled rows since training on {last}")
        if facts.new_rows < t.min_new_rows:
            return Decision(
                False, f"{why}, but only {facts.new_rows} new rows since {last} (minimum {t.min_new_rows})"
            )
        if facts.new_days is not None and last is not None and facts.new_days < self.min_new_days:
            return Decision(
                False,
                f"{why}, but only {facts.new_days} new labelled days since {last} (minimum {self.min_new_days}: "
                "thresholds.min_new_days, by default holdout_days, so the challenger's holdout is all new data)",
            )
        return Decision(True, f"retrain: {why}; {facts.new_rows} new rows since {last}")


def normal_quantile(p: float) -> float:
    """The standard normal quantile (statistics.NormalDist: no scipy at decision time)."""
    from statistics import NormalDist

    return NormalDist().inv_cdf(p)


@dataclass(frozen=True)
class Scheduled:
    """Retrain `every` days after the last training; never when `every` is None."""

    every: int | None
    name: str = ""
    reads_signals: bool = False

    @property
    def label(self) -> str:
        if self.every is None:
            return "never retrain"
        return "every day" if self.every == 1 else f"every {self.every} days"

    def decide(self, signals: Signals, facts: Facts) -> Decision:
        last = facts.last_trained
        due = self.every is not None and last is not None and (facts.day - last).days >= self.every
        since = f"{(facts.day - last).days} days since training on {last}" if last else "no training yet"
        return Decision(due, f"{self.label}: {'scheduled retrain' if due else 'not scheduled'} ({since})")


@dataclass(frozen=True)
class Forced:
    name: str = "forced"
    label: str = "forced"
    reads_signals: bool = False

    def decide(self, signals: Signals, facts: Facts) -> Decision:
        return Decision(True, "forced by the force_retrain parameter")


POLICY_NAMES = ("never", "daily", "every-7", "every-30", "drift")


def parse(name: str) -> RetrainPolicy:
    """`never`, `daily`, `every-N` (N >= 1 days) or `drift` (the dataset's thresholds).

    Raises:
        ConfigError: any other name.
    """
    if name == "drift":
        return DriftTriggered()
    if name == "never":
        return Scheduled(None, name="never")
    if name == "daily":
        return Scheduled(1, name="daily")
    m = re.fullmatch(r"every-(\d+)", name)
    if m and int(m.group(1)) >= 1:
        n = int(m.group(1))
        return Scheduled(n, name="daily" if n == 1 else name)
    raise ConfigError(f"unknown policy {name!r}. Use one of {list(POLICY_NAMES)} or every-N (N >= 1).")


def cost_rank(policy: RetrainPolicy) -> float:
    """Sort key, most expensive replay first (so a parallel run does not end on the longest alone):
    every day, drift (the monitors run every day), then the rarer schedules, never."""
    if policy.reads_signals:
        return -0.5
    every = getattr(policy, "every", None)
    return -1.0 / every if every else 0.0
