"""Model Monitor's other checks: bias drift, feature-attribution drift, and performance without labels.

Pure functions on arrays and frames (the step `ml.steps.monitor` reads and writes); nothing heavy is
imported at module import.

- Bias drift (SageMaker's ModelBiasMonitor, simplified to what a daily batch supports): per segment column,
  the gap between segment values' positive-prediction rates (and accuracy / recall once labels are known),
  compared with the same gap on the champion's reference.
- Feature-attribution drift (ModelExplainabilityMonitor): global importances on the reference and on the
  day, rankings compared by nDCG; Model Monitor flags nDCG < 0.9. The importance is label-free permutation
  importance: the mean absolute change of the predicted probability when a feature is shuffled, so it is
  available on the day the batch arrives, like SHAP attributions are.
- Performance without labels (NannyML's CBPE): with calibrated probabilities, the expected accuracy and the
  expected ROC curve follow from the probabilities alone.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

ATTRIBUTION_NDCG_LIMIT = 0.9  # Model Monitor's documented default


def _f(x: Any) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def _gap(values: list[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return float(max(kept) - min(kept)) if len(kept) >= 2 else None


# ---- bias drift -----------------------------------------------------------------------------------------
def segment_stats(
    segments: Mapping[str, Any],
    scores: np.ndarray,
    labels: np.ndarray | None,
    *,
    threshold: float = 0.5,
    min_rows: int = 50,
) -> dict[str, dict[str, Any]]:
    """Per segment column and value (>= `min_rows` rows): rows, positive-prediction rate, accuracy and
    recall (None without labels; recall None without positives), and the gaps (max - min) across values."""
    import numpy as np
    import pandas as pd

    scores = np.asarray(scores, dtype="float64")
    n = len(scores)
    if labels is not None:
        labels = np.asarray(labels).astype("int64")
        if len(labels) != n:
            raise ValueError(f"labels: expected {n} values (one per score). Got {len(labels)}.")
    predicted = scores >= threshold
    out: dict[str, dict[str, Any]] = {}
    for column, values in segments.items():
        values = pd.Series(np.asarray(values, dtype=object))
        if len(values) != n:
            raise ValueError(f"segments[{column!r}]: expected {n} values (one per score). Got {len(values)}.")
        keys = values.where(values.notna(), None)
        stats: dict[str, dict[str, Any]] = {}
        skipped = 0
        for key in sorted({str(v) for v in keys if v is not None}):
            mask = (keys.astype(str) == key).to_numpy() & keys.notna().to_numpy()
            rows = int(mask.sum())
            if rows < min_rows:
                skipped += 1
                continue
            entry: dict[str, Any] = {"rows": rows, "positive_prediction_rate": float(predicted[mask].mean()),
                                     "accuracy": None, "recall": None}
            if labels is not None:
                y = labels[mask]
                entry["accuracy"] = float((predicted[mask] == (y == 1)).mean())
                positives = y == 1
                entry["recall"] = float(predicted[mask][positives].mean()) if positives.any() else None
            stats[key] = entry
        out[str(column)] = {
            "segments": stats,
            "positive_rate_gap": _gap([v["positive_prediction_rate"] for v in stats.values()]),
            "accuracy_gap": _gap([v["accuracy"] for v in stats.values()]) if labels is not None else None,
            "recall_gap": _gap([v["recall"] for v in stats.values()]) if labels is not None else None,
            "skipped": skipped,
            "min_rows": min_rows,
        }
    return out


def bias_drift(
    reference: Mapping[str, Any],
    current: Mapping[str, Any],
    *,
    max_positive_rate_gap_change: float,
    max_accuracy_gap_change: float,
) -> dict[str, Any]:
    """Compare the current gaps with the reference's; a violation when a gap grew by more than its limit."""
    columns: dict[str, Any] = {}
    reasons: list[str] = []
    for col in current:
        if col not in (reference or {}):
            continue
        ref, cur = reference[col], current[col]
        info: dict[str, Any] = {"reasons": []}
        for key, limit, label in (("positive_rate_gap", max_positive_rate_gap_change, "positive-prediction rate"),
                                  ("accuracy_gap", max_accuracy_gap_change, "accuracy")):
            now, before = _f(cur.get(key)), _f(ref.get(key))
            change = None if now is None or before is None else now - before
            info[key], info[f"reference_{key}"], info[f"{key}_change"] = now, before, change
            if change is not None and change > limit:
                info["reasons"].append(f"{col}: {label} gap {now:.2f} vs {before:.2f} in the reference "
                                       f"(+{change:.2f} > {limit:.2f})")
        info["violation"] = bool(info["reasons"])
        reasons += info["reasons"]
        columns[col] = info
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
    """Label-free permutation importance: mean |p(x) - p(x with feature f shuffled)| over `repeats`
    shuffles, on at most `max_rows` rows (seeded sample). Deterministic for the same seed."""
    import numpy as np

    missing = [f for f in features if f not in frame.columns]
    if missing:
        raise ValueError(f"frame: missing feature columns {missing[:5]}.")
    if repeats < 1:
        raise ValueError(f"repeats: expected at least 1. Got {repeats}.")
    if len(frame) == 0:
        raise ValueError("frame: expected at least one row. Got 0.")
    rng = np.random.default_rng(seed)
    if len(frame) > max_rows:
        frame = frame.iloc[np.sort(rng.choice(len(frame), size=max_rows, replace=False))]
    import pandas as pd

    frame = frame.reset_index(drop=True)
    n = len(frame)
    # every shuffled copy in one frame and one predict call: per-call overhead dominates on small frames
    copies = []
    for f in features:
        original = frame[f].to_numpy()
        for _ in range(repeats):
            copies.append(frame.assign(**{f: original[rng.permutation(n)]}))
    scores = np.asarray(predict(pd.concat([frame, *copies], ignore_index=True)), dtype="float64")
    base = scores[:n]
    changes = np.abs(scores[n:].reshape(len(features), repeats, n) - base).mean(axis=2)
    return {f: float(changes[i].mean()) for i, f in enumerate(features)}


