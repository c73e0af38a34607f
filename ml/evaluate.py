"""Champion vs challenger on the same holdout rows: paired bootstrap of the AUC gain, guardrails.

The promotion rule: promote only when the lower bound of the AUC gain's confidence interval exceeds
`min_delta` and the guardrails hold: log loss may not worsen beyond its tolerance, and no configured segment
(e.g. one origin or carrier) may lose more than `segment_tolerance` AUC. A tie or noise is a rejection. The thresholds are checked with
`mlflow.validate_evaluation_results` and `MetricThreshold`, so the decision is MLflow's documented check.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from ml.config import Settings

if TYPE_CHECKING:
    import numpy as np


def auc(y: np.ndarray, p: np.ndarray) -> float | None:
    """ROC AUC from ranks (ties averaged); None when only one class is present."""
    import numpy as np
    from scipy.stats import rankdata

    y = np.asarray(y)
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = rankdata(p)
    return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def classification_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float | None]:
    """AUC, log loss, accuracy and F1 at 0.5, Brier score, positive rate."""
    import numpy as np
    from sklearn.metrics import accuracy_score, brier_score_loss, f1_score, log_loss

    y = np.asarray(y).astype(int)
    p = np.clip(np.asarray(p, dtype="float64"), 1e-7, 1 - 1e-7)
    pred = (p >= 0.5).astype(int)
    return {
        "roc_auc": auc(y, p),
        "log_loss": float(log_loss(y, p, labels=[0, 1])),
        "accuracy": float(accuracy_score(y, pred)),
        "f1": float(f1_score(y, pred, zero_division=0)),
        "brier": float(brier_score_loss(y, p)),
        "positive_rate": float(y.mean()),
        "rows": int(len(y)),
    }


def paired_bootstrap_auc(
    y: np.ndarray,
    p_base: np.ndarray,
    p_new: np.ndarray,
    *,
    resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, float]:
    """Confidence interval of AUC(new) - AUC(base) by resampling rows (both models scored on each resample).

    Returns: {"delta", "low", "high", "resamples"}. Resamples that draw one class only are redrawn.
    """
    import numpy as np

    y = np.asarray(y).astype(int)
    p_base = np.asarray(p_base, dtype="float64")
    p_new = np.asarray(p_new, dtype="float64")
    delta = auc(y, p_new) - auc(y, p_base)  # type: ignore[operator]
    rng = np.random.default_rng(seed)
    n = len(y)
    diffs = np.empty(resamples)
    i = 0
    while i < resamples:
        idx = rng.integers(0, n, n)
        yb = y[idx]
        a_new, a_base = auc(yb, p_new[idx]), auc(yb, p_base[idx])
        if a_new is None or a_base is None:
            continue
        diffs[i] = a_new - a_base
        i += 1
    alpha = (1 - confidence) / 2
    low, high = np.quantile(diffs, [alpha, 1 - alpha])
    return {"delta": float(delta), "low": float(low), "high": float(high), "resamples": resamples}


def compare(
    settings: Settings,
    y: np.ndarray,
    p_champion: np.ndarray | None,
    p_challenger: np.ndarray,
    *,
    min_delta: float | None = None,
    segments: dict[str, np.ndarray] | None = None,
    naive: float | None = None,
) -> dict[str, Any]:
    """Decide whether the challenger replaces the champion. With no champion (bootstrap), the challenger
    must reach `min_bootstrap_auc` on its holdout.

    Args:
        segments: segment column -> the holdout rows' values, row-aligned with `y` (e.g. {"carrier": ...}).
            With a champion, every value with at least `evaluation.min_segment_rows` rows and both classes
            is a segment, and the largest AUC drop over them is checked against `segment_tolerance`.
            None or no champion: not checked.

    Returns a JSON-able dict: promote (bool), reason (one sentence), champion/challenger metrics, the
    bootstrap interval, each check with its threshold and value, and the per-segment table `segments`
    (rows {column, value, rows, champion_auc, challenger_auc, drop}, worst first; [] when not checked).

    Raises:
        ModelError: the holdout has a single class.
        ValueError: a segment's values are not row-aligned with `y`.
    """
    import numpy as np
    from mlflow.models import MetricThreshold

    from ml.exceptions import ModelError

    t = settings.thresholds
    min_delta = t.min_delta if min_delta is None else min_delta
    if settings.task != "binary":
        from ml.evaluate_tasks import compare_task

        return compare_task(
            settings, y, p_champion, p_challenger, min_delta=min_delta, segments=segments, naive=naive
        )
    if len(np.unique(np.asarray(y))) < 2:
        raise ModelError(f"{settings.name}: the holdout ({len(y)} rows) has a single class; AUC is undefined")
    challenger = classification_metrics(y, p_challenger)
    out: dict[str, Any] = {"challenger": challenger, "holdout_rows": int(len(y))}
    if p_champion is None:
        candidate = {"roc_auc": challenger["roc_auc"] or 0.0}
        thresholds = {"roc_auc": MetricThreshold(threshold=t.min_bootstrap_auc, greater_is_better=True)}
        checks = {"roc_auc": {"value": candidate["roc_auc"], "threshold": t.min_bootstrap_auc, "rule": ">="}}
        out.update(champion=None, bootstrap_ci=None)
    else:
        champion = classification_metrics(y, p_champion)
        ci = paired_bootstrap_auc(
            y,
            p_champion,
            p_challenger,
            resamples=t.bootstrap_resamples,
            confidence=t.confidence,
            seed=settings.training.seed,
        )
        candidate = {
            "roc_auc_gain_ci_low": ci["low"],
            "log_loss_increase": float(challenger["log_loss"] or 0.0) - float(champion["log_loss"] or 0.0),
        }
        # strictly above min_delta: an interval touching it is a tie, and a tie is a rejection
        thresholds = {
            "roc_auc_gain_ci_low": MetricThreshold(threshold=min_delta + 1e-12, greater_is_better=True),
            "log_loss_increase": MetricThreshold(threshold=t.logloss_tolerance, greater_is_better=False),
        }
        checks = {
            "roc_auc_gain_ci_low": {"value": ci["low"], "threshold": min_delta, "rule": ">"},
            "log_loss_increase": {
                "value": candidate["log_loss_increase"],
                "threshold": t.logloss_tolerance,
                "rule": "<=",
            },
        }
        out.update(champion=champion, bootstrap_ci=ci)
        if segments is not None:
            table = segment_aucs(
                y, p_champion, p_challenger, segments, min_rows=settings.evaluation.min_segment_rows
            )
            name = "worst_segment_auc_drop"
            candidate[name], thresholds[name], checks[name] = segment_check(
                table, settings.evaluation.segment_tolerance
            )
            out["segments"] = table
    decide_checks(out, thresholds, candidate, checks)
    out["reason"] = _reason(out, min_delta, t.confidence)
    return out


def segment_check(table: list[dict[str, Any]], tolerance: float) -> tuple[float, Any, dict[str, Any]]:
    """The worst segment's drop as a gate check: (value, its MetricThreshold, the check's record)."""
    from mlflow.models import MetricThreshold

    worst = table[0] if table else None
    value = worst["drop"] if worst else 0.0
    check = {
        "value": value,
        "threshold": tolerance,
        "rule": "<=",
        "segment": f"{worst['column']}={worst['value']}" if worst else None,
        "segments_checked": len(table),
    }
    return value, MetricThreshold(threshold=float(tolerance), greater_is_better=False), check


def decide_checks(
    out: dict[str, Any], thresholds: dict[str, Any], candidate: dict[str, float], checks: dict[str, Any]
) -> None:
    """MLflow's check of `candidate` against `thresholds` (`mlflow.validate_evaluation_results`): each
    check's `passed`, `out["checks"]`, `out["promote"]` (and the MLflow message when one failed)."""
    import mlflow
    from mlflow.models import EvaluationResult
    from mlflow.models.evaluation.validation import ModelValidationFailedException

    out.setdefault("segments", [])
    failed: list[str] = []
    try:
        mlflow.validate_evaluation_results(thresholds, EvaluationResult(metrics=candidate, artifacts={}))
    except ModelValidationFailedException as exc:
        failed = [name for name in thresholds if name in str(exc)] or list(thresholds)
        out["mlflow_validation"] = str(exc).strip()
    for name, check in checks.items():
        check["passed"] = name not in failed
    out["checks"] = checks
    out["promote"] = not failed


