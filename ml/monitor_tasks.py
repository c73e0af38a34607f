"""The model monitors of multiclass and regression tasks (a binary task's are in `ml.monitor`). Pure: arrays
in, JSON-able numbers out.

    monitor                      multiclass                               regression
    performance without labels   CBPE: per-class isotonic calibrators,    none (REGRESSION_NO_ESTIMATE says why)
                                 expected confusion matrix -> macro F1,
                                 accuracy
    bias drift                   per segment value: share of each         per segment value: mean prediction and,
                                 predicted class and, with labels,        with labels, mean absolute error; gaps
                                 accuracy; gaps: the largest share gap    in standard deviations of the label on
                                 over classes, the accuracy gap           the champion's holdout
    attribution drift            `ml.monitor.prediction_importance` on    the same on the predicted value (the
                                 the probabilities (mean total-variation  ranking is compared, so the unit does
                                 change)                                  not matter)

A segment's gaps are compared by `ml.monitor.bias_drift` with the keys in `BIAS_KEYS`, against the median of
the holdout's daily gaps, as for a binary task.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ml import monitor as stats

if TYPE_CHECKING:
    import numpy as np

REGRESSION_NO_ESTIMATE = (
    "no label-free estimate for a regression: a point prediction carries no probability from which its "
    "error follows (CBPE needs calibrated class probabilities); estimating the error would take a second "
    "model of it (NannyML's DLE), not built. The day's RMSE is measured when its labels arrive."
)

# (gap key, the Monitoring.bias limit it is held to, how reports name it), per task
BIAS_KEYS: dict[str, tuple[tuple[str, str, str], ...]] = {
    "binary": (
        ("positive_rate_gap", "max_positive_rate_gap_change", "positive-prediction rate"),
        ("accuracy_gap", "max_accuracy_gap_change", "accuracy"),
    ),
    "multiclass": (
        ("prediction_gap", "max_positive_rate_gap_change", "predicted-class share"),
        ("error_gap", "max_accuracy_gap_change", "accuracy"),
    ),
    "regression": (
        ("prediction_gap", "max_positive_rate_gap_change", "mean prediction (label SDs)"),
        ("error_gap", "max_accuracy_gap_change", "mean absolute error (label SDs)"),
    ),
}


def _proba(values: Any, name: str, k: int | None = None) -> np.ndarray:
    """An n x k array of class probabilities (finite, in [0, 1])."""
    import numpy as np

    p = np.asarray(values, dtype="float64")
    if p.ndim != 2 or (k is not None and p.shape[1] != k):
        raise ValueError(
            f"{name}: expected an n x {k or 'k'} array of class probabilities. Got shape {p.shape}."
        )
    if not np.isfinite(p).all():
        raise ValueError(f"{name}: expected finite values. Got {int((~np.isfinite(p)).sum())} NaN/inf.")
    if p.size and (p.min() < -1e-9 or p.max() > 1 + 1e-9):
        raise ValueError(f"{name}: expected probabilities in [0, 1]. Got [{p.min():.4g}, {p.max():.4g}].")
    return np.clip(p, 0.0, 1.0)


def _classes(labels: Any, n: int, k: int) -> np.ndarray:
    """Class positions 0..k-1 (a label among none of the classes, -1, counts as every class's negative)."""
    import numpy as np

    y = np.asarray(labels)
    if y.ndim != 1 or len(y) != n:
        raise ValueError(f"labels: expected {n} values (one per row). Got shape {y.shape}.")
    if y.dtype.kind not in "iu" or (len(y) and (y.min() < -1 or y.max() >= k)):
        raise ValueError(
            f"labels: expected class positions in 0..{k - 1} (or -1). Got {np.unique(y)[:5].tolist()}."
        )
    return y.astype("int64")


# ---- performance without labels: multiclass CBPE -----------------------------------------------------------
def fit_class_calibrators(proba: Any, labels: Any) -> list[stats.Calibrator]:
    """One isotonic calibrator per class, one-vs-rest, on the champion's holdout. A class the holdout never
    or always shows gets the identity (nothing to learn its calibration from)."""
    p = _proba(proba, "probabilities")
    y = _classes(labels, len(p), p.shape[1])
    out = []
    for i in range(p.shape[1]):
        hit = (y == i).astype("int64")
        if 0 < hit.sum() < len(hit):
            out.append(stats.fit_calibrator(p[:, i], hit))
        else:
            out.append(stats.Calibrator(x=(0.0, 1.0), y=(0.0, 1.0)))
    return out


def calibrate(proba: Any, calibrators: Sequence[stats.Calibrator]) -> np.ndarray:
    """Each class's calibrated probability, rows renormalized to sum to 1 (a row all of whose calibrated
    values are 0 keeps its raw probabilities)."""
    import numpy as np

    p = _proba(proba, "probabilities", len(calibrators))
    q = np.column_stack([c(p[:, i]) for i, c in enumerate(calibrators)]) if len(p) else p.copy()
    total = q.sum(axis=1, keepdims=True)
    return np.where(total > 0, q / np.where(total > 0, total, 1.0), p)


def estimate(calibrated: Any, predicted: Any) -> dict[str, Any]:
    """CBPE for a multiclass model: with calibrated probabilities each row is of class j with probability
    p_j, so the confusion matrix of the model's own predictions (`predicted`: class positions, the argmax of
    its raw probabilities) has an expected value, and with it the expected accuracy and macro F1 (the F1 of
    the expected counts, as NannyML's CBPE computes it)."""
    import numpy as np

    p = _proba(calibrated, "calibrated")
    n, k = p.shape
    if n == 0:
        raise ValueError("calibrated: expected at least one row. Got 0.")
    pred = _classes(predicted, n, k)
    chosen = np.zeros_like(p, dtype=bool)
    chosen[np.arange(n), pred] = pred >= 0
    tp = (p * chosen).sum(axis=0)
    fp = ((1 - p) * chosen).sum(axis=0)
    fn = (p * ~chosen).sum(axis=0)
    denominator = 2 * tp + fp + fn
    f1 = np.where(denominator > 0, 2 * tp / np.where(denominator > 0, denominator, 1.0), 0.0)
    return {
        "macro_f1": float(f1.mean()),
        "accuracy": float(tp.sum() / n),
        "class_rate": [float(v) for v in p.mean(axis=0)],
        "rows": int(n),
    }


def top_label_calibration_error(labels: Any, proba: Any, *, bins: int = 10) -> float:
    """Expected calibration error of the predicted class's probability (top-label ECE)."""
    import numpy as np

    p = _proba(proba, "probabilities")
    y = _classes(labels, len(p), p.shape[1])
    top = p.argmax(axis=1)
    return stats.calibration_error((top == y).astype("int64"), p[np.arange(len(p)), top], bins=bins)


# ---- bias drift --------------------------------------------------------------------------------------------
def segment_stats(
    task: str,
    segments: Mapping[str, Any],
    pred: Any,
    labels: Any | None,
    *,
    min_rows: int = 50,
    scale: float = 1.0,
) -> dict[str, dict[str, Any]]:
    """Per segment column and value with >= `min_rows` rows: rows, what the model predicts there (multiclass:
    the share of each predicted class; regression: the mean prediction) and, with labels, how wrong it is
    (accuracy; mean absolute error), and the gaps between values that `bias_drift` compares under
    BIAS_KEYS[task]: `prediction_gap` (multiclass: the largest gap over classes) and `error_gap`. A
    regression's gaps are divided by `scale` (the label's standard deviation on the holdout), so one limit
    reads alike whatever the unit. NaN/None segment values are ignored."""
    import numpy as np

    if task not in ("multiclass", "regression"):
        raise ValueError(f"task: expected multiclass or regression (binary: ml.monitor). Got {task!r}.")
    if int(min_rows) < 1:
        raise ValueError(f"min_rows: expected at least 1. Got {min_rows}.")
    if not scale > 0:
        raise ValueError(f"scale: expected a positive number. Got {scale}.")
    if task == "multiclass":
        p = _proba(pred, "predictions")
        n, k = p.shape
        predicted = np.eye(k)[p.argmax(axis=1)] if n else np.zeros((0, k))
        y = None if labels is None else _classes(labels, n, k)
        error = None if y is None else (p.argmax(axis=1) == y).astype("float64")
    else:
        predicted = stats._scores(pred, "predictions")[:, None]
        n = len(predicted)
        y = None if labels is None else stats._scores(labels, "labels", n)
        error = None if y is None else np.abs(y - predicted[:, 0])
    out: dict[str, dict[str, Any]] = {}
    for column, values in segments.items():
        present, keys, inverse = stats.segment_codes(column, values, n)
        rows = np.bincount(inverse, minlength=len(keys))
        sums = (
            np.column_stack(
                [
                    np.bincount(inverse, weights=predicted[present, j], minlength=len(keys))
                    for j in range(predicted.shape[1])
                ]
            )
            if len(keys)
            else np.zeros((0, predicted.shape[1]))
        )
        wrong = None if error is None else np.bincount(inverse, weights=error[present], minlength=len(keys))
        kept: dict[str, dict[str, Any]] = {}
        for i, key in enumerate(keys.tolist()):
            if rows[i] < min_rows:
                continue
            means = sums[i] / rows[i]
            entry: dict[str, Any] = {"rows": int(rows[i])}
            if task == "multiclass":
                entry["class_share"] = [float(v) for v in means]
                entry["accuracy"] = None if wrong is None else float(wrong[i] / rows[i])
            else:
                entry["mean_prediction"] = float(means[0])
                entry["mae"] = None if wrong is None else float(wrong[i] / rows[i])
            kept[str(key)] = entry
        if task == "multiclass":
            shares = [v["class_share"] for v in kept.values()]
            gap = float((np.max(shares, axis=0) - np.min(shares, axis=0)).max()) if len(shares) >= 2 else None
            error_gap = stats._gap([v["accuracy"] for v in kept.values()])
        else:
            mean_gap = stats._gap([v["mean_prediction"] for v in kept.values()])
            gap = None if mean_gap is None else mean_gap / scale
            mae_gap = stats._gap([v["mae"] for v in kept.values()])
            error_gap = None if mae_gap is None else mae_gap / scale
        out[str(column)] = {
            "segments": kept,
            "prediction_gap": gap,
            "error_gap": error_gap if y is not None else None,
            "skipped": int(len(keys) - len(kept)),
            "min_rows": int(min_rows),
        }
    return out
