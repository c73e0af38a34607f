"""ml.drift.detect_drift on real flights partitions: drift decisions, overrides, quality, report files, sampling.

Each detect_drift call runs a real Evidently report (~1-2 s); the two expensive baseline runs are shared by
the module. Reports go to a temporary DRIFTWATCH_HOME; the data is read from the real lake.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json

import numpy as np
import pandas as pd
import pytest

from ml import drift
from ml.config import load_settings
from ml.data import batch_files, daterange, read_files
from ml.exceptions import ConfigError, SchemaError

DAY = dt.date(2013, 1, 15)
# features shifted far outside January's range, and categories swapped between frequent and rare values
SHIFTED = {
    "distance": lambda s: s * 3,
    "temp": lambda s: s + 40,
    "dewp": lambda s: s + 40,
    "humid": lambda s: s * 0.3,
    "pressure": lambda s: s + 40,
    "wind_speed": lambda s: s + 25,
    "visib": lambda s: s - 8,
}
SWAPPED = {"carrier": {"UA": "OO", "OO": "UA", "B6": "HA", "HA": "B6"}, "origin": {"EWR": "XYZ"}}
COLUMN_KEYS = {"method", "score", "threshold", "drifted"}
QUALITY_KEYS = {"roc_auc", "roc_auc_se", "accuracy", "f1", "log_loss", "positive_rate", "rows"}


@pytest.fixture(scope="module")
def env(tmp_path_factory, flights_partitions):
    """Flights settings with reports in a temporary home, reading real partitions (tests/conftest.py)."""
    lake = tmp_path_factory.mktemp("lake")
    (lake / "flights").symlink_to(flights_partitions, target_is_directory=True)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DRIFTWATCH_HOME", str(tmp_path_factory.mktemp("home")))
        mp.setenv("DRIFTWATCH_LAKE", str(lake))
        settings = load_settings("flights")
        # pinned, so tuning flights.yaml (drift.columns, thresholds.drift_share) cannot move these tests
        yield settings.with_overrides(
            drift_columns={}, thresholds=dataclasses.replace(settings.thresholds, drift_share=0.5)
        )


@pytest.fixture(scope="module")
def halves(env):
    """Two disjoint random halves of the rows of January 1-14 (about 6,000 rows each)."""
    files = [
        f
        for day in daterange(dt.date(2013, 1, 1), dt.date(2013, 1, 14))
        for f in batch_files(env.partition_dir(day))
    ]
    rows = read_files(files).sample(frac=1.0, random_state=7).reset_index(drop=True)
    middle = len(rows) // 2
    return rows.iloc[:middle].reset_index(drop=True), rows.iloc[middle:].reset_index(drop=True)


def drifted_copy(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.copy()
    for col, shift in SHIFTED.items():
        out[col] = shift(out[col])
    for col, mapping in SWAPPED.items():
        out[col] = out[col].replace(mapping)
    return out


@pytest.fixture(scope="module")
def same(env, halves):
    return drift.detect_drift(env, DAY, current=halves[1], reference=halves[0])


@pytest.fixture(scope="module")
def shifted(env, halves):
    return drift.detect_drift(
        env,
        DAY,
        current=drifted_copy(halves[1]),
        reference=halves[0],
        report_path=env.paths.home / "x" / "r.html",
        render=True,
    )


def test_same_distribution_is_not_drift(same, env):
    assert same["drift_share"] < 0.2
    assert same["dataset_drift"] is False
    assert same["n_features"] == len(env.features)
    assert same["n_drifted"] == len(same["drifted_columns"])


def test_injected_drift_is_detected(shifted, env):
    assert shifted["drift_share"] >= env.thresholds.drift_share
    assert shifted["dataset_drift"] is True
    assert set(SHIFTED) | set(SWAPPED) <= set(shifted["drifted_columns"])
    assert shifted["drifted_columns"] == sorted(c for c, v in shifted["columns"].items() if v["drifted"])
    assert shifted["drift_share"] == pytest.approx(shifted["n_drifted"] / shifted["n_features"])


def test_default_methods_follow_column_types(same, env):
    # Evidently's defaults for a reference above 1,000 rows
    for col in env.numeric:
        assert same["columns"][col]["method"] == "wasserstein", col
    for col in env.categorical:
        assert same["columns"][col]["method"] == "jensenshannon", col
    assert all(v["threshold"] == pytest.approx(0.1) for v in same["columns"].values())


def test_result_keys_and_files(same, env):
    assert tuple(same) == drift.RESULT_KEYS
    assert list(same["columns"]) == env.features
    assert all(set(v) == COLUMN_KEYS for v in same["columns"].values())
    assert same["day"] == DAY.isoformat()
    assert same["prediction_drift"] is None and same["quality"] is None and same["quality_drop"] is None

    # the numbers only: the report with Evidently's figures is rendered when someone opens it
    html = env.report_dir(DAY) / "drift.html"
    assert same["html_path"] is None and not html.exists()
    assert same["json_path"] == str(html.with_name("drift.json"))
    assert json.loads(html.with_name("drift.json").read_text()) == same
    assert html.with_name("drift.json").stat().st_size < 20_000
    assert not list(html.parent.glob(".*.tmp"))


def test_a_rendered_report_shows_the_numbers_of_the_json(shifted, env):
    html = env.paths.home / "x" / "r.html"
    assert shifted["html_path"] == str(html)
    assert json.loads(html.with_name("drift.json").read_text())["dataset_drift"] is True
    text = html.read_text()
    assert "drawDashboard" in text and "Share of Drifted Columns" in text  # Evidently's dashboard
    assert not list(html.parent.glob(".*.tmp"))


def test_column_override_changes_method(env, halves, monkeypatch, tmp_path):
    import evidently

    calls = []
    run = evidently.Report.run

    def spy(self, *args, **kwargs):
        calls.append((args, kwargs))
        return run(self, *args, **kwargs)

    monkeypatch.setattr(evidently.Report, "run", spy)
    settings = env.with_overrides(drift_columns={"temp": {"method": "psi", "threshold": 0.2}})
    quiet = drift.detect_drift(
        settings, DAY, current=halves[1], reference=halves[0], report_path=tmp_path / "a.html"
    )
    assert calls == [] and quiet["columns"]["temp"]["method"] == "psi"  # no report, no figures
    result = drift.detect_drift(
        settings,
        DAY,
        current=halves[1],
        reference=halves[0],
        report_path=tmp_path / "drift.html",
        render=True,
    )
    assert {c: v for c, v in result.items() if c not in ("seconds", "html_path")} == {
        c: v for c, v in quiet.items() if c not in ("seconds", "html_path")
    }

    assert result["columns"]["temp"]["method"] == "psi"
    assert result["columns"]["temp"]["threshold"] == pytest.approx(0.2)
    assert result["columns"]["dewp"]["method"] == "wasserstein"
    # keyword arguments only (current comes first in 0.7), stamped with the logical date, never now
    (args, kwargs) = calls[0]
    assert args == ()
    assert {"current_data", "reference_data"} <= set(kwargs)
    assert kwargs["timestamp"] == dt.datetime(2013, 1, 15, tzinfo=dt.UTC)


def test_calibrated_thresholds_apply_where_the_yaml_gives_none(env, halves, tmp_path):
    from ml import calibration

    reference = halves[0]
    frame = drift._model_columns(env, reference, None)
    cal = calibration.calibrate(
        frame,
        numeric=list(env.numeric),
        categorical=list(env.categorical),
        days=reference["date"],
        methods={},
        false_alarm_rate=0.01,
        drift_share=0.5,
    )
    settings = env.with_overrides(drift_columns={"temp": {"method": "psi", "threshold": 0.2}})

    result = drift.detect_drift(
        settings,
        DAY,
        current=halves[1],
        reference=reference,
        report_path=tmp_path / "d.html",
        calibration=cal,
    )

    assert result["thresholds"] == "calibrated"
    assert result["columns"]["temp"]["method"] == "psi"  # the YAML's threshold wins
    assert result["columns"]["temp"]["threshold"] == pytest.approx(0.2)
    for col in ("dewp", "carrier"):
        assert result["columns"][col]["method"] == cal["columns"][col]["method"]
        assert result["columns"][col]["threshold"] == pytest.approx(cal["columns"][col]["threshold"])
    # one day of weather against 13 others: the calibrated weather thresholds are far above Evidently's 0.1
    assert cal["columns"]["dewp"]["threshold"] > 0.5


def test_bad_override_names_the_key(env, halves):
    settings = env.with_overrides(drift_columns={"temp": {"method": "no_such_test"}})
    with pytest.raises(
        ConfigError, match=r"drift\.columns\.temp\.method: No stattest found of name no_such_test"
    ):
        drift.detect_drift(settings, DAY, current=halves[1], reference=halves[0])
    settings = env.with_overrides(drift_columns={"tmep": {"method": "psi"}})
    with pytest.raises(ConfigError, match=r"drift\.columns\.tmep: not a feature of flights"):
        drift.detect_drift(settings, DAY, current=halves[1], reference=halves[0])


def test_missing_feature_is_a_schema_error(env, halves):
    with pytest.raises(SchemaError, match=r"current lacks features of flights: \['temp'\]"):
        drift.detect_drift(env, DAY, current=halves[1].drop(columns=["temp"]), reference=halves[0])


def test_scores_must_match_rows(env, halves):
    with pytest.raises(ValueError, match=r"current_scores must hold one score per row"):
        drift.detect_drift(env, DAY, current=halves[1], reference=halves[0], current_scores=np.zeros(3))


def test_perfect_scores_give_auc_one_and_quality_drop(env, halves, tmp_path):
    current = halves[1].iloc[:800]
    labels = current[env.label].to_numpy(dtype="float64")
    result = drift.detect_drift(
        env,
        DAY,
        current=current,
        reference=halves[0],
        current_scores=labels,
        champion_holdout={"roc_auc": 0.8},
        report_path=tmp_path / "drift.html",
    )
    quality = result["quality"]
    assert set(quality) == QUALITY_KEYS
    assert quality["roc_auc"] == 1.0
    assert quality["accuracy"] == 1.0 and quality["f1"] == 1.0
    assert quality["rows"] == 800
    assert quality["positive_rate"] == pytest.approx(labels.mean())
    assert result["quality_drop"] == pytest.approx(-0.2)
    assert result["prediction_drift"] is None  # no reference scores to compare with


def test_single_class_batch_has_no_auc(env, halves, tmp_path):
    current = halves[1][halves[1][env.label] == 0].iloc[:500]
    rng = np.random.default_rng(0)
    result = drift.detect_drift(
        env,
        DAY,
        current=current,
        reference=halves[0],
        current_scores=rng.random(len(current)),
        reference_scores=rng.random(len(halves[0])),
        champion_holdout={"roc_auc": 0.8},
        report_path=tmp_path / "drift.html",
    )
    assert result["quality"]["roc_auc"] is None
    assert result["quality"]["positive_rate"] == 0.0
    assert result["quality"]["log_loss"] > 0
    assert result["quality_drop"] is None
    assert result["prediction_drift"] is not None


def test_prediction_drift_flags_shifted_scores(env, halves, tmp_path):
    rng = np.random.default_rng(1)
    reference_scores = rng.beta(2, 5, len(halves[0]))
    unchanged = rng.beta(2, 5, len(halves[1]))
    common = {
        "current": halves[1],
        "reference": halves[0],
        "reference_scores": reference_scores,
        "report_path": tmp_path / "drift.html",
    }

    calm = drift.detect_drift(env, DAY, current_scores=unchanged, **common)
    moved = drift.detect_drift(env, DAY, current_scores=np.clip(unchanged + 0.3, 0, 1), render=True, **common)

    assert set(calm["prediction_drift"]) == COLUMN_KEYS
    assert calm["prediction_drift"]["drifted"] is False
    assert moved["prediction_drift"]["drifted"] is True
    assert moved["prediction_drift"]["score"] > calm["prediction_drift"]["score"]
    # scores are not features: the feature drift share is untouched
    assert moved["drift_share"] == calm["drift_share"]
    # with scores and two label classes on both sides, Evidently's classification metrics are in the report
    assert "RocAuc metric (current)" in (tmp_path / "drift.html").read_text()


def test_sampled_reference_keeps_the_decision(env, halves, same, shifted, monkeypatch, tmp_path):
    monkeypatch.setattr(drift, "MAX_REFERENCE_ROWS", 2000)
    for full, current in ((same, halves[1]), (shifted, drifted_copy(halves[1]))):
        sampled = drift.detect_drift(
            env, DAY, current=current, reference=halves[0], report_path=tmp_path / "drift.html"
        )
        assert sampled["rows_reference"] == len(halves[0])  # as given, before sampling
        assert sampled["dataset_drift"] == full["dataset_drift"]
        assert abs(sampled["drift_share"] - full["drift_share"]) <= 2 / len(env.features)


def test_reference_sample_is_reproducible(monkeypatch):
    monkeypatch.setattr(drift, "MAX_REFERENCE_ROWS", 100)
    first = drift._sample_positions(10_000)
    assert len(first) == 100 and len(set(first.tolist())) == 100
    assert np.array_equal(first, drift._sample_positions(10_000))