def segment_aucs(
    y: np.ndarray,
    p_champion: np.ndarray,
    p_challenger: np.ndarray,
    segments: dict[str, np.ndarray],
    *,
    min_rows: int,
) -> list[dict[str, Any]]:
    """AUC of both models within each segment value with >= `min_rows` rows and both classes.

    Returns: rows {column, value, rows, champion_auc, challenger_auc, drop} (drop = champion AUC -
    challenger AUC), largest drop first. Missing values form no segment.
    """
    import numpy as np
    import pandas as pd

    y = np.asarray(y).astype(int)
    p_champion = np.asarray(p_champion, dtype="float64")
    p_challenger = np.asarray(p_challenger, dtype="float64")
    table: list[dict[str, Any]] = []
    for column, values in segments.items():
        values = np.asarray(values, dtype=object)
        if len(values) != len(y):
            raise ValueError(
                f"compare: segment column {column!r} has {len(values)} values for {len(y)} holdout rows; "
                f"pass the holdout frame's column, row-aligned with y."
            )
        codes, uniques = pd.factorize(pd.Series(values), use_na_sentinel=True)
        for code, value in enumerate(uniques):
            rows = codes == code
            n = int(rows.sum())
            if n < min_rows:
                continue
            champion_auc, challenger_auc = auc(y[rows], p_champion[rows]), auc(y[rows], p_challenger[rows])
            if champion_auc is None or challenger_auc is None:
                continue
            table.append(
                {
                    "column": column,
                    "value": value.item() if isinstance(value, np.generic) else value,
                    "rows": n,
                    "champion_auc": champion_auc,
                    "challenger_auc": challenger_auc,
                    "drop": champion_auc - challenger_auc,
                }
            )
    table.sort(key=lambda r: (-r["drop"], r["column"], str(r["value"])))
    return table


