"""AUC, the paired bootstrap of the AUC gain, and the promotion rule of `compare`."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy.special import expit
from scipy.stats import norm
from sklearn.metrics import log_loss, roc_auc_score

from ml.evaluate import auc, classification_metrics, compare, paired_bootstrap_auc


@pytest.fixture
def fast_settings(settings):
    """The flights settings with fewer bootstrap resamples, to keep the tests fast."""
    return settings.with_overrides(
        thresholds=dataclasses.replace(settings.thresholds, bootstrap_resamples=300)
    )


def _calibrated(n: int, seed: int, noise: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels drawn from true probabilities; returns (y, true p, a noisier but still probabilistic score)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    p_true = expit(-0.5 + 2.0 * x)
    y = (rng.random(n) < p_true).astype(int)
    p_noisy = expit(-0.5 + 2.0 * (x + rng.normal(scale=noise, size=n)) / np.sqrt(1 + 4 * noise**2))
    return y, p_true, p_noisy


# ---- auc ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auc_equals_sklearn_including_ties(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 500)
    p = np.round(rng.random(500) * 0.5 + 0.3 * y, 1)  # rounding creates many ties

    assert auc(y, p) == pytest.approx(roc_auc_score(y, p), abs=1e-12)


@pytest.mark.parametrize("label", [0, 1])
def test_auc_is_none_with_a_single_class(label):
    y = np.full(50, label)

    assert auc(y, np.linspace(0, 1, 50)) is None


def test_classification_metrics_match_sklearn():
    y, p, _ = _calibrated(1000, seed=3, noise=0.5)

    m = classification_metrics(y, p)

    assert m["roc_auc"] == pytest.approx(roc_auc_score(y, p))
    assert m["log_loss"] == pytest.approx(log_loss(y, p))
    assert m["rows"] == len(y)
    assert m["positive_rate"] == pytest.approx(y.mean())


# ---- paired bootstrap -----------------------------------------------------------------------------------
def test_paired_bootstrap_interval_contains_the_observed_delta():
    y, p_new, p_base = _calibrated(800, seed=4, noise=1.0)

    ci = paired_bootstrap_auc(y, p_base, p_new, resamples=300, seed=0)

    assert ci["delta"] == pytest.approx(auc(y, p_new) - auc(y, p_base))
    assert ci["low"] <= ci["delta"] <= ci["high"]
    assert ci["resamples"] == 300


def test_paired_bootstrap_is_reproducible_with_a_seed():
    y, p_new, p_base = _calibrated(400, seed=5, noise=1.0)

    first = paired_bootstrap_auc(y, p_base, p_new, resamples=200, seed=7)
    again = paired_bootstrap_auc(y, p_base, p_new, resamples=200, seed=7)
    other = paired_bootstrap_auc(y, p_base, p_new, resamples=200, seed=8)

    assert first == again
    assert (first["low"], first["high"]) != (other["low"], other["high"])


@pytest.mark.slow  # a coverage simulation: hundreds of bootstraps
def test_paired_bootstrap_covers_the_true_auc_difference():
    """Binormal scores: positives ~ N(d, 1), negatives ~ N(0, 1) give a population AUC of Phi(d / sqrt(2)).

    Champion (d1) and challenger (d2) score the same rows with correlated noise, as two models do. The 95%
    interval must cover the true difference in about 95% of independent data sets.
    """
    d1, d2, n, datasets, resamples, confidence = 0.8, 1.2, 200, 100, 300, 0.95
    true_delta = norm.cdf(d2 / np.sqrt(2)) - norm.cdf(d1 / np.sqrt(2))
    noise_cov = [[1.0, 0.5], [0.5, 1.0]]
    covered = 0
    for i in range(datasets):
        rng = np.random.default_rng(10_000 + i)
        y = (rng.random(n) < 0.5).astype(int)
        noise = rng.multivariate_normal([0.0, 0.0], noise_cov, size=n)
        ci = paired_bootstrap_auc(
            y, d1 * y + noise[:, 0], d2 * y + noise[:, 1], resamples=resamples, confidence=confidence, seed=i
        )
        covered += ci["low"] <= true_delta <= ci["high"]

    rate = covered / datasets
    # binomial sd at 0.95 over 100 data sets is ~0.022; the percentile bootstrap runs slightly narrow
    assert 0.88 <= rate <= 0.99, f"coverage {rate:.2f} of the true difference {true_delta:.4f}"


# ---- compare --------------------------------------------------------------------------------------------
def test_clearly_better_challenger_is_promoted(fast_settings):
    y, p_true, p_noisy = _calibrated(2000, seed=11, noise=1.5)

    out = compare(fast_settings, y, p_noisy, p_true)

    assert out["promote"] is True, out["reason"]
    assert out["reason"].startswith("promoted")
    assert out["bootstrap_ci"]["low"] > fast_settings.thresholds.min_delta
    assert all(check["passed"] for check in out["checks"].values())
    assert out["holdout_rows"] == len(y)


def test_identical_scores_are_a_tie_and_a_tie_is_rejected(fast_settings):
    y, p, _ = _calibrated(1000, seed=12, noise=1.0)

    out = compare(fast_settings, y, p, p.copy())

    assert out["promote"] is False
    assert out["reason"].startswith("rejected")
    assert "gain not shown" in out["reason"]
    assert out["checks"]["roc_auc_gain_ci_low"]["passed"] is False
    assert out["checks"]["log_loss_increase"]["passed"] is True


def test_worse_challenger_is_rejected(fast_settings):
    y, p_true, p_noisy = _calibrated(2000, seed=13, noise=1.5)

    out = compare(fast_settings, y, p_true, p_noisy)

    assert out["promote"] is False
    assert "rejected" in out["reason"]
    assert out["bootstrap_ci"]["high"] < 0
    assert out["checks"]["roc_auc_gain_ci_low"]["passed"] is False


def test_better_auc_with_miscalibrated_probabilities_is_rejected_by_the_log_loss_guardrail(fast_settings):
    y, p_true, p_noisy = _calibrated(2000, seed=14, noise=1.5)
    miscalibrated = p_true**6  # same ranking as p_true (so the same AUC gain), far too low probabilities

    out = compare(fast_settings, y, p_noisy, miscalibrated)

    assert out["promote"] is False
    assert out["checks"]["roc_auc_gain_ci_low"]["passed"] is True
    assert out["checks"]["log_loss_increase"]["passed"] is False
    assert out["checks"]["log_loss_increase"]["value"] > fast_settings.thresholds.logloss_tolerance
    assert "rejected" in out["reason"]
    assert "log loss" in out["reason"]
    assert "gain not shown" not in out["reason"]


def test_min_delta_argument_raises_the_bar(fast_settings):
    y, p_true, p_noisy = _calibrated(2000, seed=15, noise=1.5)
    assert compare(fast_settings, y, p_noisy, p_true)["promote"] is True

    out = compare(fast_settings, y, p_noisy, p_true, min_delta=0.5)

    assert out["promote"] is False
    assert out["checks"]["roc_auc_gain_ci_low"]["threshold"] == 0.5


@pytest.mark.parametrize("offset, promoted", [(0.0, True), (1e-9, False), (-0.05, True), (0.05, False)])
def test_bootstrap_promotes_iff_auc_reaches_min_bootstrap_auc(fast_settings, offset, promoted):
    y, p, _ = _calibrated(500, seed=16, noise=0.0)
    holdout_auc = auc(y, p)
    s = fast_settings.with_overrides(
        thresholds=dataclasses.replace(fast_settings.thresholds, min_bootstrap_auc=holdout_auc + offset)
    )

    out = compare(s, y, None, p)

    assert out["promote"] is promoted, out["reason"]
    assert out["champion"] is None and out["bootstrap_ci"] is None
    assert out["checks"]["roc_auc"]["value"] == pytest.approx(holdout_auc)
    assert out["reason"].startswith("first champion" if promoted else "no champion: bootstrap model too weak")
