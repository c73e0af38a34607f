"""Dataset settings: the bundled YAML, environment overrides, and rejection of bad values by key path."""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from pathlib import Path

import pytest
import yaml

from ml.catalog import dag_specs
from ml.config import BUNDLED_DATASETS, list_datasets, load_settings
from ml.exceptions import ConfigError

pytestmark = pytest.mark.usefixtures("dw_env")

FLIGHTS_YAML = BUNDLED_DATASETS / "flights.yaml"


def _raw() -> dict:
    return yaml.safe_load(FLIGHTS_YAML.read_text())


def _write(tmp_path: Path, raw: dict) -> Path:
    path = tmp_path / "flights.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def test_flights_yaml_loads_with_typed_values():
    raw = _raw()
    s = load_settings("flights")

    assert s.name == raw["name"]
    assert s.numeric == tuple(raw["features"]["numeric"])
    assert s.categorical == tuple(raw["features"]["categorical"])
    assert s.features == [*raw["features"]["numeric"], *raw["features"]["categorical"]]
    assert s.label == raw["label"]["column"]
    assert s.positive == raw["label"]["positive"]
    assert s.label not in s.features
    assert type(s.original_start) is dt.date and type(s.original_end) is dt.date
    assert s.original_start == raw["original_window"]["start"]
    assert s.original_end == raw["original_window"]["end"]
    assert s.original_start < s.original_end
    assert type(s.holdout_days) is int and s.holdout_days == raw["holdout_days"]

    t = s.thresholds
    for name in (
        "drift_share",
        "quality_drop",
        "min_delta",
        "logloss_tolerance",
        "min_bootstrap_auc",
        "confidence",
    ):
        assert type(getattr(t, name)) is float, name
        assert getattr(t, name) == raw["thresholds"][name], name
    for name in ("cooldown_days", "min_new_rows", "bootstrap_resamples"):
        assert type(getattr(t, name)) is int, name
        assert getattr(t, name) == raw["thresholds"][name], name
    assert dict(s.training.params) == raw["training"]["params"]
    assert s.validation.ranges["distance"] == tuple(float(x) for x in raw["validation"]["ranges"]["distance"])


def test_settings_live_under_the_configured_home(dw_env):
    s = load_settings("flights")

    assert s.paths.home == dw_env.resolve()
    assert s.lake_dir.is_relative_to(dw_env.resolve())
    assert s.history_url.endswith(str(dw_env / "driftwatch.db"))
    assert s.tracking_uri.endswith(str(dw_env / "mlflow.db"))


def test_env_override_applies(monkeypatch):
    baseline = load_settings("flights").thresholds.drift_share
    monkeypatch.setenv("DRIFTWATCH__THRESHOLDS__DRIFT_SHARE", "0.3")

    s = load_settings("flights")

    assert baseline != 0.3
    assert s.thresholds.drift_share == 0.3
    assert type(s.thresholds.drift_share) is float


def test_env_override_through_the_environ_argument_does_not_leak():
    s = load_settings("flights", environ={"DRIFTWATCH__THRESHOLDS__COOLDOWN_DAYS": "3"})

    assert s.thresholds.cooldown_days == 3
    assert load_settings("flights").thresholds.cooldown_days == _raw()["thresholds"]["cooldown_days"]


def test_bad_env_override_is_rejected_with_its_key_path(monkeypatch):
    monkeypatch.setenv("DRIFTWATCH__THRESHOLDS__DRIFT_SHARE", "1.5")

    with pytest.raises(
        ConfigError, match=r"thresholds\.drift_share: expected a share in \(0, 1\]\. Got 1\.5"
    ):
        load_settings("flights")


def test_holdout_longer_than_the_window_is_rejected(tmp_path):
    raw = _raw()
    window_days = (raw["original_window"]["end"] - raw["original_window"]["start"]).days + 1
    raw["holdout_days"] = window_days
    path = _write(tmp_path, raw)

    with pytest.raises(
        ConfigError,
        match=re.escape(
            f"{path}: holdout_days: must be at least 1 and shorter than the original window "
            f"({window_days} days). Got {window_days}."
        ),
    ):
        load_settings(path)


def test_share_threshold_above_one_is_rejected(tmp_path):
    raw = _raw()
    raw["thresholds"]["drift_share"] = 1.5
    path = _write(tmp_path, raw)

    with pytest.raises(
        ConfigError, match=re.escape(f"{path}: thresholds.drift_share: expected a share in (0, 1]. Got 1.5")
    ):
        load_settings(path)


def test_unknown_key_in_thresholds_is_rejected(tmp_path):
    raw = _raw()
    raw["thresholds"]["drfit_share"] = 0.3
    path = _write(tmp_path, raw)

    with pytest.raises(ConfigError, match=re.escape(f"{path}: thresholds: unknown keys ['drfit_share']")):
        load_settings(path)


