"""The promotion gate of a multiclass or regression task (a binary task: ml/evaluate.py, unchanged).

The same rule as the binary gate, on the task's own metrics (ml/objective.py): promote only when the lower
bound of the paired-bootstrap interval of the gain on the primary metric (macro F1; RMSE, lower is better)
exceeds `min_delta`, the guardrail holds (multiclass: log loss may not grow by more than
`thresholds.logloss_tolerance`; regression: MAE may not grow by more than `thresholds.mae_tolerance`,
relative) and no configured segment loses more than `evaluation.segment_tolerance` on the primary metric
(for RMSE a relative increase). The first champion must beat the naive baseline on its holdout (the most
frequent class; the holdout's mean). The thresholds are checked with `mlflow.validate_evaluation_results`.
"""

from __future__ import annotations

from typing import Any

from ml.config import Settings
from ml.evaluate import decide_checks, segment_check


def compare_task(
    settings: Settings,
    y: Any,
    p_champion: Any | None,
    p_challenger: Any,
    *,
    min_delta: float,
    segments: dict[str, Any] | None = None,
    naive: float | None = None,
) -> dict[str, Any]:
    """`ml.evaluate.compare` for a multiclass or regression task: the same keys (promote, reason,
    challenger, champion, bootstrap_ci, checks, segments, holdout_rows), plus `task` and `metric`.

    `naive`: the naive model the first champion must beat, learned from its training labels (their mean,
    or the position of their most frequent class); None: from the holdout's own labels (an oracle, stricter).
    """
    import numpy as np
    from mlflow.models import MetricThreshold

    o, t = settings.objective, settings.thresholds
    y, new = np.asarray(y), np.asarray(p_challenger)
    challenger = o.metrics(y, new)
    out: dict[str, Any] = {
        "challenger": challenger,
        "holdout_rows": int(len(y)),
        "task": o.task,
        "metric": o.primary,
    }
    if p_champion is None:
        baseline = _baseline(o, y, naive)
        gain = o.gain(baseline, float(challenger[o.primary] or 0.0))
        candidate = {"gain_over_baseline": gain}
        thresholds = {"gain_over_baseline": MetricThreshold(threshold=1e-12, greater_is_better=True)}
        checks: dict[str, dict[str, Any]] = {
            "gain_over_baseline": {"value": gain, "threshold": 0.0, "rule": ">", "baseline": baseline}
        }
        out.update(champion=None, bootstrap_ci=None)
    else:
        old = np.asarray(p_champion)
        champion = o.metrics(y, old)
        ci = o.paired_bootstrap(
            y, old, new, resamples=t.bootstrap_resamples, confidence=t.confidence, seed=settings.training.seed
        )
        guard, tolerance = o.guardrail_change(champion, challenger), guardrail_tolerance(o.task, t)
        candidate = {"gain_ci_low": ci["low"], "guardrail_increase": guard}
        thresholds = {
            "gain_ci_low": MetricThreshold(threshold=min_delta + 1e-12, greater_is_better=True),
            "guardrail_increase": MetricThreshold(threshold=tolerance, greater_is_better=False),
        }
        checks = {
            "gain_ci_low": {"value": ci["low"], "threshold": min_delta, "rule": ">"},
            "guardrail_increase": {
                "value": guard,
                "threshold": tolerance,
                "rule": "<=",
                "metric": o.guardrail,
            },
        }
        out.update(champion=champion, bootstrap_ci=ci)
        if segments:
            table = _segments(settings, y, old, new, segments)
            name = "worst_segment_drop"
            candidate[name], thresholds[name], checks[name] = segment_check(
                table, settings.evaluation.segment_tolerance
            )
            out["segments"] = table
    decide_checks(out, thresholds, candidate, checks)
    out["reason"] = _reason(settings, out, min_delta)
    return out


def _baseline(o: Any, y: Any, naive: float | None = None) -> float:
    """The primary metric of the naive model on the holdout: a constant, the training labels' mean or most
    frequent class (`naive`), else the holdout's own."""
    import numpy as np

    if o.task == "regression":
        constant = float(np.mean(y)) if naive is None else float(naive)
        return float(o.value(y, np.full(len(y), constant)))
    common = int(np.bincount(y[y >= 0], minlength=len(o.classes)).argmax()) if naive is None else int(naive)
    proba = np.zeros((len(y), len(o.classes)))
    proba[:, common] = 1.0
    return float(o.value(y, proba))


def guardrail_tolerance(task: str, t: Any) -> float:
    """How much worse the guardrail may get (`Objective.guardrail_change`): MAE relative, else log loss."""
    return float(t.mae_tolerance if task == "regression" else t.logloss_tolerance)


def _segments(
    settings: Settings, y: Any, old: Any, new: Any, segments: dict[str, Any]
) -> list[dict[str, Any]]:
    """Per segment value with >= evaluation.min_segment_rows rows: both models' primary metric and how much
    the challenger loses (for RMSE relative), largest loss first."""
    import numpy as np
    import pandas as pd

    o = settings.objective
    table = []
    for column, values in segments.items():
        codes, uniques = pd.factorize(pd.Series(np.asarray(values, dtype=object)), use_na_sentinel=True)
        for code, value in enumerate(uniques):
            rows = codes == code
            if int(rows.sum()) < settings.evaluation.min_segment_rows:
                continue
            a, b = o.value(y[rows], old[rows]), o.value(y[rows], new[rows])
            if a is None or b is None:
                continue
            loss = -o.gain(a, b) if o.higher_is_better else (b - a) / a if a > 0 else 0.0
            table.append(
                {
                    "column": column,
                    "value": value.item() if isinstance(value, np.generic) else value,
                    "rows": int(rows.sum()),
                    "champion": a,
                    "challenger": b,
                    "drop": float(loss),
                }
            )
    table.sort(key=lambda r: (-r["drop"], r["column"], str(r["value"])))
    return table


def _reason(settings: Settings, out: dict[str, Any], min_delta: float) -> str:
    o, ch = settings.objective, out["challenger"]
    name = o.label
    if out["champion"] is None:
        check = out["checks"]["gain_over_baseline"]
        verdict = (
            "first champion"
            if out["promote"]
            else "no champion: bootstrap model no better than the naive one"
        )
        return f"{verdict}: holdout {name} {ch[o.primary]:.4f} (naive model {check['baseline']:.4f})"
    ci = out["bootstrap_ci"]
    gain = (
        f"{name} {out['champion'][o.primary]:.4f} -> {ch[o.primary]:.4f}, gain {ci['delta']:+.4f} "
        f"({settings.thresholds.confidence:.0%} CI {ci['low']:+.4f}..{ci['high']:+.4f})"
    )
    checks = out["checks"]
    if out["promote"]:
        return f"promoted: {gain}; lower bound above {min_delta}; {o.guardrail} within tolerance"
    reasons = []
    if not checks["gain_ci_low"]["passed"]:
        reasons.append(f"gain not shown (lower bound {ci['low']:+.4f} <= {min_delta})")
    if not checks["guardrail_increase"]["passed"]:
        g = checks["guardrail_increase"]
        reasons.append(f"{o.guardrail} worse by {g['value']:+.4f} (tolerance {g['threshold']})")
    seg = checks.get("worst_segment_drop")
    if seg and not seg["passed"]:
        reasons.append(
            f"segment {seg['segment']} loses {seg['value']:.3f} {name} (tolerance {seg['threshold']})"
        )
    return f"rejected: {gain}; " + "; ".join(reasons)
