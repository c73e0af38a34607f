"""The model monitors as calculators: `fit` on the champion's reference, `check` a day against it. No I/O:
the `monitor_model` task reads the data, caches the fitted reference beside the model and records results.

SageMaker Model Monitor's other checks, and NannyML-style estimation:
    performance without labels  CBPE: the champion's calibrated probabilities estimate its AUC and accuracy
    bias drift                  per segment column, the gap between segment values' positive-prediction
                                rates (and accuracy and recall once labels are known), vs the reference's
    attribution drift           nDCG of the champion's feature ranking on the day vs on its reference

The statistics themselves are in `ml.monitor` (a binary task's) and `ml.monitor_tasks` (multiclass: CBPE
from per-class calibrators, bias on predicted-class shares and accuracy; regression: no label-free estimate,
bias on mean prediction and absolute error in label standard deviations). `task` picks them; `scores` are
what `ml.objective` calls `pred` (the positive class's probability, class probabilities, predicted values).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ml import monitor as stats
from ml import monitor_tasks as tasks
from ml.config import Monitoring

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

Predict = Callable[["pd.DataFrame"], "np.ndarray"]


def fit(
    mon: Monitoring,
    *,
    version: int,
    holdout: pd.DataFrame,
    holdout_scores: np.ndarray,
    holdout_labels: np.ndarray,
    holdout_day: np.ndarray,
    reference_X: pd.DataFrame | None,
    features: Sequence[str],
    predict: Predict | None,
    seed: int,
    holdout_auc: float | None,
    task: str = "binary",
) -> dict[str, Any]:
    """The champion's baseline for the monitors (a JSON-able dict, cached once per version).

    Calibration and bias come from the champion's own scores on its holdout days: out-of-time, like every
    day it will serve (scores on its training period, even out-of-fold, are optimistic about later days and
    would make every estimate too high). The calibrator is isotonic, fitted on the whole holdout; its
    calibration error is reported cross-fitted (fitted on half of the holdout days, measured on the other).
    The bias reference gap is the median of the holdout's daily gaps, so that one day is compared with
    days of the same size. Feature importances come from the reference sample of the training data, as
    Model Monitor's baseline does (`predict` None: attribution off).
    """
    import numpy as np

    y, scores = holdout_labels, holdout_scores
    days = sorted(set(holdout_day))
    if task != "binary":
        return _fit_task(
            mon,
            task,
            version=version,
            holdout=holdout,
            pred=np.asarray(scores, dtype="float64"),
            y=np.asarray(y),
            holdout_day=holdout_day,
            days=days,
            importance=_importance(mon, predict, reference_X, features, seed),
            holdout_quality=holdout_auc,
        )
    calibrator = stats.fit_calibrator(scores, y)
    calibration: dict[str, Any] = {
        "rows": len(holdout),
        "holdout_days": days,
        "ece_raw": stats.calibration_error(y, scores),
        "estimated_on_holdout": stats.estimate_performance(calibrator(scores)),
    }
    halves = [np.isin(holdout_day, days[0::2]), np.isin(holdout_day, days[1::2])]
    if all(len(set(y[m].tolist())) == 2 for m in halves):
        cross = np.empty(len(scores))
        for fit_on, apply_to in (halves, halves[::-1]):
            cross[apply_to] = stats.fit_calibrator(scores[fit_on], y[fit_on])(scores[apply_to])
        calibration["ece_calibrated"] = stats.calibration_error(y, cross)
    else:
        calibration["ece_calibrated"] = None
    bias = None
    if mon.bias.segments:
        threshold, min_rows = mon.bias.threshold, mon.bias.min_rows
        bias = stats.segment_stats(
            {c: holdout[c].to_numpy() for c in mon.bias.segments},
            scores,
            y,
            threshold=threshold,
            min_rows=min_rows,
        )
        daily = [
            stats.segment_stats(
                {c: holdout[c].to_numpy()[holdout_day == d] for c in mon.bias.segments},
                scores[holdout_day == d],
                y[holdout_day == d],
                threshold=threshold,
                min_rows=min_rows,
            )
            for d in days
        ]
        for col, info in bias.items():
            for key in ("positive_rate_gap", "accuracy_gap", "recall_gap"):
                gaps = [one[col][key] for one in daily if one[col][key] is not None]
                info[key] = float(np.median(gaps)) if gaps else None
            info["gaps_from"] = "median of the holdout's daily gaps"
    return {
        "version": version,
        "calibrator": calibrator.to_dict(),
        "calibration": calibration,
        "bias": bias,
        "importance": _importance(mon, predict, reference_X, features, seed),
        "holdout_auc": holdout_auc,
    }


def _importance(
    mon: Monitoring,
    predict: Predict | None,
    reference_X: pd.DataFrame | None,
    features: Sequence[str],
    seed: int,
) -> dict[str, float] | None:
    if not (mon.attribution.enabled and predict is not None and reference_X is not None):
        return None
    return stats.prediction_importance(
        predict,
        reference_X,
        list(features),
        repeats=mon.attribution.repeats,
        seed=seed,
        max_rows=mon.attribution.rows,
    )


def _fit_task(
    mon: Monitoring,
    task: str,
    *,
    version: int,
    holdout: pd.DataFrame,
    pred: np.ndarray,
    y: np.ndarray,
    holdout_day: np.ndarray,
    days: list[Any],
    importance: dict[str, float] | None,
    holdout_quality: float | None,
) -> dict[str, Any]:
    """`fit` for a multiclass or regression task: the calibrators (multiclass) with the same cross-fitted
    calibration error as a binary task's, and the bias reference gaps (median of the holdout's daily gaps)."""
    import numpy as np

    out: dict[str, Any] = {
        "version": version,
        "task": task,
        "calibrators": None,
        "calibration": None,
        "estimation": None,
        "bias": None,
        "importance": importance,
        "holdout_quality": holdout_quality,
        "label_scale": None,
    }
    if task == "multiclass":
        y = y.astype("int64")
        calibrators = tasks.fit_class_calibrators(pred, y)
        calibration: dict[str, Any] = {
            "rows": len(holdout),
            "holdout_days": days,
            "ece_raw": tasks.top_label_calibration_error(y, pred),
            "estimated_on_holdout": tasks.estimate(tasks.calibrate(pred, calibrators), pred.argmax(axis=1)),
            "ece_calibrated": None,
        }
        halves = [np.isin(holdout_day, days[0::2]), np.isin(holdout_day, days[1::2])]
        if all(m.any() for m in halves):
            cross = np.empty_like(pred)
            for fit_on, apply_to in (halves, halves[::-1]):
                fitted = tasks.fit_class_calibrators(pred[fit_on], y[fit_on])
                cross[apply_to] = tasks.calibrate(pred[apply_to], fitted)
            calibration["ece_calibrated"] = tasks.top_label_calibration_error(y, cross)
        out.update(calibrators=[c.to_dict() for c in calibrators], calibration=calibration)
    else:
        out["estimation"] = tasks.REGRESSION_NO_ESTIMATE
        spread = float(np.std(y.astype("float64"))) if len(y) else 0.0
        out["label_scale"] = spread if spread > 0 else 1.0
    if mon.bias.segments:
        scale = out["label_scale"] or 1.0

        def gaps(mask: Any) -> dict[str, dict[str, Any]]:
            return tasks.segment_stats(
                task,
                {c: holdout[c].to_numpy()[mask] for c in mon.bias.segments},
                pred[mask],
                y[mask],
                min_rows=mon.bias.min_rows,
                scale=scale,
            )

        bias = gaps(np.ones(len(y), dtype=bool))
        daily = [gaps(holdout_day == d) for d in days]
        for col, info in bias.items():
            for key in ("prediction_gap", "error_gap"):
                values = [one[col][key] for one in daily if one[col][key] is not None]
                info[key] = float(np.median(values)) if values else None
            info["gaps_from"] = "median of the holdout's daily gaps"
        out["bias"] = bias
    return out


def estimate(mon: Monitoring, reference: Mapping[str, Any], scores: np.ndarray) -> dict[str, Any] | None:
    """CBPE: AUC and accuracy (multiclass: macro F1 and accuracy) estimated from the champion's calibrated
    scores (None when off, and for a regression: `ml.monitor_tasks.REGRESSION_NO_ESTIMATE`)."""
    if not mon.estimation.enabled:
        return None
    if reference.get("task", "binary") != "binary":
        if not reference.get("calibrators"):
            return None
        calibrators = [stats.Calibrator.from_dict(c) for c in reference["calibrators"]]
        return tasks.estimate(tasks.calibrate(scores, calibrators), scores.argmax(axis=1))
    calibrator = stats.Calibrator.from_dict(reference["calibrator"])
    return stats.estimate_performance(calibrator(scores), threshold=mon.bias.threshold)


def bias(
    mon: Monitoring,
    reference: Mapping[str, Any],
    segments: Mapping[str, np.ndarray],
    scores: np.ndarray,
    labels: np.ndarray | None,
) -> dict[str, Any] | None:
    """Bias drift of one batch against the reference gaps (None when no segment column is configured)."""
    if not mon.bias.segments:
        return None
    task = reference.get("task", "binary")
    if task == "binary":
        day_stats = stats.segment_stats(
            dict(segments), scores, labels, threshold=mon.bias.threshold, min_rows=mon.bias.min_rows
        )
    else:
        day_stats = tasks.segment_stats(
            task,
            dict(segments),
            scores,
            labels,
            min_rows=mon.bias.min_rows,
            scale=reference.get("label_scale") or 1.0,
        )
    out = stats.bias_drift(
        reference["bias"],
        day_stats,
        max_positive_rate_gap_change=mon.bias.max_positive_rate_gap_change,
        max_accuracy_gap_change=mon.bias.max_accuracy_gap_change,
        keys=tasks.BIAS_KEYS[task],
    )
    if task != "binary":
        out["task"] = task
    out["segments"] = day_stats
    return out


def attribution(
    mon: Monitoring,
    reference: Mapping[str, Any],
    predict: Predict,
    X: pd.DataFrame,
    features: Sequence[str],
    seed: int,
) -> dict[str, Any] | None:
    """Feature-attribution drift of one batch (None when off or the reference has no importances)."""
    if not (mon.attribution.enabled and reference.get("importance")):
        return None
    current = stats.prediction_importance(
        predict, X, list(features), repeats=mon.attribution.repeats, seed=seed, max_rows=mon.attribution.rows
    )
    return stats.attribution_drift(
        reference["importance"], current, min_ndcg=mon.attribution.min_ndcg, k=mon.attribution.top_k or None
    )
