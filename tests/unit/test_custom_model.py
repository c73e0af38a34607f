"""`training.model: "package.module:factory"`: the user's own estimator is built, trained (with time-decay
weights when asked), logged to the real MLflow registry and served; mistakes name the key and the value."""

from __future__ import annotations

import dataclasses
import datetime as dt
import sys
import textwrap

import mlflow
import numpy as np
import pytest

from ml import registry
from ml.exceptions import ModelError
from ml.train import build_model, custom_model, fit, predict_proba

DAY = dt.date(2013, 1, 3)
LOGISTIC = "ml.estimators:logistic_regression"


def _with_model(s, model: str, params: dict | None = None, **training):
    return s.with_overrides(
        training=dataclasses.replace(s.training, model=model, params=params or {}, **training)
    )


@pytest.fixture
def frames(flights_frame):
    train = flights_frame[flights_frame["date"].isin(["2013-01-01", "2013-01-02"])].reset_index(drop=True)
    later = flights_frame[flights_frame["date"] == "2013-07-01"].reset_index(drop=True)
    return train, later


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """A module of the user's own on the path: a factory without fit, one whose fit takes no weights."""
    (tmp_path / "my_models.py").write_text(
        textwrap.dedent(
            """
            from sklearn.dummy import DummyClassifier

            class NoProba:
                def fit(self, X, y):
                    return self

            class NoWeights(DummyClassifier):
                def fit(self, X, y):
                    return super().fit(X, y)

            def no_proba():
                return NoProba()

            def no_weights(**anything):
                return NoWeights(strategy="prior")
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "my_models"
    sys.modules.pop("my_models", None)


def test_the_bundled_factory_gets_the_columns_seed_and_params(settings):
    s = _with_model(settings, LOGISTIC, {"C": 0.25})
    assert custom_model(s) and not custom_model(settings)
    model = build_model(s)
    assert model.named_steps["model"].C == 0.25
    assert model.named_steps["model"].random_state == s.training.seed
    assert model.named_steps["encode"].transformers[0][2] == list(s.numeric)


def test_a_custom_model_trains_scores_unseen_categories_and_takes_time_decay_weights(settings, frames):
    train, later = frames
    s = _with_model(settings, LOGISTIC)
    model = fit(s, train, DAY)
    scores = predict_proba(model, s, later)  # July: destinations January never saw, missing weather
    assert scores.shape == (len(later),) and np.all((scores >= 0) & (scores <= 1))
    weighted = fit(_with_model(settings, LOGISTIC, window="time_decay", half_life_days=0.5), train, DAY)
    assert not np.allclose(predict_proba(weighted, s, later), scores)  # the weights changed the model


def test_a_custom_model_goes_through_the_registry_and_comes_back_the_same(settings, frames):
    train, later = frames
    s = _with_model(settings, LOGISTIC)
    model = fit(s, train, DAY)
    info = registry.log_challenger(
        s,
        day=DAY,
        model=model,
        train=train,
        split={
            "train_days": ["2013-01-01", "2013-01-02"],
            "holdout_days": [],
            "train_range": "-",
            "holdout_range": "-",
        },
        trigger="test",
        digest="custom",
        params={},
        reference=train.head(20),
        dag_run_id=None,
        dag_run_url=None,
        metrics={},
    )
    loaded = mlflow.sklearn.load_model(info["model_uri"])
    assert np.array_equal(predict_proba(loaded, s, later), predict_proba(model, s, later))
    run = registry.client(s).get_run(info["run_id"])
    assert run.data.params["model"] == LOGISTIC


@pytest.mark.parametrize(
    ("model", "params", "message"),
    [
        (
            "sklearn_forest",
            {},
            r"training.model 'sklearn_forest': expected 'hist_gradient_boosting' or 'package.module:factory'",
        ),
        (
            "no_such_package.models:factory",
            {},
            r"cannot import 'no_such_package.models' \(ModuleNotFoundError",
        ),
        ("ml.estimators:no_such_factory", {}, r"'ml.estimators' has no callable 'no_such_factory'"),
        (
            LOGISTIC,
            {"penalty_strength": 2},
            r"calling it with \[.*'penalty_strength'.*\] failed \(TypeError.*check training.params",
        ),
        ("my_models:no_proba", {}, r"returned a NoProba, which has no predict_proba\(\)"),
    ],
)
def test_mistakes_name_the_key_and_what_was_expected(settings, user_module, model, params, message):
    with pytest.raises(ModelError, match=message) as err:
        build_model(_with_model(settings, model, params))
    assert "flights.yaml" in str(err.value)


def test_time_decay_with_a_fit_that_takes_no_weights_says_what_to_change(settings, frames, user_module):
    train, _ = frames
    s = _with_model(settings, "my_models:no_weights", window="time_decay")
    with pytest.raises(
        ModelError, match=r"training.window 'time_decay' weights the rows.*takes no sample_weight"
    ):
        fit(s, train, DAY)
    assert fit(_with_model(settings, "my_models:no_weights"), train, DAY) is not None
