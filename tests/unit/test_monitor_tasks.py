"""The model monitors of multiclass and regression tasks (ml/monitor_tasks.py, ml.monitoring with `task`)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ml import monitor as m
from ml import monitor_tasks as t
from ml import monitoring
from ml.objective import Objective
from ml.schema import AttributionMonitor, BiasMonitor, Monitoring

CLASSES = ("on_time", "late", "very_late")


def _calibrated_stream(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities and labels drawn from them: calibrated by construction."""
    rng = np.random.default_rng(seed)
    p = rng.dirichlet([4.0, 1.5, 1.0], size=n)
    y = (rng.random(n)[:, None] > np.cumsum(p, axis=1)).sum(axis=1)
    return p, y


def _sharpened(p: np.ndarray, power: float) -> np.ndarray:
    q = p**power
    return q / q.sum(axis=1, keepdims=True)


def test_cbpe_estimates_the_realized_macro_f1_and_accuracy_of_calibrated_probabilities():
    p, y = _calibrated_stream(40_000, seed=1)
    got = t.estimate(p, p.argmax(axis=1))
    realized = Objective("multiclass", CLASSES).metrics(y, p)
    assert got["accuracy"] == pytest.approx(realized["accuracy"], abs=0.01)
    assert got["macro_f1"] == pytest.approx(realized["macro_f1"], abs=0.01)
    assert got["class_rate"] == pytest.approx(np.bincount(y, minlength=3) / len(y), abs=0.01)
    assert got["rows"] == 40_000


def test_the_calibrators_repair_an_overconfident_model():
    # the model's probabilities are sharpened (overconfident): read as they are, the estimate is too high
    p, y = _calibrated_stream(20_000, seed=2)
    raw = _sharpened(p, 3.0)
    calibrators = t.fit_class_calibrators(raw[:10_000], y[:10_000])
    later_raw, later_y = raw[10_000:], y[10_000:]
    realized = Objective("multiclass", CLASSES).metrics(later_y, later_raw)
    naive = t.estimate(later_raw, later_raw.argmax(axis=1))
    fixed = t.estimate(t.calibrate(later_raw, calibrators), later_raw.argmax(axis=1))
    assert naive["accuracy"] - realized["accuracy"] > 0.05
    assert abs(fixed["accuracy"] - realized["accuracy"]) < 0.015
    assert abs(fixed["macro_f1"] - realized["macro_f1"]) < 0.02
    assert t.top_label_calibration_error(later_y, t.calibrate(later_raw, calibrators)) < 0.5 * (
        t.top_label_calibration_error(later_y, later_raw)
    )


def test_certain_and_right_is_perfect_and_a_missing_class_gets_the_identity():
    p = np.eye(3)[[0, 1, 2, 0, 1]]
    assert t.estimate(p, p.argmax(axis=1)) == {
        "macro_f1": 1.0,
        "accuracy": 1.0,
        "class_rate": pytest.approx([0.4, 0.4, 0.2]),
        "rows": 5,
    }
    calibrators = t.fit_class_calibrators(
        np.array([[0.7, 0.2, 0.1], [0.2, 0.7, 0.1]] * 10), np.array([0, 1] * 10)
    )
    assert calibrators[2].to_dict() == {"x": [0.0, 1.0], "y": [0.0, 1.0]}  # class 2 never seen


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match=r"calibrated: expected an n x k array"):
        t.estimate(np.array([0.2, 0.8]), np.array([1, 0]))
    with pytest.raises(ValueError, match=r"labels: expected class positions in 0..2"):
        t.fit_class_calibrators(np.full((4, 3), 1 / 3), np.array([0, 1, 3, 0]))
    with pytest.raises(ValueError, match="expected multiclass or regression"):
        t.segment_stats("binary", {}, np.zeros(3), None)
    with pytest.raises(ValueError, match="scale: expected a positive number"):
        t.segment_stats("regression", {}, np.zeros(3), None, scale=0)