def _ranked(values: Mapping[str, float], names: Sequence[str]) -> list[str]:
    return sorted(names, key=lambda f: (-float(values.get(f, 0.0) or 0.0), f))


def ndcg(baseline: Mapping[str, float], current: Mapping[str, float], *, k: int | None = None) -> float:
    """Model Monitor's attribution-drift score: DCG of the current ranking with the baseline attributions as
    relevance, over the ideal (baseline) ranking's; top `k` features (default all of the baseline's)."""
    names = list(baseline)
    if not names:
        raise ValueError("baseline: expected at least one feature. Got none.")
    k = len(names) if k is None else int(k)
    if k < 1:
        raise ValueError(f"k: expected at least 1. Got {k}.")
    ideal = _ranked(baseline, names)[:k]
    live = _ranked({f: current.get(f, 0.0) for f in names}, names)[:k]
    relevance = {f: max(0.0, float(baseline[f] or 0.0)) for f in names}
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
    score = ndcg(baseline, current, k=k)
    names = list(baseline)
    base_rank, cur_rank = _ranked(baseline, names), _ranked(current, names)
    violation = score < min_ndcg
    if violation:
        reason = (f"attribution nDCG {score:.2f} < {min_ndcg}: top features now {', '.join(cur_rank[:4])} "
                  f"(were {', '.join(base_rank[:4])})")
    else:
        reason = f"attribution nDCG {score:.2f} >= {min_ndcg}"
    return {"ndcg": score, "min_ndcg": min_ndcg, "violation": violation, "baseline_rank": base_rank,
            "current_rank": cur_rank, "importance": {f: float(current.get(f, 0.0)) for f in names},
            "baseline_importance": {f: float(baseline[f]) for f in names}, "reason": reason}


# ---- performance without labels (CBPE) ------------------------------------------------------------------
@dataclass(frozen=True)
class Calibrator:
    """An isotonic map of scores to probabilities, as plain breakpoints (JSON-able)."""

    x: tuple[float, ...]
    y: tuple[float, ...]

    def __call__(self, scores: Any) -> np.ndarray:
        import numpy as np

        return np.clip(np.interp(np.asarray(scores, dtype="float64"), self.x, self.y), 0.0, 1.0)

    def to_dict(self) -> dict[str, list[float]]:
        return {"x": list(self.x), "y": list(self.y)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Sequence[float]]) -> Calibrator:
        return cls(x=tuple(float(v) for v in d["x"]), y=tuple(float(v) for v in d["y"]))


