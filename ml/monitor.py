"""Model Monitor's other checks: bias drift, feature-attribution drift, and performance without labels.

Pure functions on arrays and frames (`ml.monitoring` fits and checks the monitors with them); nothing heavy is
imported at module import, so the DAG file can import the module cheaply.

- Bias drift (SageMaker's ModelBiasMonitor, simplified to what a daily batch supports): per segment column,
  the gap between segment values' positive-prediction rates (and accuracy / recall once labels are known),
  compared with the same gap on the champion's reference.
- Feature-attribution drift (ModelExplainabilityMonitor): global importances on the reference and on the
  day, rankings compared by nDCG; Model Monitor flags nDCG < 0.9. The importance is label-free permutation
  importance: the mean absolute change of the predicted probability when a feature is shuffled, so it is
  available on the day the batch arrives, like SHAP attributions are.
- Performance without labels (NannyML's CBPE): with calibrated probabilities, the expected accuracy and the
  expected ROC curve follow from the probabilities alone.

Every returned number is a python float/int (JSON-able).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

ATTRIBUTION_NDCG_LIMIT = 0.9  # Model Monitor's documented default
# Shuffled copies are scored in as few predict calls as possible (per-call overhead dominates on small
# frames), but never more than this many rows in one call, to bound memory.
MAX_PREDICT_ROWS = 250_000
_TOLERANCE = 1e-9  # probabilities this far outside [0, 1] (float rounding) are clipped, not refused


def _f(x: Any) -> float | None:
    """A python float, or None for None/NaN (a missing gap stays missing in JSON)."""
    if x is None:
        return None
    x = float(x)
    return None if math.isnan(x) else x


def _gap(values: list[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return float(max(kept) - min(kept)) if len(kept) >= 2 else None


def _shown(value: float, limit: float) -> str:
    """`value` with 2 decimals, or 4 when rounding would put it on the other side of `limit` (0.8951 -> 0.90)."""
    text = f"{value:.2f}"
    rounded = float(text)
    if (rounded < limit) != (value < limit) or (rounded > limit) != (value > limit):
        text = f"{value:.4f}"
    return text


def _scores(values: Any, name: str, n: int | None = None, *, unit: bool = False) -> np.ndarray:
    """A 1-D float array of finite values (in [0, 1] when `unit`), `n` long when given."""
    import numpy as np

    a = np.asarray(values, dtype="float64")
    if a.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array. Got shape {a.shape}.")
    if n is not None and len(a) != n:
        raise ValueError(f"{name}: expected {n} values (one per score). Got {len(a)}.")
    if not np.isfinite(a).all():
        raise ValueError(f"{name}: expected finite values. Got {int((~np.isfinite(a)).sum())} NaN/inf.")
    if unit and len(a):
        if a.min() < -_TOLERANCE or a.max() > 1 + _TOLERANCE:
            raise ValueError(f"{name}: expected probabilities in [0, 1]. Got [{a.min():.4g}, {a.max():.4g}].")
        a = np.clip(a, 0.0, 1.0)
    return a


def _labels(labels: Any, n: int, name: str = "labels") -> np.ndarray:
    """0/1 labels as int64, one per score."""
    import numpy as np

    y = np.asarray(labels)
    if y.ndim != 1 or len(y) != n:
        raise ValueError(f"{name}: expected {n} values (one per score). Got shape {y.shape}.")
    values = np.unique(y) if y.dtype.kind in "biuf" else np.unique(y.astype(str))
    if y.dtype.kind not in "biuf" or not np.isin(values, [0, 1]).all():
        raise ValueError(f"{name}: expected 0/1 values. Got {values[:5].tolist()}.")
    return y.astype("int64")


# ---- bias drift -----------------------------------------------------------------------------------------
def segment_stats(
    segments: Mapping[str, np.ndarray | pd.Series],
    scores: np.ndarray,
    labels: np.ndarray | None,
    *,
    threshold: float = 0.5,
    min_rows: int = 50,
) -> dict[str, dict[str, Any]]:
    """Per segment column and value with >= `min_rows` rows: rows, positive-prediction rate (score >=
    `threshold`), accuracy and recall (None without labels; recall None without positives), and the gaps
    (max - min across kept values) that bias drift compares. Values are keyed by str(value); NaN/None rows
    are ignored; smaller values are counted in "skipped" (their rates are too noisy to compare)."""
    import numpy as np

    scores = _scores(scores, "scores")
    n = len(scores)
    y = None if labels is None else _labels(labels, n)
    if int(min_rows) < 1:
        raise ValueError(f"min_rows: expected at least 1. Got {min_rows}.")
    predicted = scores >= threshold
    correct = None if y is None else predicted == (y == 1)
    out: dict[str, dict[str, Any]] = {}
    for column, values in segments.items():
        present, keys, inverse = segment_codes(column, values, n)
        size = len(keys)
        rows = np.bincount(inverse, minlength=size)
        positive = np.bincount(inverse, weights=predicted[present], minlength=size)
        if y is not None and correct is not None:
            right = np.bincount(inverse, weights=correct[present], minlength=size)
            actual = np.bincount(inverse, weights=y[present], minlength=size)
            hits = np.bincount(inverse, weights=(predicted & (y == 1))[present], minlength=size)
        stats: dict[str, dict[str, Any]] = {}
        for i, key in enumerate(keys.tolist()):
            if rows[i] < min_rows:
                continue
            entry: dict[str, Any] = {
                "rows": int(rows[i]),
                "positive_prediction_rate": float(positive[i] / rows[i]),
                "accuracy": None,
                "recall": None,
            }
            if y is not None:
                entry["accuracy"] = float(right[i] / rows[i])
                entry["recall"] = float(hits[i] / actual[i]) if actual[i] > 0 else None
            stats[str(key)] = entry
        out[str(column)] = {
            "segments": stats,
            "positive_rate_gap": _gap([v["positive_prediction_rate"] for v in stats.values()]),
            "accuracy_gap": _gap([v["accuracy"] for v in stats.values()]) if y is not None else None,
            "recall_gap": _gap([v["recall"] for v in stats.values()]) if y is not None else None,
            "skipped": int(size - len(stats)),
            "min_rows": int(min_rows),
        }
    return out


def segment_codes(column: str, values: Any, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A segment column's rows with a value (mask), its distinct values (as str, sorted) and each such
    row's position among them."""
    import numpy as np
    import pandas as pd

    raw = pd.Series(np.asarray(values, dtype=object))
    if len(raw) != n:
        raise ValueError(f"segments[{column!r}]: expected {n} values (one per row). Got {len(raw)}.")
    present = raw.notna().to_numpy()
    keys, inverse = np.unique(raw[present].astype(str).to_numpy(dtype=object), return_inverse=True)
    return present, keys, inverse


