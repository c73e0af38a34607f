"""A regression and a multiclass task in the pieces that judge a model (no services): the label rules,
the training data, the stored scores, the drift step's batch quality and the promotion gate
(ml/evaluate_tasks.py). Binary datasets are unchanged (tests/integration/test_golden.py)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import numpy as np
import pytest

from ml import evaluate
from ml.config import load_settings
from ml.data import model_frame
from ml.train import fit, predict_proba
from ml.validation import validate_frame

DAY = dt.date(2013, 1, 10)


@pytest.fixture(scope="module")
def settings():
    return {name: load_settings(name) for name in ("flights_delay_minutes", "flights_lateness")}


@pytest.fixture(scope="module")
def frames(flights_frame):
    days = flights_frame["date"]
    return {
        "train": flights_frame[days < "2013-01-08"].reset_index(drop=True),
        "day": flights_frame[days == DAY.isoformat()].reset_index(drop=True),
    }


def test_a_multiclass_label_outside_its_classes_is_quarantined_naming_them(settings, frames):
    s = settings["flights_lateness"]
    day = frames["day"][s.columns].copy()
    day.loc[:4, "lateness"] = "cancelled"

    result = validate_frame(s, day, day=DAY, files=[Path("x.parquet")])

    assert not result.success
    (failure,) = [f for f in result.failures if f.column == "lateness"]
    assert "must be one of its classes" in failure.message
    assert "['on_time', 'late', 'very_late']" in failure.message and "'cancelled'" in failure.message


def test_a_regression_label_must_be_numeric(settings, frames):
    s = settings["flights_delay_minutes"]
    day = frames["day"][s.columns].copy()
    good = validate_frame(s, day, day=DAY, files=[Path("x.parquet")])
    day["arr_delay_minutes"] = day["arr_delay_minutes"].astype(str) + " min"

    bad = validate_frame(s, day, day=DAY, files=[Path("x.parquet")])

    assert good.success, good.summary()
    (failure,) = [f for f in bad.failures if f.column == "arr_delay_minutes"]
    assert (
        "(the label of a regression) must be numeric" in failure.message and "'-11.0 min'" in failure.message
    )


def test_each_task_trains_predicts_and_stores_its_own_kind_of_score(settings, frames):
    reg, mc = settings["flights_delay_minutes"], settings["flights_lateness"]
    for s in (reg, mc):
        model = fit(s, frames["train"][s.columns], DAY, {"max_iter": 20})
        pred = predict_proba(model, s, frames["day"][s.columns])
        stored = s.objective.to_frame(pred)
        assert np.allclose(s.objective.from_frame(stored), pred)
        _, y = model_frame(s, frames["day"][s.columns])
        quality = s.objective.batch_quality(y.to_numpy(dtype="float64"), pred)
        assert quality[s.objective.primary] is not None and quality[f"{s.objective.primary}_se"] > 0
        if s is reg:
            assert pred.ndim == 1 and pred.max() > 1  # minutes
        else:
            assert pred.shape == (len(frames["day"]), 3) and np.allclose(pred.sum(axis=1), 1.0)
            assert set(y.unique()) <= {0, 1, 2}


def _predictions(s, y, skill: float, rng) -> np.ndarray:
    """Predictions of a given skill on the real labels `y`: for a regression the label plus noise that
    shrinks with skill; for multiclass probabilities that favour the true class with weight `skill`."""
    if s.task == "regression":
        return y + rng.normal(0, 60 * (1 - skill) + 5, len(y))
    k = len(s.classes)
    p = rng.dirichlet(np.ones(k), len(y))
    p[np.arange(len(y)), y] += skill * 2
    return p / p.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("name", ["flights_delay_minutes", "flights_lateness"])
def test_the_gate_promotes_a_better_model_and_rejects_a_worse_one(settings, frames, name):
    s = settings[name]
    s = s.with_overrides(evaluation=dataclasses.replace(s.evaluation, min_segment_rows=100))  # ~300 a day
    day = frames["day"][s.columns]
    _, y = model_frame(s, day)
    y = y.to_numpy()
    rng = np.random.default_rng(1)
    weak, strong = _predictions(s, y, 0.2, rng), _predictions(s, y, 0.8, rng)
    segments = {"origin": day["origin"].to_numpy()}

    better = evaluate.compare(s, y, weak, strong, segments=segments)
    worse = evaluate.compare(s, y, strong, weak, segments=segments)
    first = evaluate.compare(s, y, None, strong)
    useless = evaluate.compare(
        s, y, None, _predictions(s, y, 0.0, rng) * (0 if s.task == "regression" else 1)
    )

    assert better["promote"] and better["task"] == s.task, better["reason"]
    assert not worse["promote"] and worse["reason"].startswith("rejected:"), worse["reason"]
    assert (
        s.objective.label in better["reason"]
        and better["checks"]["worst_segment_drop"]["segments_checked"] == 3
    )
    assert first["promote"] and "first champion" in first["reason"] and "naive model" in first["reason"]
    assert not useless["promote"] and "no better than the naive one" in useless["reason"]
