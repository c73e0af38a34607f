"""The synthetic stream adapter: deterministic, drift where and how the YAML says, a dataset like any other."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from ml.config import load_settings
from ml.datasets import synthetic
from ml.exceptions import ConfigError

NAME = "synthetic_abrupt"
ONSET = dt.date(2024, 2, 15)


@pytest.fixture
def syn(dw_env):
    return load_settings(NAME)


def _with(monkeypatch, **env: str):
    for key, value in env.items():
        monkeypatch.setenv(f"DRIFTWATCH__{key}", value)
    return load_settings(NAME)


def test_bundled_yaml_loads_through_load_settings(syn):
    stream = synthetic.stream_spec(syn)
    assert syn.source == "synthetic"
    assert stream.drift.kind == "covariate" and stream.drift.speed == "abrupt" and stream.drift.onset == ONSET
    assert {f.name for f in stream.features} == set(syn.features)
    assert syn.original_start == stream.start < syn.original_end < ONSET <= stream.end


def test_environment_overrides_reach_the_drift_section(dw_env, monkeypatch):
    s = _with(
        monkeypatch,
        SYNTHETIC__DRIFT__KIND="concept",
        SYNTHETIC__DRIFT__COEF="{x1: -1.2}",
        SYNTHETIC__DRIFT__SPEED="gradual",
    )
    d = synthetic.stream_spec(s).drift
    assert (d.kind, d.speed, dict(d.coef)) == ("concept", "gradual", {"x1": -1.2})


def test_a_day_is_the_same_whatever_else_is_generated(syn):
    stream = synthetic.stream_spec(syn)
    day = dt.date(2024, 2, 10)
    first = synthetic.generate_day(syn, stream, day)
    synthetic.generate_day(syn, stream, dt.date(2024, 2, 9))
    again = synthetic.generate_day(syn, stream, day)
    assert first.equals(again)
    assert list(first.columns) == syn.columns
    assert len(first) == stream.rows_per_day
    assert (first[syn.date_column] == day.isoformat()).all()
    assert set(first[syn.label].unique()) == {0, 1}
    assert not first.equals(synthetic.generate_day(syn, stream, dt.date(2024, 2, 11)))


def test_abrupt_covariate_drift_moves_the_shifted_features_on_the_onset_day(syn):
    stream = synthetic.stream_spec(syn)
    before = synthetic.generate_day(syn, stream, ONSET - dt.timedelta(days=1))
    after = synthetic.generate_day(syn, stream, ONSET)
    for col, shift in stream.drift.shift.items():
        assert after[col].mean() - before[col].mean() == pytest.approx(shift, abs=0.2)
    # an unshifted feature stays where it was
    assert abs(after["x3"].mean() - before["x3"].mean()) < 0.2


def test_gradual_drift_ramps_linearly(dw_env, monkeypatch):
    s = _with(monkeypatch, SYNTHETIC__DRIFT__SPEED="gradual", SYNTHETIC__DRIFT__RAMP_DAYS="10")
    stream = synthetic.stream_spec(s)
    weights = [synthetic.drift_weight(stream, ONSET + dt.timedelta(days=i)) for i in range(-2, 12)]
    assert weights[:2] == [0.0, 0.0]
    assert weights[2] == pytest.approx(0.1) and weights[6] == pytest.approx(0.5)
    assert weights[11:] == [1.0, 1.0, 1.0]
    assert all(a <= b for a, b in zip(weights, weights[1:], strict=False))
    mid = synthetic.generate_day(s, stream, ONSET + dt.timedelta(days=4))
    assert mid["x1"].mean() == pytest.approx(0.5 * stream.drift.shift["x1"], abs=0.15)


def test_concept_drift_changes_the_label_rule_not_the_features(dw_env, monkeypatch):
    s = _with(monkeypatch, SYNTHETIC__DRIFT__KIND="concept", SYNTHETIC__DRIFT__COEF="{x1: -1.2}")
    stream = synthetic.stream_spec(s)
    before = synthetic.generate_day(s, stream, ONSET - dt.timedelta(days=1))
    after = synthetic.generate_day(s, stream, ONSET)
    assert abs(after["x1"].mean() - before["x1"].mean()) < 0.2
    corr = lambda f: np.corrcoef(f["x1"], f[s.label])[0, 1]  # noqa: E731
    assert corr(before) > 0.2 and corr(after) < -0.2


def test_no_drift_stream_is_stationary(dw_env, monkeypatch):
    s = _with(monkeypatch, SYNTHETIC__DRIFT="{kind: none}")
    stream = synthetic.stream_spec(s)
    assert stream.drift.onset is None
    assert synthetic.drift_weight(stream, stream.end) == 0.0
    first, last = (synthetic.generate_day(s, stream, d) for d in (stream.start, stream.end))
    assert abs(first["x1"].mean() - last["x1"].mean()) < 0.2


@pytest.mark.parametrize(
    ("env", "match"),
    [
        ({"SYNTHETIC__FEATURES__X1": "{dist: poisson}"}, r"synthetic\.features\.x1\.dist: expected one of"),
        (
            {"SYNTHETIC__DRIFT__ONSET": "2030-01-01"},
            r"synthetic\.drift\.onset: 2030-01-01 is outside the stream",
        ),
        ({"SYNTHETIC__DRIFT__KIND": "sideways"}, r"synthetic\.drift\.kind: expected one of"),
        (
            {"SYNTHETIC__DRIFT__SHIFT": "{segment: 1.0}"},
            r"synthetic\.drift\.shift: \['segment'\] are not numeric",
        ),
        (
            {"SYNTHETIC__FEATURES__SEGMENT": "{dist: categorical, values: [a, b], p: [0.9, 0.2]}"},
            r"synthetic\.features\.segment\.p: probabilities must be >= 0 and sum to 1",
        ),
        ({"FEATURES__NUMERIC": "[x1, x2, x3, x4]"}, r"must be the YAML's features .*extra: \['x5'\]"),
    ],
)
def test_bad_synthetic_config_is_rejected_naming_the_key(dw_env, monkeypatch, env, match):
    s = _with(monkeypatch, **env)
    with pytest.raises(ConfigError, match=match):
        synthetic.stream_spec(s)


def test_unknown_top_level_key_is_still_rejected(tmp_path, dw_env):
    path = tmp_path / "x.yaml"
    text = (load_settings(NAME).yaml_path.read_text()) + "\nsyntheticc: {}\n"
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"unknown keys \['syntheticc'\]"):
        load_settings(path)


def test_prepare_writes_partitions_that_pass_validation(dw_env, monkeypatch):
    from ml import validation
    from ml.cli import main
    from ml.data import available_days, read_days

    s = _with(
        monkeypatch, SYNTHETIC__DAYS="25", SYNTHETIC__ROWS_PER_DAY="300", SYNTHETIC__DRIFT__ONSET="2024-01-20"
    )
    assert main(["prepare", NAME]) == 0
    days = available_days(s)
    assert days == [s.original_start + dt.timedelta(days=i) for i in range(25)]
    again = synthetic.prepare(s, progress=False)
    assert (again.days_written, again.days_skipped) == (0, 25)
    reference = read_days(s, days[:14])
    for day in (days[0], days[-1]):
        result = validation.validate_batch(s, day, reference=reference)
        assert result.success, result.summary()
    # and the validation does catch a broken synthetic batch
    broken = synthetic.generate_day(s, synthetic.stream_spec(s), days[-1]).drop(columns=["x2"])
    checked = validation.validate_frame(s, broken, day=days[-1], files=[], reference=reference)
    assert not checked.success and "x2" in checked.summary()
    # the lake reads as one hive-partitioned dataset: the `date=` folder and the date column agree
    import pandas as pd

    whole = pd.read_parquet(s.lake_dir)
    assert len(whole) == 25 * 300 and whole["date"].astype(str).nunique() == 25
    assert read_days(s, days[:1])["date"].map(type).eq(str).all()  # plain strings for the pipeline


def test_a_day_effect_moves_a_days_rows_together(dw_env, monkeypatch):
    plain = _with(monkeypatch, SYNTHETIC__DAY_EFFECT="0")
    alike = _with(monkeypatch, SYNTHETIC__DAY_EFFECT="0.5")
    days = [synthetic.stream_spec(plain).start + dt.timedelta(days=i) for i in range(12)]
    means = {
        name: [synthetic.generate_day(s, synthetic.stream_spec(s), d)["x3"].mean() for d in days]
        for name, s in (("plain", plain), ("alike", alike))
    }
    import numpy as np

    assert np.std(means["alike"]) > 5 * np.std(means["plain"])  # 1,000 rows: day means within ~0.03
    a, b = (synthetic.generate_day(s, synthetic.stream_spec(s), days[0]) for s in (plain, alike))
    assert (a["segment"] == b["segment"]).all() and (a["label"] == b["label"]).mean() > 0.5


def test_the_dataset_gets_its_own_dag_spec(dw_env):
    from ml.catalog import dag_specs

    specs = {spec.dataset: spec for spec in dag_specs()}
    assert specs[NAME].dag_id == f"retraining_pipeline__{NAME}"
    assert specs[NAME].start_date == dt.date(2024, 1, 1)
