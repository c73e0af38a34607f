"""Calibrated drift thresholds (ml/calibration.py): a drift-free day is flagged at about the configured rate
whatever the batch size, a real shift still is, and days that share a context (one day's weather) widen the
thresholds instead of flagging every day. Pure: Evidently's stat tests, no report, no services."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ml import calibration

NUMERIC = ["x1", "x2", "x3", "x4"]
CATEGORICAL = ["segment"]
RATE, SHARE = 0.01, 0.5


def stream(days: int, rows: int, *, seed: int, shift: float = 0.0, day_effect: float = 0.0) -> pd.DataFrame:
    """`days` daily batches of `rows` rows; `shift` moves x1..x3 by that many standard deviations;
    `day_effect` adds one draw per day and column (rows of a day alike, as one day's weather)."""
    rng = np.random.default_rng(seed)
    frames = []
    for d in range(days):
        frame = pd.DataFrame({c: rng.normal(0, 1, rows) for c in NUMERIC})
        for c in NUMERIC:
            frame[c] += rng.normal(0, day_effect) if day_effect else 0.0
        for c in NUMERIC[:3]:
            frame[c] += shift
        frame["segment"] = rng.choice(["a", "b", "c"], rows, p=[0.5, 0.3, 0.2])
        frame["day"] = f"2024-{1 + d // 28:02d}-{1 + d % 28:02d}"
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def fitted(reference: pd.DataFrame, **kw) -> dict:
    return calibration.calibrate(
        reference,
        numeric=NUMERIC,
        categorical=CATEGORICAL,
        days=reference["day"],
        methods={},
        false_alarm_rate=RATE,
        drift_share=SHARE,
        seed=3,
        **kw,
    )


def flagged(cal: dict, reference: pd.DataFrame, days: pd.DataFrame, thresholds: dict | None = None) -> float:
    """Share of `days` whose drifted share of features reaches SHARE, by Evidently's stat tests."""
    out = []
    for _, batch in days.groupby("day"):
        drifted = 0
        for col in [*NUMERIC, *CATEGORICAL]:
            spec = cal["columns"][col]
            test = calibration._stattest(spec["method"], col in CATEGORICAL)
            score = calibration._score(test, reference[col], batch[col], col in CATEGORICAL)
            limit = spec["threshold"] if thresholds is None else thresholds[spec["method"]]
            drifted += score >= limit
        out.append(drifted / (len(NUMERIC) + len(CATEGORICAL)) >= SHARE)
    return float(np.mean(out))


@pytest.mark.parametrize("rows", [50, 1000])
def test_drift_free_days_are_rarely_flagged_and_a_shift_always_is(rows):
    reference = stream(21, rows, seed=1)
    cal = fitted(reference)

    assert cal["samples"].startswith("21 reference days")
    assert cal["markov_rate"] == pytest.approx(RATE / 2 * SHARE)
    # independent features rarely cross together: each may cross far more often than Markov's bound allows
    assert cal["column_rate"] > 10 * cal["markov_rate"]
    assert {c: v["method"] for c, v in cal["columns"].items()} == {
        **dict.fromkeys(NUMERIC, "wasserstein"),
        "segment": "jensenshannon",
    }
    assert flagged(cal, reference, stream(100, rows, seed=2)) <= 0.01
    assert flagged(cal, reference, stream(10, rows, seed=4, shift=1.5)) == 1.0


def test_evidently_default_thresholds_flag_most_small_batches():
    """The problem calibration solves: 0.1 is below the sampling noise of a 50-row day."""
    reference = stream(21, 50, seed=1)
    cal = fitted(reference)
    defaults = {"wasserstein": 0.1, "jensenshannon": 0.1}

    assert flagged(cal, reference, stream(30, 50, seed=2), thresholds=defaults) > 0.8
    assert all(v["threshold"] > 0.1 for v in cal["columns"].values())


def test_days_alike_within_widen_the_thresholds_instead_of_flagging_every_day():
    iid, clustered = stream(28, 500, seed=1), stream(28, 500, seed=1, day_effect=0.5)
    iid_cal, clustered_cal = fitted(iid), fitted(clustered)

    for col in NUMERIC:
        assert clustered_cal["columns"][col]["threshold"] > 2 * iid_cal["columns"][col]["threshold"]
    assert flagged(clustered_cal, clustered, stream(60, 500, seed=5, day_effect=0.5)) <= 0.02
    # the thresholds calibrated on independent rows would flag such days often
    wrong = {"wasserstein": iid_cal["columns"]["x1"]["threshold"], "jensenshannon": 1.0}
    assert flagged(iid_cal, clustered, stream(60, 500, seed=5, day_effect=0.5), thresholds=wrong) > 0.3


def test_few_days_fall_back_to_random_samples_and_p_value_methods_are_left_alone():
    reference = stream(3, 400, seed=1)

    cal = fitted(reference, batch_rows=100)

    assert (
        cal["samples"]
        == f"{calibration.RANDOM_SAMPLES} random samples of 100 reference rows (fewer than 8 days)"
    )
    assert set(cal["columns"]) == {*NUMERIC, *CATEGORICAL}
    pinned = calibration.calibrate(
        reference,
        numeric=NUMERIC,
        categorical=CATEGORICAL,
        days=None,
        methods={"x1": "ks"},
        false_alarm_rate=RATE,
        drift_share=SHARE,
    )
    assert "x1" not in pinned["columns"] and "p-value" in pinned["skipped"]["x1"]


def test_features_that_move_together_get_the_days_rate_and_independent_ones_more():
    rng = np.random.default_rng(0)
    together = rng.standard_normal((40, 1)) @ np.ones((1, 6))  # six columns as one
    apart = rng.standard_normal((40, 6))

    def rate(z):
        cols = {f"c{i}": z[:, i].tolist() for i in range(z.shape[1])}
        return calibration.common_rate(cols, needed=3, target=0.005, floor=0.0025, seed=1)

    assert rate(together) == pytest.approx(0.005, rel=0.15)
    assert rate(apart) > 0.05
    assert calibration.mean_correlation({f"c{i}": together[:, i] for i in range(6)}) == pytest.approx(1.0)


def test_the_bound_is_never_below_the_largest_null_score_and_widens_with_fewer_samples():
    scores = [0.1, 0.12, 0.09, 0.11, 0.3]
    assert calibration.upper_bound(scores, 0.5) > 0.3
    many = list(np.random.default_rng(0).lognormal(-2, 0.3, 200))
    assert calibration.upper_bound(many[:10], 0.0025) > calibration.upper_bound(many, 0.0025)
    assert calibration.upper_bound([0.0, 0.0, 0.0], 0.01) > 0  # an identical reference: any change drifts
