"""`decide`: collect, bootstrap, retrain or skip, with the reason, from what detect_drift measured and the
history's facts (the last training, the new rows since)."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from ml.data import daterange
from ml.day import Day, RunParams, settings_for
from ml.history import History
from ml.tasks import decide

ROWS_PER_DAY = 900


@pytest.fixture
def history(settings) -> History:
    return History(settings.history_url)


def _crown(
    settings, history: History, version: int, trained_on: dt.date, promoted_on: dt.date | None = None
) -> None:
    """A champion as the pipeline leaves it: the model row and the alias event (no MLflow)."""
    history.put_model(
        settings.name,
        version,
        trained_on=trained_on.isoformat(),
        run_id=f"run-{version}",
        holdout_metrics={"roc_auc": 0.7},
    )
    history.add_alias_event(
        dataset=settings.name,
        model=settings.registered_model,
        alias="champion",
        logical_date=(promoted_on or trained_on).isoformat(),
        before_version=None,
        after_version=version,
        reason="test champion",
    )


def _accept(settings, history: History, days, rows: int = ROWS_PER_DAY) -> None:
    for day in days:
        history.start_day(settings.name, day, status="accepted", rows=rows)


def _measure(
    settings, history: History, day: dt.date, drift_share: float | None, quality_drop: float | None = None
):
    history.update_day(settings.name, day, drift_share=drift_share, quality_drop=quality_drop)


def _decide(settings, day, *, force: bool = False, overrides: dict | None = None) -> dict:
    """The decide task, given the detect_drift output that `_measure` stood in for (what it recorded)."""
    params = RunParams(force_retrain=force, **{k: v for k, v in (overrides or {}).items() if v is not None})
    d = Day.of(settings, day, params=params)
    drift = {k: v for k, v in d.row().items() if k in ("drift_share", "quality_drop") and v is not None}
    return decide.run(d, drift=drift or None)


@pytest.fixture
def champion_day(settings, history) -> dt.date:
    """Version 1 became champion on the window's last day; accepted days since, enough rows, past cooldown."""
    end = settings.original_end
    _crown(settings, history, 1, end)
    day = end + dt.timedelta(days=settings.thresholds.cooldown_days + 7)
    _accept(settings, history, daterange(end + dt.timedelta(days=1), day))
    assert (day - end).days * ROWS_PER_DAY >= settings.thresholds.min_new_rows
    return day


def test_no_champion_before_the_window_ends_collects(settings, history):
    day = settings.original_end - dt.timedelta(days=3)

    out = _decide(settings, day)

    assert out == {
        "next": "skip_retrain",
        "retrain": False,
        "bootstrap": False,
        "decision": "collect",
        "reason": out["reason"],
    }
    assert "collecting" in out["reason"]
    assert history.get_day(settings.name, day)["decision"] == "collect"


def test_no_champion_on_the_window_end_bootstraps(settings, history):
    out = _decide(settings, settings.original_end)

    assert out["retrain"] is True and out["bootstrap"] is True
    assert "bootstrap" in out["reason"]
    assert history.get_day(settings.name, settings.original_end)["decision"] == "bootstrap"


def test_no_champion_after_the_window_end_still_bootstraps(settings, history):
    day = settings.original_end + dt.timedelta(days=1)

    out = _decide(settings, day)

    assert out["bootstrap"] is True


def test_champion_promoted_today_does_not_serve_today(settings, history):
    """The champion of a day is the one in force after the previous day's run."""
    _crown(settings, history, 1, settings.original_end)

    assert Day.of(settings, settings.original_end).serving_champion() is None
    assert Day.of(settings, settings.original_end + dt.timedelta(days=1)).serving_champion() == 1
    assert _decide(settings, settings.original_end)["bootstrap"] is True


def test_feature_share_over_the_threshold_retrains(settings, history, champion_day):
    limit = settings.thresholds.drift_share
    _measure(settings, history, champion_day, drift_share=min(1.0, limit + 0.1))

    out = _decide(settings, champion_day)

    assert out["retrain"] is True and out["bootstrap"] is False
    assert out["reason"].startswith("retrain: drift share")


def test_quality_drop_over_the_threshold_retrains(settings, history, champion_day):
    _measure(
        settings, history, champion_day, drift_share=0.0, quality_drop=settings.thresholds.quality_drop + 0.01
    )

    out = _decide(settings, champion_day)

    assert out["retrain"] is True
    assert "AUC drop" in out["reason"]


def test_feature_share_under_the_threshold_skips_with_the_numbers(settings, history, champion_day):
    limit = settings.thresholds.drift_share
    share, drop = round(limit / 2, 2), round(settings.thresholds.quality_drop / 2, 3)
    _measure(settings, history, champion_day, drift_share=share, quality_drop=drop)

    out = _decide(settings, champion_day)

    assert out["retrain"] is False
    assert out["reason"].startswith("no retrain")
    assert f"{share:.2f} < {limit}" in out["reason"]
    assert f"{drop:.3f} < {settings.thresholds.quality_drop}" in out["reason"]
    assert history.get_day(settings.name, champion_day)["decision"] == "skip"


def test_nothing_measured_skips(settings, history, champion_day):
    out = _decide(settings, champion_day)

    assert out["retrain"] is False
    assert "no drift measured" in out["reason"]


