"""Per-task metrics, primary metric and direction, noise and the paired bootstrap (ml/objective.py): the
binary figures are the flow's own (ml/evaluate.py), the others agree with scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score, log_loss, mean_absolute_error, mean_squared_error, r2_score

from ml import evaluate
from ml.objective import Objective

RNG = np.random.default_rng(5)


def binary_rows(n: int = 600):
    y = RNG.integers(0, 2, n)
    p = np.clip(0.5 * y + RNG.uniform(0, 0.5, n), 0, 1)
    return y, p, np.clip(p + RNG.normal(0, 0.2, n), 0, 1)


def test_binary_is_the_flows_own_arithmetic():
    y, better, worse = binary_rows()
    o = Objective("binary")

    assert (o.primary, o.guardrail, o.higher_is_better, o.label) == ("roc_auc", "log_loss", True, "AUC")
    assert o.metrics(y, better) == evaluate.classification_metrics(y, better)
    assert o.paired_bootstrap(y, worse, better, resamples=200, seed=3) == evaluate.paired_bootstrap_auc(
        y, worse, better, resamples=200, seed=3
    )
    auc = evaluate.auc(y, worse)
    assert o.standard_error(y, worse) == evaluate.auc_standard_error(auc, int(y.sum()), len(y) - int(y.sum()))
    assert o.drop(0.70, 0.65) == pytest.approx(0.05)


def test_multiclass_macro_f1_accuracy_log_loss_agree_with_sklearn():
    classes = ("on_time", "late", "very_late")
    n = 900
    y_idx = RNG.integers(0, 3, n)
    logits = RNG.normal(0, 1, (n, 3))
    logits[np.arange(n), y_idx] += 1.5
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    o = Objective("multiclass", classes)
    y = o.encode(np.asarray(classes, dtype=object)[y_idx])
    assert (y == y_idx).all() and list(o.decode(y[:3])) == [classes[i] for i in y_idx[:3]]

    m = o.metrics(y, proba)

    assert m["macro_f1"] == pytest.approx(f1_score(y_idx, proba.argmax(axis=1), average="macro"))
    assert m["accuracy"] == pytest.approx(np.mean(proba.argmax(axis=1) == y_idx))
    assert m["log_loss"] == pytest.approx(log_loss(y_idx, proba, labels=[0, 1, 2]), rel=1e-6)
    assert sum(m[f"rate_{c}"] for c in classes) == pytest.approx(1.0)
    noisy = np.clip(proba + RNG.uniform(0, 1.5, proba.shape), 0, None)
    ci = o.paired_bootstrap(y, noisy, proba, resamples=200, seed=1)
    assert ci["low"] > 0 and ci["delta"] == pytest.approx(o.value(y, proba) - o.value(y, noisy))
    assert 0 < o.standard_error(y, proba) < 0.05
    with pytest.raises(ValueError, match="expected 3 classes or more"):
        Objective("multiclass", ("a", "b"))


def test_an_unknown_class_counts_as_wrong_not_as_an_error():
    o = Objective("multiclass", ("a", "b", "c"))
    proba = np.eye(3)[[0, 1, 2, 0]]
    assert o.metrics(o.encode(["a", "b", "c", "z"]), proba)["accuracy"] == 0.75


def test_predictions_are_stored_as_a_score_column_and_come_back_the_same():
    proba = np.asarray([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    o = Objective("multiclass", ("a", "b", "c"))
    frame = o.to_frame(proba)
    assert frame["score"].tolist() == ["a", "c"] and np.allclose(o.from_frame(frame), proba)
    assert list(o.output(proba)) == ["a", "c"]
    r = Objective("regression")
    assert np.allclose(r.from_frame(r.to_frame([1.5, -2.0])), [1.5, -2.0])


def test_regression_lower_rmse_is_a_gain_and_drops_are_relative():
    n = 800
    y = RNG.normal(10, 3, n)
    good, bad = y + RNG.normal(0, 1, n), y + RNG.normal(0, 2, n)
    o = Objective("regression")

    m = o.metrics(y, good)

    assert (o.primary, o.guardrail, o.higher_is_better, o.label) == ("rmse", "mae", False, "RMSE")
    assert m["rmse"] == pytest.approx(np.sqrt(mean_squared_error(y, good)))
    assert m["mae"] == pytest.approx(mean_absolute_error(y, good))
    assert m["r2"] == pytest.approx(r2_score(y, good))
    ci = o.paired_bootstrap(y, bad, good, resamples=200, seed=2)
    assert ci["delta"] > 0 and ci["low"] > 0  # the lower RMSE wins
    assert o.gain(2.0, 1.0) == 1.0 and o.drop(2.0, 2.2) == pytest.approx(0.10)
    small, large = o.standard_error(y[:100], good[:100]), o.standard_error(y, good)
    assert small > 2 * large  # noise shrinks with the batch: ~ 1/sqrt(rows)


def test_an_unknown_task_names_the_choices():
    with pytest.raises(ValueError, match="expected one of binary | multiclass | regression. Got 'ranking'"):
        Objective("ranking")
