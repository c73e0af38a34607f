"""ml.watch.judge: when a watched champion is kept, rolled back, or still watched (pure: no services)."""

from __future__ import annotations

import numpy as np
import pytest

from ml.objective import Objective
from ml.watch import WatchDay, judge

BINARY = Objective("binary", ())


def _day(i: int, n: int, *, new_skill: float, old_skill: float, seed: int) -> WatchDay:
    """n labelled rows; each model's score is the label plus noise, less noisy = better."""
    rng = np.random.default_rng(seed + i)
    y = rng.integers(0, 2, n)
    new = np.clip(y * new_skill + rng.normal(0.5 - new_skill / 2, 0.3, n), 0, 1)
    old = np.clip(y * old_skill + rng.normal(0.5 - old_skill / 2, 0.3, n), 0, 1)
    return WatchDay(f"2013-03-{i + 1:02d}", y, new, old)


def _judge(days, *, complete: bool, min_rows: int = 500, tolerance: float = 0.0, objective=BINARY):
    return judge(
        objective,
        days,
        new_version=5,
        old_version=4,
        window_days=7,
        window_complete=complete,
        min_rows=min_rows,
        tolerance=tolerance,
        confidence=0.95,
        resamples=200,
        seed=0,
    )


def test_too_few_rows_is_collecting_and_names_the_minimum():
    j = _judge([_day(0, 100, new_skill=0.2, old_skill=0.4, seed=1)], complete=False)
    assert j.verdict == "collecting"
    assert j.ci is None and j.rows == 100
    assert "from 500" in j.reason


def test_clearly_worse_is_rolled_back_early_before_the_window_ends():
    days = [_day(i, 400, new_skill=0.1, old_skill=0.5, seed=2) for i in range(3)]
    j = _judge(days, complete=False)
    assert j.verdict == "roll_back"
    assert j.ci is not None and j.ci["high"] < 0
    assert j.mean_new is None  # decided on the CI, not on the window's means
    assert "version 5 vs 4" in j.reason and "below 0" in j.reason


def test_as_good_is_watched_then_kept_at_the_end():
    days = [_day(i, 400, new_skill=0.4, old_skill=0.4, seed=3) for i in range(7)]
    going = _judge(days[:3], complete=False)
    assert going.verdict == "watching"
    assert going.ci is not None and going.ci["low"] < 0 < going.ci["high"]
    done = _judge(days, complete=True, tolerance=0.05)
    assert done.verdict == "keep"
    assert done.mean_new is not None and done.mean_old is not None


def test_slightly_worse_at_the_end_is_rolled_back_beyond_the_tolerance_only():
    days = [_day(i, 80, new_skill=0.36, old_skill=0.40, seed=4) for i in range(7)]
    strict = _judge(days, complete=True, min_rows=10_000)  # no CI: the end-of-window means decide
    assert strict.mean_new is not None and strict.mean_old is not None
    assert strict.mean_new < strict.mean_old
    assert strict.verdict == "roll_back" and "worse" in strict.reason
    lenient = _judge(days, complete=True, min_rows=10_000, tolerance=1.0)
    assert lenient.verdict == "keep"


def test_regression_compares_rmse_the_right_way_round():
    rng = np.random.default_rng(5)
    days = []
    for i in range(3):
        y = rng.normal(0, 1, 500)
        days.append(WatchDay(f"d{i}", y, y + rng.normal(0, 1.0, 500), y + rng.normal(0, 0.2, 500)))
    j = _judge(days, complete=True, objective=Objective("regression", ()))
    assert j.verdict == "roll_back"  # the new one's errors are 5x larger
    assert j.mean_new is None or j.mean_new > j.mean_old  # RMSE: higher is worse


@pytest.mark.parametrize("complete", [False, True])
def test_no_labelled_day_yet(complete):
    j = _judge([], complete=complete)
    assert j.verdict == "collecting" and j.rows == 0 and j.days == 0