def test_misspelled_top_level_key_is_rejected(tmp_path):
    """A typo in a section name must not silently fall back to every default of that section."""
    raw = _raw()
    raw["treshold"] = raw.pop("thresholds")
    path = _write(tmp_path, raw)

    with pytest.raises(ConfigError, match=re.escape(f"{path}: unknown keys ['treshold']")):
        load_settings(path)


def test_misspelled_env_override_is_rejected(monkeypatch):
    monkeypatch.setenv("DRIFTWATCH__TRESHOLDS__COOLDOWN_DAYS", "1")

    with pytest.raises(ConfigError, match=re.escape("unknown keys ['tresholds']")):
        load_settings("flights")


def test_non_numeric_threshold_is_rejected(tmp_path):
    raw = _raw()
    raw["thresholds"]["cooldown_days"] = "a week"
    path = _write(tmp_path, raw)

    with pytest.raises(
        ConfigError, match=re.escape("thresholds.cooldown_days: expected an integer. Got 'a week'")
    ):
        load_settings(path)


def test_window_ending_before_it_starts_is_rejected(tmp_path):
    raw = _raw()
    start = raw["original_window"]["start"]
    raw["original_window"]["end"] = start - dt.timedelta(days=1)
    path = _write(tmp_path, raw)

    with pytest.raises(
        ConfigError,
        match=re.escape(
            f"{path}: original_window: end {start - dt.timedelta(days=1)} is before start {start}."
        ),
    ):
        load_settings(path)


def test_feature_both_numeric_and_categorical_is_rejected(tmp_path):
    raw = _raw()
    shared = raw["features"]["numeric"][0]
    raw["features"]["categorical"].append(shared)
    path = _write(tmp_path, raw)

    with pytest.raises(
        ConfigError,
        match=re.escape(f"{path}: features: ['{shared}'] listed as both numeric and categorical."),
    ):
        load_settings(path)


def test_unknown_dataset_lists_the_known_ones():
    known = list_datasets()
    assert "flights" in known

    with pytest.raises(
        ConfigError,
        match=re.escape("dataset 'no-such-dataset': no file") + ".*" + re.escape(f"Known datasets: {known}."),
    ):
        load_settings("no-such-dataset")


def test_dag_specs_list_flights_as_retraining_pipeline():
    specs = {spec.dataset: spec for spec in dag_specs()}
    s = load_settings("flights")

    assert "flights" in specs
    spec = specs["flights"]
    assert spec.dag_id == "retraining_pipeline"
    assert spec.start_date == s.start_date
    assert spec.thresholds == {**dataclasses.asdict(s.thresholds), "min_new_days": s.min_new_days}
    assert spec.wait_timeout_s == s.wait.timeout_minutes * 60
    assert spec.poke_s == s.wait.poke_seconds
    assert (spec.retries, spec.retry_delay_s) == (s.retries.count, s.retries.delay_seconds)


def test_dag_specs_see_the_same_defaults_and_env_overrides_as_the_settings(tmp_path, monkeypatch):
    raw = _raw()
    raw["thresholds"].pop("min_new_rows")
    raw.pop("wait", None)
    (tmp_path / "flights.yaml").write_text(yaml.safe_dump(raw))
    monkeypatch.setenv("DRIFTWATCH_DATASETS", str(tmp_path))
    monkeypatch.setenv("DRIFTWATCH__WAIT__TIMEOUT_MINUTES", "5")
    monkeypatch.setenv("DRIFTWATCH__RETRIES__DELAY_SECONDS", "2")

    (spec,) = dag_specs()
    s = load_settings("flights")

    assert spec.thresholds["min_new_rows"] == s.thresholds.min_new_rows == 0
    assert spec.thresholds["min_new_days"] == s.min_new_days == s.holdout_days == 7
    assert spec.wait_timeout_s == s.wait.timeout_minutes * 60 == 300
    assert spec.retry_delay_s == s.retries.delay_seconds == 2
    assert spec.earlier_days_timeout_s == s.wait.earlier_days_timeout_minutes * 60


def test_dag_specs_name_a_dag_per_yaml_with_a_default_dag_id(tmp_path, monkeypatch):
    raw = _raw()
    raw.pop("dag_id")
    raw["name"] = "flights_copy"
    (tmp_path / "flights_copy.yaml").write_text(yaml.safe_dump(raw))
    (tmp_path / "flights.yaml").write_text(FLIGHTS_YAML.read_text())
    monkeypatch.setenv("DRIFTWATCH_DATASETS", str(tmp_path))

    ids = {spec.dataset: spec.dag_id for spec in dag_specs()}

    assert ids == {"flights": "retraining_pipeline", "flights_copy": "retraining_pipeline__flights_copy"}
    assert load_settings("flights_copy").dag_id == ids["flights_copy"]