def bias_drift(
    reference: Mapping[str, dict],
    current: Mapping[str, dict],
    *,
    max_positive_rate_gap_change: float,
    max_accuracy_gap_change: float,
    keys: Sequence[tuple[str, str, str]] | None = None,
) -> dict[str, Any]:
    """Compare the current gaps (segment_stats output) with the reference's, column by column (columns in
    both). A violation only when a disparity grew: current gap - reference gap > its limit; a gap missing on
    either side (no labels, < 2 segment values kept) is not compared. `keys`: (gap key, limit name, label)
    per gap compared (default a binary task's; `ml.monitor_tasks.BIAS_KEYS` has the others')."""
    limits = {
        "max_positive_rate_gap_change": max_positive_rate_gap_change,
        "max_accuracy_gap_change": max_accuracy_gap_change,
    }
    compared = [
        (key, limits[limit], label)
        for key, limit, label in keys
        or (
            ("positive_rate_gap", "max_positive_rate_gap_change", "positive-prediction rate"),
            ("accuracy_gap", "max_accuracy_gap_change", "accuracy"),
        )
    ]
    columns: dict[str, Any] = {}
    reasons: list[str] = []
    reference = reference or {}
    for col in current:
        if col not in reference:
            continue
        ref, cur = reference[col] or {}, current[col] or {}
        info: dict[str, Any] = {"reasons": []}
        for key, limit, label in compared:
            now, before = _f(cur.get(key)), _f(ref.get(key))
            change = None if now is None or before is None else now - before
            info[key], info[f"reference_{key}"], info[f"{key}_change"] = now, before, change
            if change is not None and change > limit:
                info["reasons"].append(
                    f"{col}: {label} gap {now:.2f} vs {before:.2f} in the reference "
                    f"(+{_shown(change, limit)} > {limit:.2f})"
                )
        info["violation"] = bool(info["reasons"])
        reasons += info["reasons"]
        columns[str(col)] = info
    return {"columns": columns, "violation": bool(reasons), "reasons": reasons}


