"""Which days a challenger trains and is judged on, the training window policies, and the model itself."""

from __future__ import annotations

import dataclasses
import datetime as dt
import re

import numpy as np
import pandas as pd
import pytest

from ml.data import daterange, read_days
from ml.exceptions import ModelError
from ml.history import History
from ml.train import fit, predict_proba, sample_weights, split_days, usable_days

# a small booster: the tests check behaviour, not accuracy
FAST = {"max_iter": 20}


@pytest.fixture(autouse=True)
def _one_openmp_thread():
    """Fits of a few thousand rows: OpenMP threads only add contention on a busy machine (10x slower)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        yield


@pytest.fixture
def history(settings) -> History:
    return History(settings.history_url)


@pytest.fixture
def original_days(settings, add_partitions) -> list[dt.date]:
    days = daterange(settings.original_start, settings.original_end)
    add_partitions(settings, days)
    return days


def _policy(settings, **changes):
    return settings.with_overrides(training=dataclasses.replace(settings.training, **changes))


def test_holdout_is_the_last_days_and_training_strictly_before(settings, history, original_days):
    split = split_days(settings, history, settings.original_end)

    h = settings.holdout_days
    assert split.holdout_days == original_days[-h:]
    assert split.train_days == original_days[:-h]
    assert max(split.train_days) < min(split.holdout_days)
    assert split.to_dict()["holdout_range"] == f"{original_days[-h]}..{original_days[-1]}"


def test_days_after_the_window_count_only_when_accepted(settings, history, original_days, add_partitions):
    end = settings.original_end
    later = daterange(end + dt.timedelta(days=1), end + dt.timedelta(days=12))
    add_partitions(settings, later)
    status = {
        later[0]: "accepted",
        later[1]: "accepted",
        later[2]: "quarantined",
        later[3]: "invalid",
        later[4]: "accepted",
        later[5]: None,  # no row at all
        later[6]: "accepted",
        later[7]: "failed",
        later[8]: "accepted",
        later[9]: "accepted",
        later[10]: "accepted",  # after the logical date below
    }
    for day, st in status.items():
        if st is not None:
            history.start_day(settings.name, day, status=st, rows=900)
    day = later[9]

    split = split_days(settings, history, day)

    expected = original_days + [d for d in later if d <= day and status.get(d) == "accepted"]
    used = split.train_days + split.holdout_days
    assert used == expected
    assert split.holdout_days == expected[-settings.holdout_days :]
    assert not {later[2], later[3], later[5], later[7], later[10], later[11]} & set(used)


def test_quarantined_or_missing_original_days_are_never_used(settings, history, original_days):
    quarantined, missing = original_days[5], original_days[-2]
    history.start_day(settings.name, quarantined, status="quarantined")
    for f in settings.partition_dir(missing).iterdir():
        f.unlink()

    split = split_days(settings, history, settings.original_end)

    used = split.train_days + split.holdout_days
    assert quarantined not in used and missing not in used
    assert used == [d for d in original_days if d not in (quarantined, missing)]
    assert len(split.holdout_days) == settings.holdout_days


def test_window_days_before_the_logical_date_only(settings, history, original_days):
    day = original_days[20]

    split = split_days(settings, history, day)

    assert split.train_days + split.holdout_days == original_days[:21]
    assert usable_days(settings, history, day)[-1] == day


def test_last_n_days_keeps_only_the_recent_training_days(settings, history, original_days):
    everything = split_days(settings, history, settings.original_end)
    s = _policy(settings, window="last_n_days", window_days=10)

    split = split_days(s, history, s.original_end)

    cutoff = split.holdout_days[0] - dt.timedelta(days=10)
    assert split.holdout_days == everything.holdout_days
    assert split.train_days == [d for d in everything.train_days if d >= cutoff]
    assert len(split.train_days) == 10  # the original window is contiguous
    assert len(split.train_days) < len(everything.train_days)


def test_too_few_usable_days_is_a_model_error(settings, history, add_partitions):
    h = settings.holdout_days
    add_partitions(
        settings, daterange(settings.original_start, settings.original_start + dt.timedelta(days=h - 1))
    )

    with pytest.raises(ModelError, match=re.escape(f"{h} usable days, need more than holdout_days={h}")):
        split_days(settings, history, settings.original_end)


def test_time_decay_weights_decrease_with_age(settings, flights_frame):
    s = _policy(settings, window="time_decay", half_life_days=10.0)
    day = dt.date(2013, 1, 31)
    dates = flights_frame.loc[flights_frame["date"].between("2013-01-01", day.isoformat()), "date"]

    w = sample_weights(s, dates, day)

    assert w is not None and len(w) == len(dates)
    by_day = pd.Series(w, index=dates.to_numpy()).groupby(level=0).agg(["min", "max"])
    assert (by_day["min"] == by_day["max"]).all(), "rows of one day must weigh the same"
    assert (np.diff(by_day["max"].to_numpy()) > 0).all(), "older days must weigh strictly less"
    at_day = float(sample_weights(s, pd.Series([day.isoformat()]), day)[0])
    one_half_life = float(sample_weights(s, pd.Series([(day - dt.timedelta(days=10)).isoformat()]), day)[0])
    assert one_half_life == pytest.approx(at_day / 2)


def test_no_weights_outside_time_decay(settings, flights_frame):
    dates = flights_frame["date"].head(10)

    assert sample_weights(settings, dates, dt.date(2013, 1, 31)) is None
    assert sample_weights(_policy(settings, window="last_n_days"), dates, dt.date(2013, 1, 31)) is None


@pytest.fixture
def small_split(settings, add_partitions) -> tuple[pd.DataFrame, pd.DataFrame]:
    train_days = daterange(dt.date(2013, 1, 1), dt.date(2013, 1, 6))
    holdout_days = [dt.date(2013, 1, 7)]
    add_partitions(settings, train_days + holdout_days)
    return read_days(settings, train_days), read_days(settings, holdout_days)


def test_fit_is_deterministic(settings, small_split):
    train, holdout = small_split

    first = predict_proba(fit(settings, train, dt.date(2013, 1, 7), FAST), settings, holdout)
    second = predict_proba(fit(settings, train.copy(), dt.date(2013, 1, 7), FAST), settings, holdout)

    np.testing.assert_array_equal(first, second)
    assert len(np.unique(first)) > 1, "a constant model would be trivially deterministic"


def test_time_decay_fit_uses_the_weights(settings, small_split):
    train, holdout = small_split
    decayed = _policy(settings, window="time_decay", half_life_days=1.0)

    plain = predict_proba(fit(settings, train, dt.date(2013, 1, 7), FAST), settings, holdout)
    weighted = predict_proba(fit(decayed, train, dt.date(2013, 1, 7), FAST), decayed, holdout)

    assert not np.allclose(plain, weighted)


def test_model_handles_unseen_categories_and_missing_values(settings, small_split):
    train, holdout = small_split
    model = fit(settings, train, dt.date(2013, 1, 7), FAST)
    carrier = settings.categorical[0]
    numeric = settings.numeric[0]
    assert "ZZ-unseen" not in set(train[carrier])

    unseen = holdout.copy()
    unseen[carrier] = "ZZ-unseen"
    unseen[numeric] = np.nan
    missing = holdout.copy()
    missing[carrier] = None
    missing[numeric] = np.nan

    p_unseen = predict_proba(model, settings, unseen)
    p_missing = predict_proba(model, settings, missing)

    assert p_unseen.shape == (len(holdout),)
    assert np.isfinite(p_unseen).all() and ((p_unseen >= 0) & (p_unseen <= 1)).all()
    # unseen categories are encoded like missing ones, which the booster has a learned branch for
    np.testing.assert_array_equal(p_unseen, p_missing)


def test_single_class_training_data_is_a_model_error(settings, small_split):
    train, _ = small_split
    one_class = train[train[settings.label] != settings.positive]

    with pytest.raises(ModelError, match="training data has a single class; cannot train"):
        fit(settings, one_class, dt.date(2013, 1, 7), FAST)