def _reason(out: dict[str, Any], min_delta: float, confidence: float) -> str:
    ch = out["challenger"]
    if out["champion"] is None:
        verdict = "first champion" if out["promote"] else "no champion: bootstrap model too weak"
        return (
            f"{verdict}: holdout AUC {ch['roc_auc']:.4f} (needs >= {out['checks']['roc_auc']['threshold']})"
        )
    ci = out["bootstrap_ci"]
    gain = (
        f"AUC {out['champion']['roc_auc']:.4f} -> {ch['roc_auc']:.4f}, gain {ci['delta']:+.4f} "
        f"({confidence:.0%} CI {ci['low']:+.4f}..{ci['high']:+.4f})"
    )
    segment = out["checks"].get("worst_segment_auc_drop")
    if out["promote"]:
        segments = f"; no segment loses more than {segment['threshold']} AUC" if segment else ""
        return f"promoted: {gain}; lower bound above {min_delta}; log loss within tolerance{segments}"
    reasons = []
    if not out["checks"]["roc_auc_gain_ci_low"]["passed"]:
        reasons.append(f"gain not shown (lower bound {ci['low']:+.4f} <= {min_delta})")
    if not out["checks"]["log_loss_increase"]["passed"]:
        reasons.append(
            f"log loss worse by {out['checks']['log_loss_increase']['value']:+.4f} "
            f"(tolerance {out['checks']['log_loss_increase']['threshold']})"
        )
    if segment and not segment["passed"]:
        reasons.append(
            f"segment {segment['segment']} loses {segment['value']:.3f} AUC (tolerance {segment['threshold']})"
        )
    return f"rejected: {'; '.join(reasons)}; {gain}"


def auc_standard_error(auc: float, positives: int, negatives: int) -> float:
    """The standard error of an AUC measured on `positives` + `negatives` rows (Hanley & McNeil, 1982)."""
    q1, q2 = auc / (2 - auc), 2 * auc * auc / (1 + auc)
    var = (auc * (1 - auc) + (positives - 1) * (q1 - auc * auc) + (negatives - 1) * (q2 - auc * auc)) / max(
        positives * negatives, 1
    )
    return math.sqrt(max(var, 0.0))