# ---- feature-attribution drift --------------------------------------------------------------------------
def prediction_importance(
    predict: Callable[[pd.DataFrame], np.ndarray],
    frame: pd.DataFrame,
    features: Sequence[str],
    *,
    repeats: int = 3,
    seed: int = 0,
    max_rows: int = 2000,
) -> dict[str, float]:
    """Label-free permutation importance: mean over `repeats` shuffles of mean |p(x) - p(x with feature f
    shuffled)|, on at most `max_rows` rows (seeded sample). Needs no labels, so it is available the day the
    batch arrives. Deterministic for the same seed; column dtypes (category, object) are kept when shuffling.
    `predict` gets frames with all of `frame`'s columns and returns one value per row (a positive-class
    probability, a predicted value) or one row of class probabilities per row (then the change is the total
    variation, half the sum of the absolute changes)."""
    import numpy as np
    import pandas as pd

    features = list(features)
    missing = [f for f in features if f not in frame.columns]
    if missing:
        raise ValueError(f"frame: missing feature columns {missing[:5]}.")
    if repeats < 1:
        raise ValueError(f"repeats: expected at least 1. Got {repeats}.")
    if max_rows < 1:
        raise ValueError(f"max_rows: expected at least 1. Got {max_rows}.")
    if len(frame) == 0:
        raise ValueError("frame: expected at least one row. Got 0.")
    rng = np.random.default_rng(seed)
    if len(frame) > max_rows:
        frame = frame.iloc[np.sort(rng.choice(len(frame), size=max_rows, replace=False))]
    frame = frame.reset_index(drop=True)
    n = len(frame)

    def scored(frames: list[pd.DataFrame]) -> np.ndarray:
        rows = sum(len(f) for f in frames)
        p = np.asarray(
            predict(pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]), dtype="float64"
        )
        p = p.reshape(len(p), -1) if p.ndim == 2 else p.reshape(-1, 1)
        if len(p) != rows:
            raise ValueError(f"predict: expected {rows} predictions (one per row). Got {len(p)}.")
        return p

    # one shuffled copy per (feature, repeat), drawn in that order; scored in batches of <= MAX_PREDICT_ROWS
    pending: list[pd.DataFrame] = [frame]
    out: list[np.ndarray] = []
    for f in features:
        column = frame[f]
        for _ in range(repeats):
            pending.append(frame.assign(**{f: column.iloc[rng.permutation(n)].set_axis(frame.index)}))
            if (len(pending) + 1) * n > MAX_PREDICT_ROWS:
                out.append(scored(pending))
                pending = []
    if pending:
        out.append(scored(pending))
    scores = np.concatenate(out)
    base = scores[:n]
    # one value per row: the change of the probability (or predicted value); several per row (multiclass
    # probabilities): the total-variation change, half the sum of the absolute changes
    width = scores.shape[1]
    moved = np.abs(scores[n:].reshape(len(features), repeats, n, width) - base)
    moved = moved[..., 0] if width == 1 else moved.sum(axis=3) / 2
    changes = moved.mean(axis=2).mean(axis=1)
    return {f: float(changes[i]) for i, f in enumerate(features)}