def test_flights_declares_the_model_monitors():
    s = load_settings("flights")
    raw = _raw()["monitoring"]
    assert s.monitoring.bias.segments == tuple(raw["bias"]["segments"])
    assert s.monitoring.bias.action == raw["bias"]["action"]
    assert s.monitoring.attribution.min_ndcg == raw["attribution"]["min_ndcg"]
    assert s.label_delay_days == _raw()["label_delay_days"]
    assert s.labels_known(dt.date(2013, 3, 1), dt.date(2013, 3, 1)) == (s.label_delay_days == 0)


@pytest.mark.parametrize(
    "path, value, match",
    [
        (("monitoring", "bias", "segments"), ["origin", "gate"], r"monitoring\.bias\.segments: \['gate'\]"),
        (
            ("monitoring", "bias", "action"),
            "page",
            r"monitoring\.bias\.action: expected one of record \| alert",
        ),
        (
            ("monitoring", "attribution", "min_ndcg"),
            1.5,
            r"monitoring\.attribution\.min_ndcg: expected a value in",
        ),
        (
            ("monitoring", "attribution", "rows"),
            "many",
            r"monitoring\.attribution\.rows: expected an integer",
        ),
        (
            ("monitoring", "estimation", "use_for_decisions"),
            "yes",
            r"monitoring\.estimation\.use_for_decisions: expected true or false",
        ),
        (("monitoring", "bais"), {}, r"monitoring: unknown keys \['bais'\]"),
        (("label_delay_days",), -2, r"label_delay_days: expected a whole number of days >= 0\. Got -2"),
        (
            ("label_delay_days",),
            "week",
            r"label_delay_days: expected a whole number of days >= 0\. Got 'week'",
        ),
    ],
)
def test_bad_monitoring_values_are_rejected_naming_the_key(tmp_path, path, value, match):
    raw = _raw()
    node = raw
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value
    with pytest.raises(ConfigError, match=match):
        load_settings(_write(tmp_path, raw))


def test_label_delay_from_the_environment(monkeypatch):
    monkeypatch.setenv("DRIFTWATCH__LABEL_DELAY_DAYS", "7")
    s = load_settings("flights")
    assert s.label_delay_days == 7
    assert not s.labels_known(dt.date(2013, 3, 1), dt.date(2013, 3, 7))
    assert s.labels_known(dt.date(2013, 3, 1), dt.date(2013, 3, 8))


@pytest.mark.parametrize("model", ["random_forest", "ml.estimators:", ":factory", 3])
def test_a_model_that_is_neither_built_in_nor_a_factory_is_refused_at_load(tmp_path, model):
    raw = _raw()
    raw["training"]["model"] = model
    with pytest.raises(
        ConfigError, match=r"training.model: expected 'hist_gradient_boosting' or 'package.module:factory'"
    ):
        load_settings(_write(tmp_path, raw), environ={})


def test_a_factory_is_accepted_at_load(tmp_path):
    raw = _raw()
    raw["training"]["model"] = "ml.estimators:logistic_regression"
    assert (
        load_settings(_write(tmp_path, raw), environ={}).training.model == "ml.estimators:logistic_regression"
    )


def test_the_bundled_regression_and_multiclass_datasets_load():
    reg, mc = load_settings("flights_delay_minutes"), load_settings("flights_lateness")
    assert (reg.task, reg.objective.primary, reg.objective.higher_is_better) == ("regression", "rmse", False)
    assert (mc.task, mc.classes, mc.objective.primary) == (
        "multiclass",
        ("on_time", "late", "very_late"),
        "macro_f1",
    )
    assert load_settings("flights").task == "binary"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"task": "ranking"}, "task: expected one of binary | multiclass | regression. Got 'ranking'"),
        ({"task": "multiclass"}, "label.classes: a multiclass task needs its classes, 3 or more distinct"),
        ({"task": "regression"}, "label.positive: only for task: binary (this task is regression)"),
        (
            {"label": {"column": "delayed", "positive": 1, "classes": ["a", "b", "c"]}},
            "only for task: multiclass",
        ),
    ],
)
def test_a_task_and_its_label_are_checked_naming_the_key(tmp_path, change, message):
    raw = {**_raw(), **change}
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_settings(_write(tmp_path, raw))


def test_delayed_labels_are_refused_for_a_task_the_delayed_monitors_cannot_judge(tmp_path):
    raw = yaml.safe_load((BUNDLED_DATASETS / "flights_delay_minutes.yaml").read_text())
    raw["label_delay_days"] = 2
    with pytest.raises(
        ConfigError, match="label_delay_days: labels arriving after the batch are supported for binary"
    ):
        load_settings(_write(tmp_path, raw))
