"""ml.monitor's computations on hand-built data: segment disparities, bias drift, label-free importance,
nDCG, calibration, CBPE, and the day's page they make (ml.reports.monitor_page)."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from ml import monitor as m


def test_importing_the_module_stays_light():
    code = "import sys, ml.monitor; print(sorted(k for k in ('pandas', 'sklearn') if k in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ---- segment_stats / bias_drift --------------------------------------------------------------------------
SEG = np.array(["a"] * 4 + ["b"] * 4 + ["c"])
SCORES = np.array([0.9, 0.8, 0.1, 0.2, 0.1, 0.1, 0.1, 0.7, 0.9])
LABELS = np.array([1, 0, 0, 0, 1, 0, 0, 1, 1])


def test_segment_stats_rates_gaps_and_small_segments():
    out = m.segment_stats({"carrier": SEG}, SCORES, LABELS, min_rows=2)["carrier"]
    assert set(out["segments"]) == {"a", "b"} and out["skipped"] == 1 and out["min_rows"] == 2  # c: one row
    a, b = out["segments"]["a"], out["segments"]["b"]
    assert a == {"rows": 4, "positive_prediction_rate": 0.5, "accuracy": 0.75, "recall": 1.0}
    assert b == {"rows": 4, "positive_prediction_rate": 0.25, "accuracy": 0.75, "recall": 0.5}
    assert out["positive_rate_gap"] == pytest.approx(0.25) and out["accuracy_gap"] == 0.0
    assert out["recall_gap"] == pytest.approx(0.5)
    json.dumps(out)  # python numbers only

    unlabelled = m.segment_stats({"carrier": SEG}, SCORES, None, min_rows=2)["carrier"]
    assert unlabelled["segments"]["a"]["accuracy"] is None and unlabelled["segments"]["a"]["recall"] is None
    assert unlabelled["accuracy_gap"] is None and unlabelled["recall_gap"] is None
    assert unlabelled["positive_rate_gap"] == pytest.approx(0.25)

    everything_small = m.segment_stats({"carrier": SEG}, SCORES, LABELS, min_rows=5)["carrier"]
    assert everything_small["segments"] == {} and everything_small["skipped"] == 3
    assert everything_small["positive_rate_gap"] is None


def test_segment_stats_threshold_missing_values_recall_without_positives_and_str_keys():
    values = pd.Series([1.0, 1.0, 2.0, 2.0, np.nan, None], dtype=object)
    scores = np.array([0.6, 0.4, 0.3, 0.5, 0.9, 0.9])
    labels = np.array([1, 1, 0, 0, 1, 1])
    out = m.segment_stats({"hour": values}, scores, labels, threshold=0.35, min_rows=1)["hour"]
    assert set(out["segments"]) == {"1.0", "2.0"} and out["skipped"] == 0  # NaN/None rows ignored
    assert out["segments"]["1.0"]["positive_prediction_rate"] == 1.0  # 0.6 and 0.4 >= 0.35
    assert out["segments"]["2.0"]["recall"] is None  # no positive label in the segment
    assert out["recall_gap"] is None  # one recall only
    assert out["segments"]["2.0"]["accuracy"] == 0.5 and out["accuracy_gap"] == 0.5


def test_segment_stats_rejects_misaligned_or_bad_input():
    with pytest.raises(ValueError, match=r"segments\['origin'\]: expected 3 values"):
        m.segment_stats({"origin": ["a", "b"]}, np.zeros(3), None)
    with pytest.raises(ValueError, match="labels: expected 3 values"):
        m.segment_stats({"origin": ["a", "b", "c"]}, np.zeros(3), np.zeros(2))
    with pytest.raises(ValueError, match="labels: expected 0/1 values"):
        m.segment_stats({"origin": ["a", "b", "c"]}, np.zeros(3), np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="scores: expected finite values"):
        m.segment_stats({"origin": ["a", "b", "c"]}, np.array([0.1, np.nan, 0.2]), None)
    with pytest.raises(ValueError, match="min_rows: expected at least 1"):
        m.segment_stats({"origin": ["a", "b", "c"]}, np.zeros(3), None, min_rows=0)


def test_bias_drift_flags_only_a_gap_that_grew_beyond_its_limit():
    ref = {
        "origin": {"positive_rate_gap": 0.10, "accuracy_gap": 0.05},
        "carrier": {"positive_rate_gap": 0.30, "accuracy_gap": None},
        "only_in_reference": {"positive_rate_gap": 0.0, "accuracy_gap": 0.0},
    }
    cur = {
        "origin": {"positive_rate_gap": 0.32, "accuracy_gap": 0.06},
        "carrier": {"positive_rate_gap": 0.05, "accuracy_gap": 0.4},
        "only_today": {"positive_rate_gap": 0.9, "accuracy_gap": 0.9},
    }
    out = m.bias_drift(ref, cur, max_positive_rate_gap_change=0.15, max_accuracy_gap_change=0.15)
    assert set(out["columns"]) == {"origin", "carrier"}
    assert out["violation"] and out["columns"]["origin"]["violation"]
    assert not out["columns"]["carrier"]["violation"]  # narrower gap; accuracy without a reference
    assert out["columns"]["carrier"]["accuracy_gap_change"] is None
    assert out["columns"]["carrier"]["positive_rate_gap_change"] == pytest.approx(-0.25)
    assert out["columns"]["origin"]["positive_rate_gap_change"] == pytest.approx(0.22)
    assert out["columns"]["origin"]["reference_positive_rate_gap"] == 0.10
    assert out["reasons"] == [
        "origin: positive-prediction rate gap 0.32 vs 0.10 in the reference (+0.22 > 0.15)"
    ]
    calm = m.bias_drift(ref, cur, max_positive_rate_gap_change=0.5, max_accuracy_gap_change=0.5)
    assert not calm["violation"] and calm["reasons"] == []


def test_bias_drift_accuracy_gap_and_the_limit_itself():
    ref = {"carrier": {"positive_rate_gap": 0.25, "accuracy_gap": 0.125}}
    at_limit = m.bias_drift(
        ref,
        {"carrier": {"positive_rate_gap": 0.5, "accuracy_gap": 0.125}},
        max_positive_rate_gap_change=0.25,
        max_accuracy_gap_change=0.25,
    )
    assert not at_limit["violation"]  # a change equal to the limit is allowed
    worse = m.bias_drift(
        ref,
        {"carrier": {"positive_rate_gap": 0.25, "accuracy_gap": 0.5}},
        max_positive_rate_gap_change=0.25,
        max_accuracy_gap_change=0.25,
    )
    assert worse["violation"] and worse["reasons"] == [
        "carrier: accuracy gap 0.50 vs 0.12 in the reference (+0.38 > 0.25)"
    ]


def test_segment_stats_feed_bias_drift():
    rng = np.random.default_rng(5)
    seg = rng.choice(["JFK", "LGA"], 2000)
    fair = rng.random(2000)
    skewed = np.where(seg == "JFK", fair * 0.4, fair)  # JFK now rarely predicted positive
    ref = m.segment_stats({"origin": seg}, fair, None)
    cur = m.segment_stats({"origin": seg}, skewed, None)
    out = m.bias_drift(ref, cur, max_positive_rate_gap_change=0.1, max_accuracy_gap_change=0.1)
    assert out["violation"] and out["reasons"][0].startswith("origin: positive-prediction rate gap ")
    assert out["columns"]["origin"]["positive_rate_gap"] == pytest.approx(0.5, abs=0.05)
    assert abs(out["columns"]["origin"]["reference_positive_rate_gap"]) < 0.05


# ---- prediction_importance -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def x1_model():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(1)
    frame = pd.DataFrame(
        {
            "x1": rng.normal(size=3000),
            "noise": rng.normal(size=3000),
            "cat": pd.Categorical(rng.choice(["u", "v"], size=3000)),
            "obj": rng.choice(["p", "q"], size=3000),
        }
    )
    y = (rng.random(3000) < 1 / (1 + np.exp(-2 * frame["x1"]))).astype(int)
    model = LogisticRegression().fit(frame[["x1", "noise"]], y)
    return frame, (lambda f: model.predict_proba(f[["x1", "noise"]])[:, 1])


def test_prediction_importance_finds_the_feature_the_model_uses(x1_model):
    frame, predict = x1_model
    features = ["x1", "noise", "cat", "obj"]
    imp = m.prediction_importance(predict, frame, features, repeats=2, seed=3, max_rows=1000)
    assert list(imp) == features and all(isinstance(v, float) and v >= 0 for v in imp.values())
    assert imp["x1"] > 0.1 and imp["x1"] > 20 * imp["noise"]
    assert imp["cat"] == 0.0 and imp["obj"] == 0.0  # not used by the model
    assert m.prediction_importance(predict, frame, features, repeats=2, seed=3, max_rows=1000) == imp
    other = m.prediction_importance(predict, frame, features, repeats=2, seed=4, max_rows=1000)
    assert other != imp and other["x1"] == pytest.approx(imp["x1"], rel=0.15)


def test_prediction_importance_samples_keeps_dtypes_and_batches_predict_calls(x1_model, monkeypatch):
    frame, predict = x1_model
    calls: list[tuple[int, str, str]] = []

    def spy(f: pd.DataFrame) -> np.ndarray:
        calls.append((len(f), str(f["cat"].dtype), str(f["obj"].dtype)))
        return predict(f)

    one = m.prediction_importance(spy, frame, ["x1", "noise", "cat"], repeats=3, max_rows=500)
    assert calls == [(500 * 10, "category", "object")]  # sampled to 500 rows, one call: base + 3 x 3 copies
    calls.clear()
    monkeypatch.setattr(m, "MAX_PREDICT_ROWS", 1500)
    batched = m.prediction_importance(spy, frame, ["x1", "noise", "cat"], repeats=3, max_rows=500)
    assert [c[0] for c in calls] == [1500, 1500, 1500, 500] and batched == one


def test_prediction_importance_rejects_bad_input(x1_model):
    frame, predict = x1_model
    with pytest.raises(ValueError, match=r"frame: missing feature columns \['x9'\]"):
        m.prediction_importance(predict, frame, ["x9"])
    with pytest.raises(ValueError, match="repeats: expected at least 1"):
        m.prediction_importance(predict, frame, ["x1"], repeats=0)
    with pytest.raises(ValueError, match="max_rows: expected at least 1"):
        m.prediction_importance(predict, frame, ["x1"], max_rows=0)
    with pytest.raises(ValueError, match="frame: expected at least one row"):
        m.prediction_importance(predict, frame.iloc[:0], ["x1"])
    with pytest.raises(ValueError, match="predict: expected 40 predictions"):
        m.prediction_importance(lambda f: np.zeros(3), frame, ["x1"], max_rows=10)


# ---- nDCG / attribution_drift ----------------------------------------------------------------------------
def test_ndcg_matches_model_monitors_formula():
    base = {"a": 3.0, "b": 2.0, "c": 1.0}
    idcg = 3 + 2 / math.log2(3) + 1 / 2
    assert m.ndcg(base, base) == 1.0
    assert m.ndcg(base, {"a": 10, "b": 5, "c": 1}) == 1.0  # only the order counts
    assert m.ndcg(base, {"a": 1, "b": 2, "c": 3}) == pytest.approx((1 + 2 / math.log2(3) + 3 / 2) / idcg)
    assert m.ndcg(base, {"c": 5, "a": 1, "b": 0}, k=1) == pytest.approx(1 / 3)
    assert m.ndcg(base, {"c": 5, "a": 1, "b": 0}, k=2) == pytest.approx(
        (1 + 3 / math.log2(3)) / (3 + 2 / math.log2(3))
    )
    assert m.ndcg(base, {"a": 1, "b": 2, "c": 3}, k=10) == m.ndcg(base, {"a": 1, "b": 2, "c": 3})  # k capped
    assert m.ndcg({"a": 0.0, "b": 0.0}, {"a": 1.0}) == 1.0  # iDCG 0


def test_ndcg_missing_features_rank_last_and_ties_by_name():
    base = {"a": 3.0, "b": 2.0, "c": 1.0}
    idcg = 3 + 2 / math.log2(3) + 1 / 2
    # a and c missing: b first even with a negative value, then a, c (0 there, by name)
    assert m.ndcg(base, {"b": -1.0, "extra": 9.0}) == pytest.approx((2 + 3 / math.log2(3) + 1 / 2) / idcg)
    assert m.ndcg(base, {"a": 0.0, "b": 0.0, "c": 0.0}) == 1.0  # ties by name: a, b, c
    assert m.attribution_drift(base, {"b": -1.0})["current_rank"] == ["b", "a", "c"]


def test_ndcg_falls_below_the_limit_when_the_dominant_feature_loses_its_rank():
    skewed = {"f1": 10.0, "f2": 1.0, **{f"g{i}": 0.5 for i in range(6)}}
    swapped = {**skewed, "f1": 1.0, "f2": 10.0}
    assert m.ndcg(skewed, swapped) < 0.9
    even = {f"g{i}": 1.0 + i / 100 for i in range(8)}
    assert m.ndcg(even, {**even, "g7": 1.0, "g6": 1.07}) > 0.99  # near-equal weights: a swap barely counts
    with pytest.raises(ValueError, match="baseline: expected at least one feature"):
        m.ndcg({}, {"a": 1.0})
    with pytest.raises(ValueError, match="k: expected at least 1"):
        m.ndcg({"a": 1.0}, {"a": 1.0}, k=0)


def test_attribution_drift_flags_below_the_limit_and_names_the_new_top_features():
    base = {"f1": 10.0, "f2": 1.0, **{f"g{i}": 0.5 for i in range(6)}}
    out = m.attribution_drift(base, {**base, "f1": 1.0, "f2": 10.0})
    assert out["violation"] and out["current_rank"][0] == "f2" and out["baseline_rank"][0] == "f1"
    assert out["min_ndcg"] == m.ATTRIBUTION_NDCG_LIMIT == 0.9
    assert out["reason"].startswith(f"attribution nDCG {out['ndcg']:.2f} < 0.9: top features now f2, f1")
    assert "(were f1, f2" in out["reason"]
    assert out["importance"]["f2"] == 10.0 and out["baseline_importance"]["f2"] == 1.0
    calm = m.attribution_drift(base, base)
    assert not calm["violation"] and calm["reason"] == "attribution nDCG 1.00 >= 0.9"
    json.dumps(out)


def test_attribution_reason_never_rounds_onto_the_wrong_side_of_the_limit():
    base = {"a": 3.0, "b": 2.0, "c": 1.0}
    current = {"a": 1, "b": 2, "c": 3}
    score = m.ndcg(base, current)  # 0.78999...
    limit = float(f"{score:.2f}")
    assert score < limit  # 2 decimals would print "0.79 < 0.79"
    out = m.attribution_drift(base, current, min_ndcg=limit)
    assert out["violation"] and out["reason"].startswith(f"attribution nDCG {score:.4f} < {limit}")


# ---- calibration / CBPE ----------------------------------------------------------------------------------
def test_calibrator_repairs_miscalibrated_scores_and_round_trips():
    rng = np.random.default_rng(2)
    p = rng.uniform(size=20000)
    y = (rng.random(20000) < p).astype(int)
    skewed = p**3
    cal = m.fit_calibrator(skewed, y)
    assert m.calibration_error(y, skewed) > 0.15
    assert m.calibration_error(y, cal(skewed)) < 0.02
    assert np.all(np.diff(cal(np.linspace(0, 1, 101))) >= 0)  # isotonic
    assert cal(np.array([-5.0, 5.0])).tolist() == [cal.y[0], cal.y[-1]]  # clipped
    again = m.Calibrator.from_dict(json.loads(json.dumps(cal.to_dict())))
    assert again == cal and np.array_equal(again(skewed), cal(skewed))
    assert m.Calibrator(x=(0.0, 1.0), y=(0.2, 0.6))(np.array([0.5])).tolist() == pytest.approx([0.4])


def test_calibrator_rejects_bad_input():
    with pytest.raises(ValueError, match="labels: expected 0/1 values"):
        m.fit_calibrator([0.1, 0.2], [0, 2])
    with pytest.raises(ValueError, match="labels: expected both classes"):
        m.fit_calibrator([0.1, 0.2], [1, 1])
    with pytest.raises(ValueError, match="labels: expected 2 values"):
        m.fit_calibrator([0.1, 0.2], [1, 0, 1])
    with pytest.raises(ValueError, match="scores: expected finite values"):
        m.fit_calibrator([0.1, np.nan], [1, 0])
    with pytest.raises(ValueError, match="calibrator: expected keys 'x' and 'y'"):
        m.Calibrator.from_dict({"thresholds": [0.1]})
    with pytest.raises(ValueError, match="y: expected 2 values"):
        m.Calibrator(x=(0.0, 1.0), y=(0.5,))


def test_calibration_error_on_a_hand_computed_example():
    # bins of width 0.5: [0.1, 0.2] vs labels [0, 1] -> |0.15 - 0.5|; [0.9, 1.0] vs [1, 1] -> |0.95 - 1|
    ece = m.calibration_error([0, 1, 1, 1], [0.1, 0.2, 0.9, 1.0], bins=2)
    assert ece == pytest.approx((2 * 0.35 + 2 * 0.05) / 4)
    with pytest.raises(ValueError, match="labels: expected 2 values"):
        m.calibration_error([1], [0.1, 0.2])
    with pytest.raises(ValueError, match=r"probabilities: expected probabilities in \[0, 1\]"):
        m.calibration_error([1, 0], [0.1, 1.2])
    with pytest.raises(ValueError, match="bins: expected at least 1"):
        m.calibration_error([1, 0], [0.1, 0.2], bins=0)


def test_estimate_performance_matches_realized_metrics_when_calibrated():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    p = rng.beta(2, 5, 20000)
    y = (rng.random(20000) < p).astype(int)
    est = m.estimate_performance(p)
    assert est["roc_auc"] == pytest.approx(roc_auc_score(y, p), abs=0.02)
    assert est["accuracy"] == pytest.approx(((p >= 0.5) == y).mean(), abs=0.02)
    assert est["positive_rate"] == pytest.approx(y.mean(), abs=0.02)
    assert est["positive_prediction_rate"] == pytest.approx((p >= 0.5).mean()) and est["rows"] == 20000
    json.dumps(est)


def test_estimate_performance_on_hand_computed_and_degenerate_inputs():
    # rows 0.8 and 0.2: expected positives 1, negatives 1; ROC (0,0) -> (0.2, 0.8) -> (1, 1): area 0.8
    two = m.estimate_performance(np.array([0.8, 0.2]))
    assert two["roc_auc"] == pytest.approx(0.8) and two["accuracy"] == pytest.approx(0.8)
    assert two["positive_prediction_rate"] == 0.5 and two["positive_rate"] == pytest.approx(0.5)
    # a tie group: (0,0) -> (0.5, 6/7) -> (1, 1)
    assert m.estimate_performance(np.array([0.6, 0.6, 0.2]))["roc_auc"] == pytest.approx(19 / 28)
    assert m.estimate_performance(np.array([0.8, 0.2]), threshold=0.9)["accuracy"] == pytest.approx(0.5)
    constant = m.estimate_performance(np.full(500, 0.3))
    assert constant["roc_auc"] == pytest.approx(0.5) and constant["accuracy"] == pytest.approx(0.7)
    assert m.estimate_performance(np.zeros(10))["roc_auc"] is None  # no expected positives
    assert m.estimate_performance(np.ones(10))["roc_auc"] is None  # no expected negatives
    with pytest.raises(ValueError, match="probabilities: expected at least one value"):
        m.estimate_performance(np.array([]))
    with pytest.raises(ValueError, match="probabilities: expected finite values"):
        m.estimate_performance(np.array([0.2, np.nan]))


# ---- the day's page (ml.reports.monitor_page) -------------------------------------------------------------
def test_report_escapes_values_and_shows_the_scores():
    from ml.reports import monitor_page

    stats = m.segment_stats(
        {"carrier": np.array(["<script>x</script>"] * 60 + ["AA"] * 60)}, np.linspace(0, 1, 120), None
    )
    bias = m.bias_drift(
        {"carrier": {"positive_rate_gap": 0.1}},
        stats,
        max_positive_rate_gap_change=0.1,
        max_accuracy_gap_change=0.1,
    )
    bias["segments"] = stats
    attribution = m.attribution_drift({"a": 2.0, "b": 1.0}, {"a": 0.5, "b": 1.5})
    page = monitor_page(
        "2013-02-01",
        "flights<b>",
        champion_version=3,
        bias=bias,
        attribution=attribution,
        estimated=m.estimate_performance(np.array([0.9, 0.1, 0.7])),
        realized={"roc_auc": 0.71},
        calibration={"ece_raw": 0.05, "ece_calibrated": 0.0123, "rows": 100},
        labels_note="labels arrive 7 days later; realized metrics appear on 2013-02-08",
    )
    assert "<title>Model monitor — flights&lt;b&gt; 2013-02-01</title>" in page
    assert "<script>x" not in page and "&lt;script&gt;x&lt;/script&gt;" in page
    assert f"nDCG {attribution['ndcg']:.3f}" in page and "0.710" in page and "0.012" in page
    assert "realized metrics appear on 2013-02-08" in page
    assert "<h3 class='bad'>carrier" in page  # the carrier gap grew from 0.1 to 1.0
    assert "<link" not in page and "<script" not in page and "src=" not in page  # self-contained


def test_report_says_what_was_not_computed():
    from ml.reports import monitor_page

    empty = monitor_page(
        "2013-02-01",
        "flights",
        champion_version=None,
        bias=None,
        attribution=None,
        estimated=None,
        realized=None,
        calibration=None,
        labels_note="",
    )
    assert empty.count("not computed") == 4  # performance, calibration, bias, attribution