def _value(values: Mapping[str, Any], name: str) -> float | None:
    v = values.get(name)
    return None if v is None else _f(v)


def _ranked(values: Mapping[str, Any], names: Sequence[str]) -> list[str]:
    """`names` by decreasing value; names without a value last; ties by name (deterministic)."""

    def key(name: str) -> tuple[bool, float, str]:
        v = _value(values, name)
        return (v is None, 0.0 if v is None else -v, name)

    return sorted(names, key=key)


def ndcg(baseline: Mapping[str, float], current: Mapping[str, float], *, k: int | None = None) -> float:
    """Model Monitor's attribution-drift score: DCG of the current ranking with the baseline attributions as
    relevance, over the ideal (baseline) ranking's, on the top `k` (default: all baseline features).
    Features missing from `current` rank last there; features only in `current` are ignored. In [0, 1]."""
    names = list(baseline)
    if not names:
        raise ValueError("baseline: expected at least one feature. Got none.")
    if k is not None and int(k) < 1:
        raise ValueError(f"k: expected at least 1 (or None for all features). Got {k}.")
    k = len(names) if k is None else min(int(k), len(names))
    relevance = {f: max(0.0, _value(baseline, f) or 0.0) for f in names}
    ideal = _ranked(baseline, names)[:k]
    live = _ranked(current, names)[:k]
    idcg = sum(relevance[f] / math.log2(i + 2) for i, f in enumerate(ideal))
    if idcg == 0:
        return 1.0
    dcg = sum(relevance[f] / math.log2(i + 2) for i, f in enumerate(live))
    return float(min(1.0, max(0.0, dcg / idcg)))


def attribution_drift(
    baseline: Mapping[str, float],
    current: Mapping[str, float],
    *,
    min_ndcg: float = ATTRIBUTION_NDCG_LIMIT,
    k: int | None = None,
) -> dict[str, Any]:
    """nDCG of the current importance ranking vs the baseline's, a violation below `min_ndcg`, and both
    rankings (baseline features only) for the report."""
    score = ndcg(baseline, current, k=k)
    names = list(baseline)
    base_rank, cur_rank = _ranked(baseline, names), _ranked(current, names)
    violation = score < min_ndcg
    shown = _shown(score, min_ndcg)
    if violation:
        more = ", ..." if len(names) > 4 else ""
        reason = (
            f"attribution nDCG {shown} < {min_ndcg}: top features now {', '.join(cur_rank[:4])}{more} "
            f"(were {', '.join(base_rank[:4])}{more})"
        )
    else:
        reason = f"attribution nDCG {shown} >= {min_ndcg}"
    return {
        "ndcg": score,
        "min_ndcg": min_ndcg,
        "violation": bool(violation),
        "baseline_rank": base_rank,
        "current_rank": cur_rank,
        "importance": {f: _value(current, f) or 0.0 for f in names},
        "baseline_importance": {f: _value(baseline, f) or 0.0 for f in names},
        "reason": reason,
    }


