"""`driftwatch check-config`: what the defaults would do with a new dataset, before its first backfill.

A dry run on the lake as it is: the original window stands in for the first champion's training data (the
reference), the days after it are checked the way the daily flow would check them, and nothing is written
(no history, no MLflow, no reports). Per day: the validation (Great Expectations, the same suite; quarantined
or novelty) and the drift flag (the calibrated thresholds on that reference, Evidently's own stat tests; and,
for comparison, Evidently's default threshold 0.1). No model is trained, so the AUC-drop trigger is not
simulated: the report says so. Then the settings that depend on the batch size, resolved, with warnings.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import TYPE_CHECKING, Any

from ml.config import Settings

if TYPE_CHECKING:
    import pandas as pd

DEFAULT_DAYS = 28
EVIDENTLY_DEFAULT = 0.1  # Evidently's threshold for the normed Wasserstein and Jensen-Shannon distances
MIN_HOLDOUT_ROWS = 300  # fewer holdout rows: the promotion gate's AUC confidence interval is wide


def check(settings: Settings, *, days: int = DEFAULT_DAYS) -> dict[str, Any]:
    """The dry run's figures (see the module doc). Raises BatchMissingError when the original window has no
    data in the lake."""
    import numpy as np

    from ml import calibration, drift, validation
    from ml import data as lake
    from ml.exceptions import BatchMissingError
    from ml.tasks.train_challenger import REFERENCE_ROWS

    s = settings
    available = lake.available_days(s)
    original = [d for d in available if s.original_start <= d <= s.original_end]
    if not original:
        raise BatchMissingError(
            f"{s.lake_dir}: no partition in the original window {s.original_start}..{s.original_end}: "
            f"`driftwatch prepare {s.name}` or deliver the batches first."
        )
    later = [d for d in available if d > s.original_end][:days]
    reference = lake.read_days(s, original)
    rows_per_day = [int(n) for n in reference.groupby(s.date_column).size().tolist()]
    if len(reference) > REFERENCE_ROWS:
        reference = reference.sample(n=REFERENCE_ROWS, random_state=s.training.seed)
    frame = drift._model_columns(s, reference, None)
    labels = reference[s.date_column] if s.date_column in reference.columns else None
    cal = None
    if s.drift.calibrate:
        cal = calibration.calibrate(
            frame,
            numeric=list(s.numeric),
            categorical=list(s.categorical),
            days=labels,
            methods={c: str(o["method"]) for c, o in s.drift_columns.items() if o.get("method")},
            false_alarm_rate=s.drift.false_alarm_rate,
            drift_share=s.thresholds.drift_share,
            seed=s.training.seed,
        )
    limits, tests = _limits(s, frame, cal)
    out_days = []
    reasons: Counter[str] = Counter()
    for d in later:
        files = lake.batch_files(s.partition_dir(d))
        result = validation.validate_batch(s, d, reference=reference, files=files, write_report=False)
        row: dict[str, Any] = {
            "day": d.isoformat(),
            "rows": result.rows,
            "quarantined": not result.success,
            "novelty": [f.column or f.expectation for f in result.novelty],
        }
        for f in result.failures:
            reasons[f"{f.column or 'table'}: {f.expected}"[:160]] += 1
        if result.success:
            batch = drift._model_columns(s, lake.read_files(files), None)
            row.update(_flags(s, frame, batch, limits, tests))
        out_days.append(row)
        rows_per_day.append(result.rows)
    checked = [r for r in out_days if not r["quarantined"]]
    median_rows = float(np.median(rows_per_day)) if rows_per_day else 0.0
    return {
        "dataset": s.name,
        "yaml": str(s.yaml_path),
        "original_days": len(original),
        "reference_rows": len(reference),
        "days_checked": len(out_days),
        "rows_per_day": {
            "min": min(rows_per_day, default=0),
            "median": median_rows,
            "max": max(rows_per_day, default=0),
        },
        "quarantined": sum(r["quarantined"] for r in out_days),
        "quarantine_reasons": reasons.most_common(5),
        "novelty_days": sum(bool(r["novelty"]) for r in out_days),
        "flagged": sum(bool(r.get("flagged")) for r in checked),
        "flagged_evidently_defaults": sum(bool(r.get("flagged_default")) for r in checked),
        "calibration": None
        if cal is None
        else {k: cal[k] for k in ("samples", "column_rate", "markov_rate", "correlation", "skipped")},
        "thresholds": {c: {"method": m, "threshold": t} for c, (m, t) in limits.items()},
        "settings": _resolved(s, median_rows),
        "warnings": _warnings(s, median_rows, len(original)),
        "days": out_days,
    }


def _limits(
    s: Settings, frame: pd.DataFrame, cal: dict[str, Any] | None
) -> tuple[dict[str, tuple[str, float]], dict[str, Any]]:
    """Per feature (method, threshold) as the drift step would use them, and its stat test."""
    from ml import calibration

    limits: dict[str, tuple[str, float]] = {}
    for col in s.features:
        given = dict(s.drift_columns.get(col) or {})
        calibrated = (cal or {}).get("columns", {}).get(col)
        method = given.get("method") or (calibrated or {}).get("method")
        method = method or calibration.default_method(frame[col], col in s.categorical)
        if "threshold" in given:
            threshold = float(given["threshold"])
        elif calibrated is not None:
            threshold = float(calibrated["threshold"])
        else:
            threshold = EVIDENTLY_DEFAULT
        limits[col] = (str(method), threshold)
    tests = {c: calibration._stattest(m, c in s.categorical) for c, (m, _) in limits.items()}
    return limits, tests


def _flags(
    s: Settings,
    reference: pd.DataFrame,
    batch: pd.DataFrame,
    limits: dict[str, tuple[str, float]],
    tests: dict[str, Any],
) -> dict[str, Any]:
    from ml import calibration

    drifted, by_default, tested = [], 0, 0
    for col, (_, threshold) in limits.items():
        ref, cur = reference[col].dropna(), batch[col].dropna()
        if ref.empty or cur.empty:
            continue
        tested += 1
        score = calibration._score(tests[col], ref, cur, col in s.categorical)
        if score >= threshold:
            drifted.append(col)
        by_default += score >= EVIDENTLY_DEFAULT
    share = len(drifted) / tested if tested else 0.0
    return {
        "drift_share": round(share, 4),
        "drifted": drifted,
        "flagged": share >= s.thresholds.drift_share,
        "flagged_default": tested > 0 and by_default / tested >= s.thresholds.drift_share,
    }


def _resolved(s: Settings, median_rows: float) -> dict[str, Any]:
    t = s.thresholds
    return {
        "drift.calibrate": s.drift.calibrate,
        "drift.false_alarm_rate": s.drift.false_alarm_rate,
        "thresholds.drift_share": t.drift_share,
        "thresholds.quality_drop": t.quality_drop,
        "thresholds.cooldown_days": t.cooldown_days,
        "thresholds.min_new_days": s.min_new_days,
        "thresholds.min_new_rows": t.min_new_rows,
        "validation.novelty": s.validation.novelty,
        "holdout rows (holdout_days x median rows)": int(s.holdout_days * median_rows),
    }


def _warnings(s: Settings, median_rows: float, original_days: int) -> list[str]:
    from ml.calibration import MIN_DAYS

    t, v, out = s.thresholds, s.validation, []
    if median_rows and v.min_rows > median_rows / 2:
        out.append(
            f"validation.min_rows {v.min_rows} is above half the median batch ({median_rows:.0f} rows): "
            "ordinary small days may be quarantined"
        )
    if median_rows and v.max_rows < 2 * median_rows:
        out.append(
            f"validation.max_rows {v.max_rows} is below twice the median batch ({median_rows:.0f} rows)"
        )
    if median_rows and t.min_new_rows > 0:
        need = math.ceil(t.min_new_rows / median_rows)
        if need > max(s.min_new_days, t.cooldown_days):
            out.append(
                f"thresholds.min_new_rows {t.min_new_rows} takes about {need} days of {median_rows:.0f} rows: "
                "it, not the cooldown, decides when a retrain may happen (thresholds.min_new_days counts days)"
            )
    holdout_rows = s.holdout_days * median_rows
    if median_rows and holdout_rows < MIN_HOLDOUT_ROWS:
        out.append(
            f"the holdout holds about {holdout_rows:.0f} rows ({s.holdout_days} days): the promotion gate's AUC "
            f"interval will be wide; consider holdout_days >= {math.ceil(MIN_HOLDOUT_ROWS / median_rows)}"
        )
    if s.drift.calibrate and original_days < MIN_DAYS:
        out.append(
            f"the original window has {original_days} days (< {MIN_DAYS}): the drift thresholds are calibrated on "
            "random samples of it, which miss how days differ; a longer window calibrates on real days"
        )
    if not s.drift.calibrate:
        out.append(
            "drift.calibrate is false: Evidently's thresholds (or drift.columns) ignore the batch size"
        )
    return out


def format_report(r: dict[str, Any]) -> str:
    """The dry run as text."""
    n, checked = r["days_checked"], r["days_checked"] - r["quarantined"]
    rows = r["rows_per_day"]
    lines = [
        f"{r['dataset']} ({r['yaml']}): dry run of the defaults, nothing written",
        f"reference          {r['original_days']} days of the original window, {r['reference_rows']:,} rows "
        f"(stands in for the first champion's training data)",
        f"rows a day         min {rows['min']:,}  median {rows['median']:,.0f}  max {rows['max']:,}",
        f"days checked       {n} after the original window",
        f"quarantined        {r['quarantined']} of {n}"
        + ("  (expected: none of ordinary days)" if r["quarantined"] else ""),
    ]
    for reason, count in r["quarantine_reasons"]:
        lines.append(f"  {count:>3} x  {reason}")
    lines += [
        f"novelty            {r['novelty_days']} of {n} days (recorded and alerted, not quarantined)",
        f"drift flagged      {r['flagged']} of {checked} days"
        + (
            f"; with Evidently's 0.1 thresholds: {r['flagged_evidently_defaults']} of {checked}"
            if checked
            else ""
        ),
    ]
    cal = r["calibration"]
    if cal:
        lines.append(
            f"calibration        {cal['samples']}; per-feature rate {cal['column_rate']:.4f} "
            f"(Markov bound {cal['markov_rate']:.4f})"
        )
    lines.append(
        "thresholds         " + ", ".join(f"{c} {m} {t:.3g}" for c, (m, t) in _pairs(r["thresholds"]))
    )
    lines.append("AUC-drop trigger   not simulated (no model is trained in a dry run)")
    lines.append("settings           " + ", ".join(f"{k} = {v}" for k, v in r["settings"].items()))
    for w in r["warnings"]:
        lines.append(f"WARNING            {w}")
    return "\n".join(lines)


def _pairs(thresholds: dict[str, Any]) -> list[tuple[str, tuple[str, float]]]:
    return [(c, (v["method"], v["threshold"])) for c, v in thresholds.items()]