def test_regression_gaps_are_in_label_standard_deviations():
    segment = np.array(["JFK"] * 60 + ["LGA"] * 60 + ["EWR"] * 10)
    pred = np.r_[np.full(60, 10.0), np.full(60, 30.0), np.full(10, 500.0)]
    y = np.r_[np.full(60, 12.0), np.full(60, 20.0), np.full(10, 0.0)]
    out = t.segment_stats("regression", {"origin": segment}, pred, y, min_rows=50, scale=4.0)["origin"]
    assert out["segments"] == {
        "JFK": {"rows": 60, "mean_prediction": 10.0, "mae": 2.0},
        "LGA": {"rows": 60, "mean_prediction": 30.0, "mae": 10.0},
    }
    assert out["skipped"] == 1  # EWR: 10 rows
    assert out["prediction_gap"] == pytest.approx(20 / 4) and out["error_gap"] == pytest.approx(8 / 4)
    no_labels = t.segment_stats("regression", {"origin": segment}, pred, None, scale=4.0)["origin"]
    assert no_labels["error_gap"] is None and no_labels["segments"]["JFK"]["mae"] is None


def test_multiclass_gaps_are_the_largest_class_share_gap_and_the_accuracy_gap():
    segment = np.array(["a"] * 50 + ["b"] * 50)
    pred = np.r_[
        np.tile([0.8, 0.1, 0.1], (50, 1)),
        np.tile([0.1, 0.2, 0.7], (25, 1)),
        np.tile([0.6, 0.3, 0.1], (25, 1)),
    ]
    y = np.r_[np.zeros(50, int), np.full(50, 2)]
    out = t.segment_stats("multiclass", {"s": segment}, pred, y)["s"]
    assert out["segments"]["a"] == {"rows": 50, "class_share": [1.0, 0.0, 0.0], "accuracy": 1.0}
    assert out["segments"]["b"] == {"rows": 50, "class_share": [0.5, 0.0, 0.5], "accuracy": 0.5}
    assert out["prediction_gap"] == pytest.approx(0.5) and out["error_gap"] == pytest.approx(0.5)


def test_bias_drift_holds_a_regression_error_gap_to_its_limit():
    current = {"origin": {"prediction_gap": 0.12, "error_gap": 0.45}}
    reference = {"origin": {"prediction_gap": 0.10, "error_gap": 0.20}}
    out = m.bias_drift(
        reference,
        current,
        max_positive_rate_gap_change=0.1,
        max_accuracy_gap_change=0.1,
        keys=t.BIAS_KEYS["regression"],
    )
    assert out["violation"] and out["reasons"] == [
        "origin: mean absolute error (label SDs) gap 0.45 vs 0.20 in the reference (+0.25 > 0.10)"
    ]
    assert out["columns"]["origin"]["prediction_gap_change"] == pytest.approx(0.02)


def test_attribution_ranks_features_by_their_effect_on_class_probabilities():
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {"strong": rng.normal(size=500), "weak": rng.normal(size=500), "none": rng.normal(size=500)}
    )

    def predict(f: pd.DataFrame) -> np.ndarray:
        z = np.column_stack([2 * f["strong"], 0.3 * f["weak"], np.zeros(len(f))])
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    got = m.prediction_importance(predict, frame, ["none", "weak", "strong"], seed=1)
    assert got["strong"] > got["weak"] > got["none"] == 0.0
    assert got["strong"] <= 1.0  # a total-variation change is at most 1


def _holdout(task: str, n_days: int = 6, rows: int = 120, seed: int = 0):
    rng = np.random.default_rng(seed)
    n = n_days * rows
    frame = pd.DataFrame({"origin": rng.choice(["EWR", "JFK", "LGA"], size=n)})
    days = np.repeat([f"2013-02-0{i + 1}" for i in range(n_days)], rows)
    if task == "multiclass":
        pred, y = _calibrated_stream(n, seed)
        return frame, _sharpened(pred, 2.0), y, days
    y = rng.normal(10, 5, size=n)
    return frame, y + rng.normal(0, 2, size=n), y, days


def _settings(limit: float = 0.1) -> Monitoring:
    bias = BiasMonitor(
        segments=("origin",), min_rows=20, max_positive_rate_gap_change=limit, max_accuracy_gap_change=limit
    )
    return Monitoring(bias=bias, attribution=AttributionMonitor(enabled=False))