def _labels(labels: Any, n: int, name: str = "labels") -> np.ndarray:
    import numpy as np

    y = np.asarray(labels)
    if len(y) != n:
        raise ValueError(f"{name}: expected {n} values (one per score). Got {len(y)}.")
    if not set(np.unique(y).tolist()) <= {0, 1}:
        raise ValueError(f"{name}: expected 0/1 values. Got {sorted(set(np.unique(y).tolist()))[:5]}.")
    return y.astype("int64")


def fit_calibrator(scores: Any, labels: Any) -> Calibrator:
    """Isotonic regression of the labels on the scores (fitted on the reference's out-of-fold scores)."""
    import numpy as np
    from sklearn.isotonic import IsotonicRegression

    p = np.asarray(scores, dtype="float64")
    y = _labels(labels, len(p))
    if len(set(y.tolist())) < 2:
        raise ValueError("labels: expected both classes to fit a calibrator. Got one.")
    iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(p, y)
    return Calibrator(x=tuple(float(v) for v in iso.X_thresholds_), y=tuple(float(v) for v in iso.y_thresholds_))


def calibration_error(labels: Any, probabilities: Any, *, bins: int = 10) -> float:
    """Expected calibration error: rows-weighted mean |mean p - mean y| over equal-width bins of [0, 1]."""
    import numpy as np

    p = np.asarray(probabilities, dtype="float64")
    y = _labels(labels, len(p))
    if len(p) == 0:
        raise ValueError("probabilities: expected at least one value. Got 0.")
    which = np.minimum((p * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            total += mask.sum() * abs(p[mask].mean() - y[mask].mean())
    return float(total / len(p))


def estimate_performance(probabilities: Any, *, threshold: float = 0.5) -> dict[str, Any]:
    """CBPE: expected accuracy at `threshold` and expected ROC AUC, assuming calibrated probabilities."""
    import numpy as np

    p = np.clip(np.asarray(probabilities, dtype="float64"), 0.0, 1.0)
    if len(p) == 0:
        raise ValueError("probabilities: expected at least one value. Got 0.")
    positive = p >= threshold
    accuracy = float(np.where(positive, p, 1 - p).mean())
    pos_total, neg_total = p.sum(), (1 - p).sum()
    auc = None
    if pos_total > 0 and neg_total > 0:
        order = np.argsort(-p, kind="mergesort")
        ps = p[order]
        tp, fp = np.cumsum(ps), np.cumsum(1 - ps)
        last = np.r_[np.nonzero(np.diff(ps))[0], len(ps) - 1]  # one ROC point per distinct threshold
        tpr = np.r_[0.0, tp[last] / pos_total]
        fpr = np.r_[0.0, fp[last] / neg_total]
        auc = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))
    return {"roc_auc": auc, "accuracy": accuracy, "positive_rate": float(p.mean()),
            "positive_prediction_rate": float(positive.mean()), "rows": len(p)}