# ---- performance without labels (CBPE) ------------------------------------------------------------------
@dataclass(frozen=True)
class Calibrator:
    """An isotonic map of scores to probabilities, kept as its breakpoints (plain tuples: JSON-able, and
    applied with np.interp, clipped outside the fitted range, so no sklearn object is pickled)."""

    x: tuple[float, ...]
    y: tuple[float, ...]

    def __post_init__(self) -> None:
        if not self.x or len(self.x) != len(self.y):
            raise ValueError(
                f"y: expected {len(self.x)} values (one per breakpoint in x, at least one). "
                f"Got {len(self.y)}."
            )

    def __call__(self, scores: np.ndarray) -> np.ndarray:
        import numpy as np

        return np.clip(np.interp(_scores(scores, "scores"), self.x, self.y), 0.0, 1.0)

    def to_dict(self) -> dict[str, list[float]]:
        return {"x": list(self.x), "y": list(self.y)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Sequence[float]]) -> Calibrator:
        """From `to_dict()` output."""
        if "x" not in d or "y" not in d:
            raise ValueError(f"calibrator: expected keys 'x' and 'y'. Got {sorted(d)[:5]}.")
        return cls(x=tuple(float(v) for v in d["x"]), y=tuple(float(v) for v in d["y"]))


def fit_calibrator(scores: np.ndarray, labels: np.ndarray) -> Calibrator:
    """Isotonic regression of the labels on the scores (on the champion's out-of-time holdout), so that
    the CBPE estimate reads calibrated probabilities."""
    from sklearn.isotonic import IsotonicRegression

    p = _scores(scores, "scores")
    y = _labels(labels, len(p))
    if len(set(y.tolist())) < 2:
        raise ValueError(
            f"labels: expected both classes 0 and 1 to fit a calibrator. Got {sorted(set(y.tolist()))}."
        )
    iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(p, y)
    return Calibrator(
        x=tuple(float(v) for v in iso.X_thresholds_), y=tuple(float(v) for v in iso.y_thresholds_)
    )


def calibration_error(labels: np.ndarray, probabilities: np.ndarray, *, bins: int = 10) -> float:
    """Expected calibration error: rows-weighted mean |mean p - mean y| over the non-empty equal-width bins
    of [0, 1] (p = 1 falls in the last bin)."""
    import numpy as np

    if int(bins) < 1:
        raise ValueError(f"bins: expected at least 1. Got {bins}.")
    p = _scores(probabilities, "probabilities", unit=True)
    if len(p) == 0:
        raise ValueError("probabilities: expected at least one value. Got 0.")
    y = _labels(labels, len(p))
    which = np.minimum((p * bins).astype(int), bins - 1)
    # rows_b * |mean p_b - mean y_b| == |sum p_b - sum y_b|; empty bins add 0
    gaps = np.abs(
        np.bincount(which, weights=p, minlength=bins) - np.bincount(which, weights=y, minlength=bins)
    )
    return float(gaps.sum() / len(p))


def estimate_performance(probabilities: np.ndarray, *, threshold: float = 0.5) -> dict[str, Any]:
    """CBPE: expected accuracy at `threshold` and expected ROC AUC, assuming the probabilities are calibrated
    (each row is positive with probability p). roc_auc is None when no positive or no negative is expected."""
    import numpy as np

    p = _scores(probabilities, "probabilities", unit=True)
    if len(p) == 0:
        raise ValueError("probabilities: expected at least one value. Got 0.")
    positive = p >= threshold
    accuracy = float(np.where(positive, p, 1 - p).mean())
    pos_total, neg_total = float(p.sum()), float((1 - p).sum())
    auc = None
    if pos_total > 0 and neg_total > 0:
        ps = np.sort(p)[::-1]
        tp, fp = np.cumsum(ps), np.cumsum(1 - ps)
        last = np.r_[np.nonzero(np.diff(ps))[0], len(ps) - 1]  # one ROC point per distinct threshold
        tpr = np.r_[0.0, tp[last] / pos_total]
        fpr = np.r_[0.0, fp[last] / neg_total]
        tpr[-1] = fpr[-1] = 1.0  # ends at (1, 1) exactly, whatever the rounding of the sums
        auc = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))
    return {
        "roc_auc": auc,
        "accuracy": accuracy,
        "positive_rate": float(p.mean()),
        "positive_prediction_rate": float(positive.mean()),
        "rows": int(len(p)),
        "threshold": float(threshold),
    }


# ---- the day's report -----------------------------------------------------------------------------------