def _fit(mon, task, frame, pred, y, days, quality):
    return monitoring.fit(
        mon,
        version=3,
        holdout=frame,
        holdout_scores=pred,
        holdout_labels=y,
        holdout_day=days,
        reference_X=None,
        features=["origin"],
        predict=None,
        seed=0,
        holdout_auc=quality,
        task=task,
    )


def test_fit_and_check_a_multiclass_champion():
    mon = _settings()
    frame, pred, y, days = _holdout("multiclass")
    ref = _fit(mon, "multiclass", frame, pred, y, days, quality=0.41)
    assert ref["task"] == "multiclass" and len(ref["calibrators"]) == 3 and ref["holdout_quality"] == 0.41
    assert ref["calibration"]["ece_calibrated"] < ref["calibration"]["ece_raw"]
    assert set(ref["bias"]["origin"]) >= {"prediction_gap", "error_gap", "gaps_from"}
    estimated = monitoring.estimate(mon, ref, pred[:120])
    assert set(estimated) == {"macro_f1", "accuracy", "class_rate", "rows"}
    # a day where one origin is always predicted "very_late": the predicted-class share gap grows
    day_pred = pred[:120].copy()
    day_pred[frame["origin"].to_numpy()[:120] == "JFK"] = [0.05, 0.05, 0.9]
    bias = monitoring.bias(mon, ref, {"origin": frame["origin"].to_numpy()[:120]}, day_pred, None)
    assert bias["task"] == "multiclass" and bias["violation"]
    assert "origin: predicted-class share gap" in bias["reasons"][0]


def test_a_regression_has_no_estimate_and_says_why():
    # ~40 rows per origin a day: a mean prediction moves ~0.16 SD from noise alone, hence the limit 0.5
    mon = _settings(limit=0.5)
    frame, pred, y, days = _holdout("regression")
    ref = _fit(mon, "regression", frame, pred, y, days, quality=2.0)
    assert ref["calibrators"] is None and "no label-free estimate" in ref["estimation"]
    assert ref["label_scale"] == pytest.approx(np.std(y))
    assert monitoring.estimate(mon, ref, pred) is None
    same = monitoring.bias(mon, ref, {"origin": frame["origin"].to_numpy()[:120]}, pred[:120], y[:120])
    assert not same["violation"]
    # the model is 3 SDs off on one origin today: the absolute-error gap grows
    off = pred[:120] + np.where(frame["origin"].to_numpy()[:120] == "LGA", 3 * np.std(y), 0.0)
    worse = monitoring.bias(mon, ref, {"origin": frame["origin"].to_numpy()[:120]}, off, y[:120])
    assert worse["violation"] and any("mean absolute error (label SDs)" in r for r in worse["reasons"])


@pytest.mark.parametrize("task", ["multiclass", "regression"])
def test_the_page_names_the_task_metrics_and_gaps(task):
    from ml.reports import monitor_page

    segment = np.array(["<b>x</b>"] * 30 + ["JFK"] * 30)
    pred = np.tile([0.6, 0.3, 0.1], (60, 1)) if task == "multiclass" else np.linspace(0, 60, 60)
    stats = t.segment_stats(task, {"origin": segment}, pred, None, min_rows=20)
    bias = m.bias_drift(
        {"origin": {"prediction_gap": 0.0}},
        stats,
        max_positive_rate_gap_change=0.1,
        max_accuracy_gap_change=0.1,
        keys=t.BIAS_KEYS[task],
    )
    bias["segments"] = stats
    page = monitor_page(
        "2013-02-01",
        "flights",
        champion_version=2,
        bias=bias,
        attribution=None,
        estimated=t.estimate(pred, pred.argmax(axis=1)) if task == "multiclass" else None,
        realized=None,
        calibration=None,
        labels_note="",
        task=task,
        estimation_note=t.REGRESSION_NO_ESTIMATE if task == "regression" else None,
    )
    assert "&lt;b&gt;x&lt;/b&gt;" in page and "<b>x" not in page
    if task == "multiclass":
        assert "macro F1" in page and "predicted-class share gap" in page and "ROC AUC" not in page
    else:
        assert "Estimated: none. no label-free estimate for a regression" in page
        assert "mean absolute error (label SDs) gap" in page and "mean prediction" in page
