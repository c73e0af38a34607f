"""The retrain policies as pure calculators: signals and facts in, a decision and its reason out."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from ml.config import Thresholds
from ml.policy import DriftTriggered, Facts, Forced, Scheduled, Signals, parse

DAY = dt.date(2013, 3, 1)
T = Thresholds(drift_share=0.5, quality_drop=0.05, cooldown_days=14, min_new_rows=3000)
DRIFT = DriftTriggered(T, 0.9)


def _facts(last_days_ago: int | None = 30, new_rows: int = 10_000) -> Facts:
    last = None if last_days_ago is None else DAY - dt.timedelta(days=last_days_ago)
    return Facts(day=DAY, last_trained=last, new_rows=new_rows)


@pytest.mark.parametrize(
    ("signals", "retrain", "reason"),
    [
        (Signals(), False, "no retrain: no drift measured"),
        (
            Signals(drift_share=0.4, quality_drop=0.01),
            False,
            "no retrain: drift share 0.40 < 0.5; AUC drop 0.010 < 0.05",
        ),
        (Signals(drift_share=0.5), True, "retrain: drift share 0.50 >= 0.5; 10000 new rows since 2013-01-30"),
        (
            Signals(drift_share=0.1, quality_drop=0.06),
            True,
            "retrain: AUC drop 0.060 >= 0.05; 10000 new rows since 2013-01-30",
        ),
        (
            Signals(bias_violation="origin gap +0.15"),
            True,
            "retrain: bias drift (origin gap +0.15); 10000 new rows since 2013-01-30",
        ),
        (
            Signals(attribution_ndcg=0.8),
            True,
            "retrain: attribution nDCG 0.80 < 0.9; 10000 new rows since 2013-01-30",
        ),
    ],
)
def test_drift_triggered_retrains_on_any_signal_past_its_threshold(signals, retrain, reason):
    assert DRIFT.decide(signals, _facts()) == (decision := DRIFT.decide(signals, _facts()))
    assert (decision.retrain, decision.reason) == (retrain, reason)


def test_drift_triggered_respects_the_cooldown_and_the_new_rows():
    drifted = Signals(drift_share=0.9)

    cooling = DRIFT.decide(drifted, _facts(last_days_ago=13))
    empty = DRIFT.decide(drifted, _facts(new_rows=0))
    few = DRIFT.decide(drifted, _facts(new_rows=2999))
    ready = DRIFT.decide(drifted, _facts(last_days_ago=14, new_rows=3000))

    assert not cooling.retrain and cooling.reason.endswith(
        "but in cooldown: 13 of 14 days since training on 2013-02-16"
    )
    assert not empty.retrain and empty.reason.endswith(
        "but no new labelled rows since training on 2013-01-30"
    )
    assert not few.retrain and few.reason.endswith("but only 2999 new rows since 2013-01-30 (minimum 3000)")
    assert ready.retrain


def test_drift_triggered_takes_the_datasets_thresholds_unless_given():
    mine = DriftTriggered().for_dataset(T, 0.9)
    given = DriftTriggered(dataclasses.replace(T, drift_share=0.2)).for_dataset(T, 0.9)

    assert mine == DRIFT
    assert given.thresholds.drift_share == 0.2
    with pytest.raises(ValueError, match="no thresholds"):
        DriftTriggered().decide(Signals(), _facts())


@pytest.mark.parametrize(
    ("every", "days_ago", "due"), [(7, 7, True), (7, 6, False), (1, 1, True), (1, 0, False)]
)
def test_scheduled_retrains_n_days_after_the_last_training(every, days_ago, due):
    decision = Scheduled(every).decide(Signals(drift_share=1.0), _facts(last_days_ago=days_ago))

    assert decision.retrain is due
    label = "every day" if every == 1 else f"every {every} days"
    assert decision.reason.startswith(
        f"{label}: {'scheduled retrain' if due else 'not scheduled'} ({days_ago} days"
    )


def test_never_and_no_training_yet_retrain_nothing():
    assert not Scheduled(None).decide(Signals(drift_share=1.0), _facts(last_days_ago=365)).retrain
    first = Scheduled(1).decide(Signals(), _facts(last_days_ago=None))
    assert (first.retrain, first.reason) == (False, "every day: not scheduled (no training yet)")


def test_forced_always_retrains_and_reads_no_signal():
    assert (
        Forced().decide(Signals(), _facts(last_days_ago=0, new_rows=0)).reason
        == "forced by the force_retrain parameter"
    )
    assert [p.reads_signals for p in (parse("drift"), parse("every-7"), parse("never"), Forced())] == [
        True,
        False,
        False,
        False,
    ]


def test_new_data_is_counted_in_days_so_small_batches_retrain_too():
    policy = DriftTriggered(dataclasses.replace(T, min_new_rows=0), 0.9, min_new_days=7)
    small = Facts(day=DAY, last_trained=DAY - dt.timedelta(days=30), new_rows=60 * 6, new_days=6)

    waiting = policy.decide(Signals(drift_share=1.0), small)
    enough = policy.decide(Signals(drift_share=1.0), dataclasses.replace(small, new_rows=420, new_days=7))

    assert not waiting.retrain
    assert "only 6 new labelled days since 2013-01-30 (minimum 7: thresholds.min_new_days" in waiting.reason
    assert enough.retrain and "420 new rows" in enough.reason


def test_an_auc_drop_within_the_days_noise_does_not_trigger_with_a_false_alarm_rate():
    calibrated = DriftTriggered(T, 0.9, false_alarm_rate=0.01)
    z = 2.5758  # one-sided at 0.5%: half the rate
    small_day = Signals(drift_share=0.0, quality_drop=0.15, quality_se=0.07)  # 60 rows: se ~0.07
    large_day = Signals(drift_share=0.0, quality_drop=0.15, quality_se=0.02)

    noisy = calibrated.decide(small_day, _facts())
    assert not noisy.retrain
    assert f"within the day's noise (< {z * 0.07:.3f}: 0.070 standard error)" in noisy.reason
    assert calibrated.decide(large_day, _facts()).retrain
    assert DRIFT.decide(small_day, _facts()).retrain  # without a rate: quality_drop alone, as before
    assert calibrated.noise_floor(None) is None and DRIFT.noise_floor(0.07) is None


def test_novelty_triggers_only_when_given():
    assert DRIFT.decide(Signals(novelty="x.parquet: column 'dest' ..."), _facts()).reason.startswith(
        "retrain: novelty (x.parquet: column 'dest' ...)"
    )
