"""ml.monitor's computations on hand-built data: segment disparities, bias drift, label-free importance,
nDCG, calibration and CBPE."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from ml import monitor as m


def test_segment_stats_rates_gaps_and_small_segments():
    seg = np.array(["a"] * 4 + ["b"] * 4 + ["c"])
    scores = np.array([0.9, 0.8, 0.1, 0.2, 0.1, 0.1, 0.1, 0.7, 0.9])
    labels = np.array([1, 0, 0, 0, 1, 0, 0, 1, 1])
    out = m.segment_stats({"carrier": seg}, scores, labels, min_rows=2)["carrier"]
    assert set(out["segments"]) == {"a", "b"} and out["skipped"] == 1  # c has one row
    a, b = out["segments"]["a"], out["segments"]["b"]
    assert a["positive_prediction_rate"] == 0.5 and b["positive_prediction_rate"] == 0.25
    assert a["accuracy"] == 0.75 and b["accuracy"] == 0.75
    assert a["recall"] == 1.0 and b["recall"] == 0.5
    assert out["positive_rate_gap"] == pytest.approx(0.25) and out["accuracy_gap"] == 0.0
    assert out["recall_gap"] == pytest.approx(0.5)
    unlabelled = m.segment_stats({"carrier": seg}, scores, None, min_rows=2)["carrier"]
    assert unlabelled["segments"]["a"]["accuracy"] is None and unlabelled["accuracy_gap"] is None
    assert unlabelled["positive_rate_gap"] == pytest.approx(0.25)


def test_segment_stats_rejects_misaligned_input():
    with pytest.raises(ValueError, match=r"segments\['origin'\]: expected 3 values"):
        m.segment_stats({"origin": ["a", "b"]}, np.zeros(3), None)
    with pytest.raises(ValueError, match="labels: expected 3 values"):
        m.segment_stats({"origin": ["a", "b", "c"]}, np.zeros(3), np.zeros(2))


def test_bias_drift_flags_only_a_gap_that_grew_beyond_its_limit():
    ref = {"origin": {"positive_rate_gap": 0.10, "accuracy_gap": 0.05}, "carrier": {"positive_rate_gap": 0.30,
                                                                                     "accuracy_gap": None}}
    cur = {"origin": {"positive_rate_gap": 0.32, "accuracy_gap": 0.06}, "carrier": {"positive_rate_gap": 0.05,
                                                                                     "accuracy_gap": 0.4}}
    out = m.bias_drift(ref, cur, max_positive_rate_gap_change=0.15, max_accuracy_gap_change=0.15)
    assert out["violation"] and out["columns"]["origin"]["violation"]
    assert not out["columns"]["carrier"]["violation"]  # narrower gap; accuracy without a reference
    assert out["columns"]["origin"]["positive_rate_gap_change"] == pytest.approx(0.22)
    assert out["reasons"] == ["origin: positive-prediction rate gap 0.32 vs 0.10 in the reference (+0.22 > 0.15)"]
    calm = m.bias_drift(ref, cur, max_positive_rate_gap_change=0.5, max_accuracy_gap_change=0.5)
    assert not calm["violation"] and calm["reasons"] == []


@pytest.fixture(scope="module")
def x1_model():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"x1": rng.normal(size=3000), "noise": rng.normal(size=3000),
                          "cat": rng.choice(["u", "v"], size=3000)})
    y = (rng.random(3000) < 1 / (1 + np.exp(-2 * frame["x1"]))).astype(int)
    model = LogisticRegression().fit(frame[["x1", "noise"]], y)
    return frame, (lambda f: model.predict_proba(f[["x1", "noise"]])[:, 1])


def test_prediction_importance_finds_the_feature_the_model_uses(x1_model):
    frame, predict = x1_model
    imp = m.prediction_importance(predict, frame, ["x1", "noise", "cat"], repeats=2, seed=3, max_rows=1000)
    assert list(imp) == ["x1", "noise", "cat"]
    assert imp["x1"] > 0.1 and imp["x1"] > 20 * imp["noise"] and imp["cat"] == 0.0
    again = m.prediction_importance(predict, frame, ["x1", "noise", "cat"], repeats=2, seed=3, max_rows=1000)
    assert again == imp
    with pytest.raises(ValueError, match=r"frame: missing feature columns \['x9'\]"):
        m.prediction_importance(predict, frame, ["x9"])


def test_ndcg_matches_model_monitors_formula():
    base = {"a": 3.0, "b": 2.0, "c": 1.0}
    assert m.ndcg(base, base) == 1.0
    assert m.ndcg(base, {"a": 10, "b": 5, "c": 1}) == 1.0  # only the order counts
    idcg = 3 + 2 / math.log2(3) + 1 / 2
    assert m.ndcg(base, {"a": 1, "b": 2, "c": 3}) == pytest.approx((1 + 2 / math.log2(3) + 3 / 2) / idcg)
    assert m.ndcg(base, {"b": 1.0}) == pytest.approx((2 + 3 / math.log2(3) + 1 / 2) / idcg)  # a, c missing: 0
    assert m.ndcg(base, {"c": 5, "a": 1, "b": 0}, k=1) == pytest.approx(1 / 3)
    skewed = {"f1": 10.0, "f2": 1.0, **{f"g{i}": 0.5 for i in range(6)}}
    swapped = {**skewed, "f1": 1.0, "f2": 10.0}
    assert m.ndcg(skewed, swapped) < 0.9
    assert m.ndcg({"a": 0.0, "b": 0.0}, {"a": 1.0}) == 1.0


def test_attribution_drift_flags_below_the_limit_and_names_the_new_top_features():
    base = {"f1": 10.0, "f2": 1.0, **{f"g{i}": 0.5 for i in range(6)}}
    out = m.attribution_drift(base, {**base, "f1": 1.0, "f2": 10.0})
    assert out["violation"] and out["current_rank"][0] == "f2" and out["baseline_rank"][0] == "f1"
    assert out["reason"].startswith(f"attribution nDCG {out['ndcg']:.2f} < 0.9: top features now f2")
    assert not m.attribution_drift(base, base)["violation"]


def test_estimate_performance_matches_realized_metrics_when_calibrated():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    p = rng.beta(2, 5, 20000)
    y = (rng.random(20000) < p).astype(int)
    est = m.estimate_performance(p)
    assert est["roc_auc"] == pytest.approx(roc_auc_score(y, p), abs=0.02)
    assert est["accuracy"] == pytest.approx(((p >= 0.5) == y).mean(), abs=0.02)
    assert est["positive_rate"] == pytest.approx(y.mean(), abs=0.02)
    constant = m.estimate_performance(np.full(500, 0.3))
    assert constant["roc_auc"] == pytest.approx(0.5) and constant["accuracy"] == pytest.approx(0.7)
    assert m.estimate_performance(np.zeros(10))["roc_auc"] is None  # no expected positives
    with pytest.raises(ValueError, match="probabilities: expected at least one value"):
        m.estimate_performance(np.array([]))


def test_calibrator_repairs_miscalibrated_scores_and_round_trips():
    rng = np.random.default_rng(2)
    p = rng.uniform(size=20000)
    y = (rng.random(20000) < p).astype(int)
    skewed = p**3
    cal = m.fit_calibrator(skewed, y)
    assert m.calibration_error(y, skewed) > 0.15
    assert m.calibration_error(y, cal(skewed)) < 0.02
    again = m.Calibrator.from_dict(cal.to_dict())
    assert np.array_equal(again(skewed), cal(skewed))
    with pytest.raises(ValueError, match="labels: expected 0/1 values"):
        m.fit_calibrator([0.1, 0.2], [0, 2])
    with pytest.raises(ValueError, match="labels: expected both classes"):
        m.fit_calibrator([0.1, 0.2], [1, 1])
    with pytest.raises(ValueError, match="labels: expected 2 values"):
        m.calibration_error([1], [0.1, 0.2])


def test_report_escapes_values_and_shows_the_scores():
    stats = m.segment_stats({"carrier": np.array(["<script>x</script>"] * 60 + ["AA"] * 60)},
                            np.linspace(0, 1, 120), None)
    bias = m.bias_drift({"carrier": {"positive_rate_gap": 0.1}}, stats, max_positive_rate_gap_change=0.1,
                        max_accuracy_gap_change=0.1)
    bias["segments"] = stats
    attribution = m.attribution_drift({"a": 2.0, "b": 1.0}, {"a": 0.5, "b": 1.5})
    page = m.render_html("2013-02-01", "flights", champion_version=3, bias=bias, attribution=attribution,
                         estimated={"roc_auc": 0.71, "accuracy": 0.8}, realized=None,
                         calibration={"ece_raw": 0.05, "ece_calibrated": 0.01, "rows": 100},
                         labels_note="labels arrive 7 days later")
    assert "<script>x" not in page and "&lt;script&gt;x" in page
    assert f"nDCG {attribution['ndcg']:.2f}" in page and "0.710" in page and "labels arrive 7 days later" in page
    assert "violation" in page  # the carrier gap grew from 0.1
    empty = m.render_html("2013-02-01", "flights", champion_version=None, bias=None, attribution=None,
                          estimated=None, realized=None, calibration=None, labels_note="")
    assert "not computed" in empty