def test_cooldown_blocks_a_triggered_retrain(settings, history, champion_day):
    cooldown = settings.thresholds.cooldown_days
    trained_on = champion_day - dt.timedelta(days=cooldown - 1)
    history.put_model(settings.name, 2, trained_on=trained_on.isoformat())  # a rejected challenger counts too
    _measure(settings, history, champion_day, drift_share=1.0)

    out = _decide(settings, champion_day)

    assert out["retrain"] is False
    assert "cooldown" in out["reason"]
    assert f"{cooldown - 1} of {cooldown} days since training on {trained_on}" in out["reason"]


def test_cooldown_ends_after_cooldown_days(settings, history, champion_day):
    trained_on = champion_day - dt.timedelta(days=settings.thresholds.cooldown_days)
    history.put_model(settings.name, 2, trained_on=trained_on.isoformat())
    _measure(settings, history, champion_day, drift_share=1.0)
    t = settings.thresholds
    assert (champion_day - trained_on).days * ROWS_PER_DAY >= t.min_new_rows

    assert _decide(settings, champion_day)["retrain"] is True


def test_too_few_new_rows_block_a_retrain(settings, history):
    end = settings.original_end
    _crown(settings, history, 1, end)
    day = end + dt.timedelta(days=settings.thresholds.cooldown_days + 1)
    rows = settings.thresholds.min_new_rows // 4
    _accept(settings, history, [day - dt.timedelta(days=1), day], rows=rows)
    history.start_day(settings.name, day - dt.timedelta(days=2), status="quarantined", rows=50_000)
    _measure(settings, history, day, drift_share=1.0)

    out = _decide(settings, day)

    assert out["retrain"] is False
    assert (
        f"only {2 * rows} new rows since {end} (minimum {settings.thresholds.min_new_rows})" in out["reason"]
    )


def test_force_bypasses_thresholds_cooldown_and_rows(settings, history):
    end = settings.original_end
    _crown(settings, history, 1, end)
    day = end + dt.timedelta(days=1)
    _measure(settings, history, day, drift_share=0.0)
    assert _decide(settings, day)["retrain"] is False

    out = _decide(settings, day, force=True)

    assert out["retrain"] is True and out["bootstrap"] is False
    assert "force" in out["reason"]
    assert history.get_day(settings.name, day)["decision"] == "retrain"


def test_share_override_changes_the_outcome(settings, history, champion_day):
    limit = settings.thresholds.drift_share
    share = round(limit * 0.8, 2)
    _measure(settings, history, champion_day, drift_share=share)
    assert _decide(settings, champion_day)["retrain"] is False

    out = _decide(settings, champion_day, overrides={"drift_share": share - 0.1, "quality_drop": None})

    assert out["retrain"] is True
    assert f">= {share - 0.1}" in out["reason"]


def test_quality_drop_override_of_zero_retrains_on_any_drop(settings, history, champion_day):
    """The DAG's quality_drop param allows 0.0 ("retrain on any AUC drop"); 0.0 is an override, not unset."""
    drop = settings.thresholds.quality_drop / 5
    _measure(settings, history, champion_day, drift_share=0.0, quality_drop=drop)
    assert _decide(settings, champion_day)["retrain"] is False

    out = _decide(settings, champion_day, overrides={"drift_share": None, "quality_drop": 0.0})

    assert out["retrain"] is True, out["reason"]


def test_threshold_from_settings_is_used(settings, history, champion_day):
    share = round(settings.thresholds.drift_share * 0.8, 2)
    _measure(settings, history, champion_day, drift_share=share)
    lower = settings.with_overrides(thresholds=dataclasses.replace(settings.thresholds, drift_share=share))

    assert _decide(settings, champion_day)["retrain"] is False
    assert _decide(lower, champion_day)["retrain"] is True


def test_decide_writes_decision_and_reason_in_the_days_row(settings, history, champion_day):
    _measure(settings, history, champion_day, drift_share=1.0)

    out = _decide(settings, champion_day)

    row = history.get_day(settings.name, champion_day)
    assert row["decision"] == "retrain"
    assert row["reason"] == out["reason"]
    assert row["status"] == "accepted" and row["drift_share"] == 1.0  # merged, not replaced


def test_decide_by_dataset_name_uses_the_environment(settings, history, monkeypatch):
    monkeypatch.setenv("DRIFTWATCH__THRESHOLDS__DRIFT_SHARE", "0.2")
    settings_for.cache_clear()
    end = settings.original_end
    _crown(settings, history, 1, end)
    day = end + dt.timedelta(days=settings.thresholds.cooldown_days + 7)
    _accept(settings, history, daterange(end + dt.timedelta(days=1), day))
    _measure(settings, history, day, drift_share=0.3)

    out = _decide(settings.name, day.isoformat())

    assert out["retrain"] is True
    assert ">= 0.2" in out["reason"]


def test_rerun_of_a_day_that_trained_reproduces_its_decision(settings, history, champion_day):
    """Re-running a day (or a backfill) must reach the same decision: the challenger that the first run
    trained on that day is not an earlier training that starts a cooldown."""
    _measure(settings, history, champion_day, drift_share=1.0)
    first = _decide(settings, champion_day)
    assert first["retrain"] is True
    history.put_model(settings.name, 2, trained_on=champion_day.isoformat())  # what train_challenger records

    again = _decide(settings, champion_day)

    assert again == first


def test_later_trainings_do_not_affect_an_earlier_day(settings, history, champion_day):
    _measure(settings, history, champion_day, drift_share=1.0)
    history.put_model(settings.name, 3, trained_on=(champion_day + dt.timedelta(days=2)).isoformat())

    assert _decide(settings, champion_day)["retrain"] is True