# ---- the day's report -----------------------------------------------------------------------------------
_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:16px;color:#222}h1{font-size:19px}h2{font-size:16px;margin-top:22px}
table{border-collapse:collapse;margin:6px 0 10px}td,th{border:1px solid #ddd;padding:3px 8px;text-align:right}
th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}.bad{background:#fde2e1;color:#9b1c1c}
.ok{color:#1d6b35}.note{color:#555}.flag{font-weight:600}
"""


def _n(value: Any, digits: int = 3) -> str:
    return "" if value is None else html.escape(f"{value:.{digits}f}" if isinstance(value, float) else str(value))


def render_html(
    day: str,
    dataset: str,
    *,
    champion_version: int | None,
    bias: Mapping[str, Any] | None,
    attribution: Mapping[str, Any] | None,
    estimated: Mapping[str, Any] | None,
    realized: Mapping[str, Any] | None,
    calibration: Mapping[str, Any] | None,
    labels_note: str,
) -> str:
    e = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>Model monitor — {e(dataset)} {e(day)}"
             f"</title><style>{_CSS}</style></head><body>",
             f"<h1>Model monitor — {e(dataset)} {e(day)}</h1>",
             f"<p class='note'>Serving champion: version {e(str(champion_version))}.</p>",
             "<h2>Performance: estimated without labels (CBPE) and realized</h2>"]
    if estimated is None and realized is None:
        parts.append("<p>not computed: estimation is off and the labels are not known yet.</p>")
    else:
        parts.append("<table><tr><th>metric</th><th>estimated (CBPE)</th><th>realized</th></tr>")
        for key, label in (("roc_auc", "ROC AUC"), ("accuracy", "accuracy at 0.5"),
                           ("positive_rate", "share of positive labels")):
            parts.append(f"<tr><td>{label}</td><td>{_n((estimated or {}).get(key))}</td>"
                         f"<td>{_n((realized or {}).get(key)) or '—'}</td></tr>")
        parts.append("</table>")
    parts.append(f"<p class='note'>{e(labels_note)}</p>")
    if calibration:
        parts.append(
            "<p class='note'>Calibration of the champion on its holdout "
            f"({_n(calibration.get('rows'))} rows): expected calibration error {_n(calibration.get('ece_raw'))} "
            f"for its raw scores, {_n(calibration.get('ece_calibrated'))} after the isotonic calibrator the "
            "estimate uses (fitted on its holdout; this error cross-fitted: fitted on half of the holdout days, "
            "measured on the others).</p>")

    parts.append("<h2>Bias drift: disparity between segments vs the champion's reference</h2>")
    if not bias:
        parts.append("<p>not computed: no segment columns configured (monitoring.bias.segments).</p>")
    else:
        flag = "<span class='flag bad'>violation</span>" if bias.get("violation") else "<span class='ok'>ok</span>"
        parts.append(f"<p>Today: {flag}. " + e("; ".join(bias.get("reasons") or [])) + "</p>")
        if bias.get("labels_day"):
            late = "violation" if bias.get("labels_day_violation") else "ok"
            parts.append(f"<p>Labels of {e(str(bias['labels_day']))} arrived today: accuracy gaps {late}. "
                         + e("; ".join(bias.get("labels_day_reasons") or [])) + "</p>")
        for col, info in (bias.get("columns") or {}).items():
            cls = " class='bad'" if info.get("violation") else ""
            parts.append(
                f"<h3{cls}>{e(col)}</h3><p class='note'>positive-prediction rate gap {_n(info.get('positive_rate_gap'))}"
                f" (reference {_n(info.get('reference_positive_rate_gap'))}); accuracy gap "
                f"{_n(info.get('accuracy_gap')) or '—'} (reference {_n(info.get('reference_accuracy_gap'))})</p>")
            seg = ((bias.get("segments") or {}).get(col) or {})
            parts.append("<table><tr><th>value</th><th>rows</th><th>positive-prediction rate</th><th>accuracy</th>"
                         "<th>recall</th></tr>")
            for value, s in (seg.get("segments") or {}).items():
                parts.append(f"<tr><td>{e(str(value))}</td><td>{_n(s.get('rows'))}</td>"
                             f"<td>{_n(s.get('positive_prediction_rate'))}</td><td>{_n(s.get('accuracy')) or '—'}</td>"
                             f"<td>{_n(s.get('recall')) or '—'}</td></tr>")
            parts.append("</table>")
            if seg.get("skipped"):
                parts.append(f"<p class='note'>{seg['skipped']} value(s) under {seg.get('min_rows')} rows left out.</p>")

    parts.append("<h2>Feature attribution: ranking today vs the reference</h2>")
    if not attribution:
        parts.append("<p>not computed: attribution monitoring is off.</p>")
    else:
        cls = "bad" if attribution.get("violation") else "ok"
        parts.append(f"<p class='{cls}'>nDCG {attribution['ndcg']:.2f} (violation below "
                     f"{attribution.get('min_ndcg')}): {e(attribution.get('reason', ''))}</p>")
        base_pos = {f: i + 1 for i, f in enumerate(attribution.get("baseline_rank") or [])}
        parts.append("<table><tr><th>rank today</th><th>feature</th><th>importance today</th>"
                     "<th>reference importance</th><th>reference rank</th></tr>")
        for i, f in enumerate(attribution.get("current_rank") or []):
            parts.append(f"<tr><td>{i + 1}</td><td>{e(f)}</td><td>{_n(attribution['importance'].get(f), 4)}</td>"
                         f"<td>{_n(attribution['baseline_importance'].get(f), 4)}</td><td>{base_pos.get(f, '')}</td></tr>")
        parts.append("</table><p class='note'>Importance: mean absolute change of the champion's predicted "
                     "probability when the feature is shuffled (no labels needed).</p>")
    parts.append("</body></html>")
    return "\n".join(parts)
