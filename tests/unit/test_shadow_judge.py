"""ml.watch.judge_shadow: when a challenger in shadow is promoted, rejected, or still shadowing (pure)."""

from __future__ import annotations

import numpy as np
import pytest

from ml.objective import Objective
from ml.watch import WatchDay, judge_shadow

BINARY = Objective("binary", ())
REGRESSION = Objective("regression", ())


def _day(i: int, n: int, *, shadow_skill: float, champion_skill: float, seed: int) -> WatchDay:
    """n labelled rows; each model's score is the label plus noise (more skill = better)."""
    rng = np.random.default_rng(seed + i)
    y = rng.integers(0, 2, n)
    new = np.clip(y * shadow_skill + rng.normal(0.5 - shadow_skill / 2, 0.3, n), 0, 1)
    old = np.clip(y * champion_skill + rng.normal(0.5 - champion_skill / 2, 0.3, n), 0, 1)
    return WatchDay(f"2013-03-{i + 1:02d}", y, new, old)


def _judge(days, *, complete=False, min_rows=1000, min_delta=0.0, objective=BINARY, guardrail=None):
    return judge_shadow(
        objective,
        days,
        shadow_version=6,
        champion_version=4,
        shadow_days=7,
        window_complete=complete,
        min_rows=min_rows,
        min_delta=min_delta,
        confidence=0.95,
        resamples=200,
        seed=0,
        guardrail_tolerance=guardrail,
    )


def test_before_the_rows_or_the_days_are_in_it_keeps_shadowing_with_the_ci_so_far():
    j = _judge([_day(0, 400, shadow_skill=0.6, champion_skill=0.2, seed=1)])
    assert j.verdict == "shadowing"
    assert j.rows == 400 and j.days == 1
    assert j.ci is not None  # the evidence so far is shown, not acted on
    assert "deciding at 1000 rows or after 7 days" in j.reason


def test_no_labelled_row_yet_is_shadowing_without_a_ci():
    j = _judge([])
    assert j.verdict == "shadowing" and j.ci is None and j.rows == 0


def test_clearly_better_on_enough_rows_is_promoted():
    days = [_day(i, 400, shadow_skill=0.6, champion_skill=0.2, seed=2) for i in range(3)]
    j = _judge(days)
    assert j.verdict == "promote"
    assert j.ci is not None and j.ci["low"] > 0
    assert j.mean_new is not None and j.mean_old is not None and j.mean_new > j.mean_old
    assert "shadow version 6 vs champion 4" in j.reason and "promoted" in j.reason


def test_as_good_is_rejected_when_the_evidence_is_due():
    days = [_day(i, 400, shadow_skill=0.4, champion_skill=0.4, seed=3) for i in range(3)]
    j = _judge(days)
    assert j.verdict == "reject"
    assert j.ci is not None and j.ci["low"] <= 0
    assert "not above min_delta 0.0" in j.reason


def test_min_delta_is_the_offline_gates_bar():
    days = [_day(i, 400, shadow_skill=0.6, champion_skill=0.2, seed=2) for i in range(3)]
    low = _judge(days).ci["low"]
    assert _judge(days, min_delta=low - 0.001).verdict == "promote"
    assert _judge(days, min_delta=low + 0.001).verdict == "reject"


def test_the_window_ending_decides_on_fewer_rows():
    days = [_day(i, 100, shadow_skill=0.6, champion_skill=0.2, seed=4) for i in range(2)]
    assert _judge(days).verdict == "shadowing"
    assert _judge(days, complete=True).verdict in ("promote", "reject")


def test_a_window_with_no_comparable_row_is_rejected_for_want_of_evidence():
    y = np.ones(50, dtype=int)  # one class: the AUC cannot be computed
    one_class = WatchDay("2013-03-01", y, np.full(50, 0.7), np.full(50, 0.6))
    j = _judge([one_class], complete=True)
    assert j.verdict == "reject" and "no live evidence" in j.reason


def test_lower_is_better_metrics_gain_when_the_error_falls():
    rng = np.random.default_rng(5)
    y = rng.normal(10, 3, 3000)
    good, bad = y + rng.normal(0, 1, 3000), y + rng.normal(0, 3, 3000)
    better = _judge([WatchDay("2013-03-01", y, good, bad)], objective=REGRESSION)
    worse = _judge([WatchDay("2013-03-01", y, bad, good)], objective=REGRESSION)
    assert better.verdict == "promote" and worse.verdict == "reject"


def _calibrated_days(seed: int) -> list[WatchDay]:
    """Labels drawn with probability q: the champion says q with noise (calibrated, weaker ranking), the
    shadow says q exactly (a better ranking)."""
    out = []
    for i in range(3):
        rng = np.random.default_rng(seed + i)
        q = rng.uniform(0.05, 0.95, 2000)
        y = (rng.random(2000) < q).astype(int)
        old = np.clip(q + rng.normal(0, 0.25, 2000), 0.02, 0.98)
        out.append(WatchDay(f"2013-03-{i + 1:02d}", y, q, old))
    return out


def _overconfident(day: WatchDay) -> WatchDay:
    """The same ranking (the same AUC) with every score between 0.85 and 0.95: a much worse log loss."""
    return WatchDay(day.day, day.y, 0.85 + 0.1 * np.asarray(day.new), day.old)


def test_a_better_ranking_with_a_worse_log_loss_is_rejected_by_the_guardrail():
    days = _calibrated_days(7)
    calibrated = _judge(days, guardrail=0.01)
    assert calibrated.verdict == "promote"
    assert calibrated.guardrail is not None and calibrated.guardrail["name"] == "log_loss"
    assert calibrated.guardrail["change"] < 0  # its log loss is better too
    j = _judge([_overconfident(d) for d in days], guardrail=0.01)
    assert j.ci == calibrated.ci  # the same ranking: the same AUC evidence
    assert j.verdict == "reject" and j.guardrail["change"] > 0.01
    assert "log_loss worse by" in j.reason and "the guardrail fails" in j.reason
    assert j.as_dict()["guardrail"] == j.guardrail
    # without a tolerance the guardrail is not checked (and not reported)
    unchecked = _judge([_overconfident(d) for d in days])
    assert unchecked.verdict == "promote" and "guardrail" not in unchecked.as_dict()


def test_the_regression_guardrail_is_the_relative_mae():
    rng = np.random.default_rng(6)
    y = rng.normal(10, 3, 3000)
    old = y + rng.normal(0, 2, 3000)
    # errors mostly smaller (a better RMSE) but a few huge ones: judged on the relative MAE change
    new = y + np.where(rng.random(3000) < 0.9, rng.normal(0, 0.5, 3000), rng.normal(0, 2, 3000))
    j = _judge([WatchDay("2013-03-01", y, new, old)], objective=REGRESSION, guardrail=0.05)
    mae_new, mae_old = np.mean(np.abs(y - new)), np.mean(np.abs(y - old))
    assert j.guardrail is not None and j.guardrail["name"] == "mae"
    assert j.guardrail["change"] == pytest.approx((mae_new - mae_old) / mae_old)
    assert j.verdict == "promote"
