"""Drift check of one logical date: feature drift, prediction drift and batch quality.

`detect_drift` compares the day's batch with a reference window, column by column with Evidently 0.7's own
stat tests (the test its `ValueDrift` metric picks per column type and size, or the one `drift.columns` /
the calibration names, with its threshold), computed once and without building a report; it writes
`drift.json` with the returned summary (a few KB) and returns that summary as a small JSON-able dict with
fixed keys. The full Evidently report (`ml.drift_report`) is rendered from the kept batch and reference
only when a person opens it, and on the days that trigger a retrain (the evidence logged with the
challenger).

Evidently and pandas are imported inside the functions: importing Evidently takes seconds and must never
happen when an Airflow DAG file is parsed.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ml import calibration as calib
from ml import evaluate
from ml.config import Settings
from ml.data import as_date
from ml.exceptions import ConfigError, DataQualityError, SchemaError

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

log = logging.getLogger(__name__)

# A reference above this many rows is replaced by a seeded random sample of this size. Evidently's cost grows
# with the reference (three drift passes and histograms per column: ~7 CPU s for 30 columns at 50k rows,
# ~10 s at 100k, ~16 s at 200k, ~50 s at 1M), while the sample moves a normed Wasserstein score near its
# threshold by well under 0.01, against ~0.03 of noise from a 1,000-row batch itself. scripts/bench_drift.py
# measures both (docs/benchmarks.md, "Drift check").
MAX_REFERENCE_ROWS = 50_000
REFERENCE_SAMPLE_SEED = 20130101

# Column holding the champion's scores inside the frames handed to Evidently.
PREDICTION_COLUMN = "prediction"
# Scores at or above this are predicted positive (Evidently's `probas_threshold` uses the same `>=`).
DECISION_THRESHOLD = 0.5

REPORT_FILE = "drift.html"
SUMMARY_FILE = "drift.json"

RESULT_KEYS = (
    "day",
    "rows_current",
    "rows_reference",
    "n_features",
    "n_drifted",
    "drift_share",
    "dataset_drift",
    "drifted_columns",
    "columns",
    "prediction_drift",
    "quality",
    "quality_drop",
    "quality_se",
    "thresholds",
    "html_path",
    "json_path",
    "seconds",
)


def detect_drift(
    settings: Settings,
    day: dt.date,
    *,
    current: pd.DataFrame,
    reference: pd.DataFrame,
    current_scores: np.ndarray | None = None,
    reference_scores: np.ndarray | None = None,
    champion_holdout: Mapping[str, Any] | None = None,
    report_path: Path | None = None,
    calibration: Mapping[str, Any] | None = None,
    current_pred: Any = None,
    render: bool = False,
) -> dict[str, Any]:
    """Compare the batch of `day` with the reference window; write `drift.json` (and with `render`, the
    Evidently report: `ml.drift_report`, which otherwise renders it when someone opens it).

    Args:
        settings: the dataset's settings (features, label, `thresholds.drift_share`, `drift_columns`).
        day: the logical date; the report's timestamp is this day at midnight UTC, never now.
        current: the day's raw partition frame (every column; features and label are picked from it).
        reference: the reference window, same layout. Above `MAX_REFERENCE_ROWS` rows a seeded random
            sample of that size is compared instead (the same sample for the same input).
        current_scores: the champion's positive-class probabilities on `current`, row-aligned.
            Enables the batch quality (with the label) and, with `reference_scores`, prediction drift.
        reference_scores: the champion's probabilities on `reference`, row-aligned.
        champion_holdout: the champion's holdout metrics; `quality_drop` = its `roc_auc` - the batch's.
        report_path: where the HTML goes (default: `settings.report_dir(day) / "drift.html"`); `drift.json`
            is written beside it.
        current_pred: a multiclass or regression task's predictions on `current` (`ml.objective`), for the
            batch quality; `current_scores` / `reference_scores` then hold its output (`Objective.output`).
        calibration: `ml.calibration.calibrate`'s result for this reference: its per-column method and
            threshold apply where `settings.drift_columns` gives no threshold. None: Evidently's defaults.

    Returns:
        A dict with the keys of `RESULT_KEYS`. `rows_reference` counts the reference as given (before
        sampling). A feature without a single value in the batch or the reference cannot be tested: it is
        listed in `columns` with method `skipped (...)`, score and threshold None, and left out of
        `n_features` and `drift_share`. `quality` is None without `current_scores` or labels; its `roc_auc`
        is None when the batch holds one label class. `positive_rate` is the share of positive labels.
        `quality_se` is the standard error of the batch's AUC (Hanley & McNeil), the noise of a drop.
        `thresholds` says where the thresholds came from: "calibrated" or "evidently defaults".
        `html_path` is None unless `render`. The sklearn numbers are authoritative; Evidently's
        ClassificationPreset is added to the HTML only when both sides have scores and fully labelled
        two-class data (it raises otherwise).

    Raises:
        SchemaError: a feature is missing from `current` or `reference`.
        DataQualityError: `current` or `reference` has no rows, or no feature has values in both.
        ConfigError: `settings.drift_columns` names an unknown column, method or key.
        ValueError: scores are not one finite probability per row, or `champion_holdout` lacks `roc_auc`.
    """
    started = time.perf_counter()
    day = as_date(day)
    features = list(settings.features)
    _check_frame(current, "current", settings)
    _check_frame(reference, "reference", settings)
    cur_scores = _check_scores(current_scores, "current_scores", len(current), settings.task)
    ref_scores = _check_scores(reference_scores, "reference_scores", len(reference), settings.task)
    if PREDICTION_COLUMN in features:
        raise ConfigError(
            f"{settings.yaml_path}: features: a feature may not be named {PREDICTION_COLUMN!r}; "
            "detect_drift uses that name for the champion's scores."
        )
    overrides = calib.column_overrides(
        settings, with_prediction=ref_scores is not None and cur_scores is not None
    )
    scored = ref_scores is not None and cur_scores is not None
    for col, spec in ((calibration or {}).get("columns") or {}).items():
        known = col in features or (col == PREDICTION_COLUMN and scored)
        if known and "threshold" not in overrides.get(col, {}):
            overrides[col] = {"method": spec["method"], "threshold": float(spec["threshold"])}

    rows_reference = len(reference)
    keep = None
    if rows_reference > MAX_REFERENCE_ROWS:
        keep = _sample_positions(rows_reference)
        log.info("%s %s: reference sampled to %d of %d rows", settings.name, day, len(keep), rows_reference)
    cur = _model_columns(settings, current, cur_scores)
    ref = _model_columns(settings, reference, ref_scores, keep)

    tested, skipped = [], {}
    for col in features:
        if not cur[col].notna().any():
            skipped[col] = "skipped (no values in current)"
        elif not ref[col].notna().any():
            skipped[col] = "skipped (no values in reference)"
        else:
            tested.append(col)
    if not tested:
        raise DataQualityError(
            f"{settings.name} {day}: detect_drift: no feature has values in both current and reference "
            f"(features: {_names(features)}). Check the batch and the reference window."
        )

    if settings.task == "binary":
        quality = _quality(settings, cur) if cur_scores is not None else None
    else:
        quality = settings.objective.batch_quality(cur.get(settings.label), current_pred)
    prediction_drift_on = cur_scores is not None and ref_scores is not None
    with_classification = (
        prediction_drift_on
        and quality is not None
        and _clean_labels(cur, settings.label)
        and _clean_labels(ref, settings.label)
    )

    results = column_results(settings, cur, ref, tested, overrides, prediction_drift=prediction_drift_on)

    columns: dict[str, dict[str, Any]] = {}
    for col in features:
        if col in skipped:
            columns[col] = {"method": skipped[col], "score": None, "threshold": None, "drifted": False}
        else:
            columns[col] = results[col]
    drifted = sorted(c for c in tested if columns[c]["drifted"])
    share = len(drifted) / len(tested)

    quality_drop, key = None, settings.objective.primary
    if champion_holdout is not None:
        if key not in champion_holdout:
            raise ValueError(
                f"detect_drift: champion_holdout must hold {key!r}. Got keys {_names(list(champion_holdout))}."
            )
        if quality is not None and quality[key] is not None and champion_holdout[key] is not None:
            quality_drop = settings.objective.drop(float(champion_holdout[key]), quality[key])

    html_path = Path(report_path) if report_path is not None else settings.report_dir(day) / REPORT_FILE
    json_path = html_path.with_name(SUMMARY_FILE)
    html_path.parent.mkdir(parents=True, exist_ok=True)
    if render:
        from ml import drift_report

        drift_report.write(
            settings,
            day,
            cur=cur,
            ref=ref,
            tested=tested,
            columns={c: columns[c] for c in tested},
            prediction=results.get(PREDICTION_COLUMN) if prediction_drift_on else None,
            classification=with_classification,
            rows_reference=rows_reference,
            path=html_path,
        )

    result: dict[str, Any] = {
        "day": day.isoformat(),
        "rows_current": len(cur),
        "rows_reference": rows_reference,
        "n_features": len(tested),
        "n_drifted": len(drifted),
        "drift_share": share,
        "dataset_drift": share >= settings.thresholds.drift_share,
        "drifted_columns": drifted,
        "columns": columns,
        "prediction_drift": results.get(PREDICTION_COLUMN) if prediction_drift_on else None,
        "quality": quality,
        "quality_drop": quality_drop,
        "quality_se": None if quality is None else quality.get(f"{key}_se"),
        "thresholds": "calibrated" if calibration else "evidently defaults",
        "html_path": str(html_path) if render else None,
        "json_path": str(json_path),
        "seconds": round(time.perf_counter() - started, 3),
    }
    tmp = json_path.with_name(f".{json_path.name}.tmp")
    tmp.write_text(json.dumps(result, indent=2, allow_nan=False))
    tmp.replace(json_path)
    log.info(
        "%s %s: %d/%d features drifted (share %.2f, dataset drift %s), prediction drift %s, quality drop %s; %s"
        " in %.2f s",
        settings.name,
        day,
        len(drifted),
        len(tested),
        share,
        result["dataset_drift"],
        None if result["prediction_drift"] is None else result["prediction_drift"]["drifted"],
        None if quality_drop is None else round(quality_drop, 4),
        html_path if render else json_path,
        result["seconds"],
    )
    return result


def column_results(
    settings: Settings,
    cur: pd.DataFrame,
    ref: pd.DataFrame,
    tested: Sequence[str],
    overrides: Mapping[str, Mapping[str, Any]],
    *,
    prediction_drift: bool,
) -> dict[str, dict[str, Any]]:
    """Per tested column (and the prediction column) {method, score, threshold, drifted}: Evidently's own
    stat test for the column, picked and thresholded as its `ValueDrift` metric does (`column_drift`)."""
    numeric = set(settings.numeric) | ({PREDICTION_COLUMN} if settings.task != "multiclass" else set())
    out = {}
    for col in [*tested, *([PREDICTION_COLUMN] if prediction_drift else [])]:
        spec = overrides.get(col, {})
        threshold = spec.get("threshold")
        out[col] = column_drift(
            ref[col],
            cur[col],
            categorical=col not in numeric,
            method=spec.get("method"),
            threshold=None if threshold is None else float(threshold),
        )
    return out


def column_drift(
    reference: pd.Series,
    current: pd.Series,
    *,
    categorical: bool,
    method: str | None,
    threshold: float | None,
) -> dict[str, Any]:
    """One column's drift with Evidently 0.7's own code, as its `ValueDrift` computes it
    (`ValueDriftCalculation.calculate` -> `get_one_column_drift`) without the figures it also builds: inf
    as missing, missing dropped, the stat test Evidently picks for the column type, sizes and values
    (`get_stattest`; `method` overrides), its default threshold unless `threshold`. tests/golden pins the
    numbers against the full Evidently report of before (tests/unit/test_drift_golden.py)."""
    import numpy as np
    from evidently.legacy.calculations.stattests.registry import get_stattest
    from evidently.legacy.core import ColumnType

    kind = ColumnType.Categorical if categorical else ColumnType.Numerical
    ref = reference.replace([-np.inf, np.inf], np.nan).dropna()
    now = current.replace([-np.inf, np.inf], np.nan).dropna()
    if ref.empty or now.empty:  # only inf left: Evidently's report raised here too
        side = "reference" if ref.empty else "current"
        raise DataQualityError(
            f"detect_drift: column {reference.name!r} has no finite value in the {side}. Expected at least one."
        )
    test = get_stattest(ref, now, kind, method)
    result = test(ref, now, kind, threshold)
    return {
        "method": test.name,
        "score": _finite(result.drift_score),
        "threshold": _finite(result.actual_threshold),
        "drifted": bool(result.drifted),
    }


def _quality(settings: Settings, cur: pd.DataFrame) -> dict[str, Any] | None:
    """sklearn metrics of the scores on the batch's labels; None when the batch has no label values."""
    from sklearn.metrics import accuracy_score, f1_score, log_loss, roc_auc_score

    if settings.label not in cur.columns:
        return None
    rows = cur[[settings.label, PREDICTION_COLUMN]].dropna()
    if rows.empty:
        return None
    y = rows[settings.label].astype("int64").to_numpy()
    p = rows[PREDICTION_COLUMN].to_numpy(dtype="float64")
    predicted = (p >= DECISION_THRESHOLD).astype("int64")
    two_classes = len(set(y.tolist())) == 2
    auc = float(roc_auc_score(y, p)) if two_classes else None
    return {
        "roc_auc": auc,
        "roc_auc_se": None
        if auc is None
        else evaluate.auc_standard_error(auc, int(y.sum()), int(len(y) - y.sum())),
        "accuracy": float(accuracy_score(y, predicted)),
        "f1": float(f1_score(y, predicted, zero_division=0)),
        "log_loss": float(log_loss(y, p, labels=[0, 1])),
        "positive_rate": float(y.mean()),
        "rows": len(rows),
    }


def _sample_positions(rows: int) -> np.ndarray:
    """Row positions of the reference sample: seeded, so the same reference gives the same decision."""
    import numpy as np

    rng = np.random.default_rng(REFERENCE_SAMPLE_SEED)
    return np.sort(rng.choice(rows, size=MAX_REFERENCE_ROWS, replace=False))


def _model_columns(
    settings: Settings, frame: pd.DataFrame, scores: np.ndarray | None, keep: np.ndarray | None = None
) -> pd.DataFrame:
    """Features (numeric float64, categorical str or None), the label as 0/1 and the scores, of rows `keep`."""
    import pandas as pd

    def column(name: str) -> pd.Series:
        # per column, so a 1M-row reference is never copied whole before sampling
        values = frame[name]
        return values if keep is None else values.iloc[keep]

    out = pd.DataFrame(index=pd.RangeIndex(len(frame) if keep is None else len(keep)))
    for col in settings.numeric:
        out[col] = pd.to_numeric(column(col), errors="coerce").to_numpy(dtype="float64")
    for col in settings.categorical:
        values = column(col).astype("object")
        values = values.where(values.notna(), None)  # type: ignore[call-overload]  # None: pandas' own NA
        if pd.api.types.infer_dtype(values, skipna=True) not in ("string", "empty"):
            values = values.map(_as_str)
        out[col] = values.to_numpy()
    if settings.label in frame.columns:
        label = column(settings.label)
        if settings.task == "binary":
            out[settings.label] = (
                (label == settings.positive).astype("float64").where(label.notna()).to_numpy()
            )
        elif settings.task == "multiclass":
            index = settings.objective.encode(label.to_numpy()).astype("float64")
            out[settings.label] = pd.Series(index).where(label.notna().to_numpy()).to_numpy()
        else:
            out[settings.label] = pd.to_numeric(label, errors="coerce").to_numpy(dtype="float64")
    if scores is not None:
        out[PREDICTION_COLUMN] = scores if keep is None else scores[keep]
    return out


def _as_str(value: Any) -> Any:
    return value if value is None or isinstance(value, str) else str(value)


def _clean_labels(frame: pd.DataFrame, label: str) -> bool:
    """Whether Evidently's binary metrics can run: every row labelled and both classes present."""
    return label in frame.columns and bool(frame[label].notna().all()) and frame[label].nunique() == 2


def _check_frame(frame: Any, name: str, settings: Settings) -> None:
    import pandas as pd

    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"detect_drift: {name} must be a pandas DataFrame. Got {type(frame).__name__}.")
    missing = [c for c in settings.features if c not in frame.columns]
    if missing:
        raise SchemaError(
            f"detect_drift: {name} lacks features of {settings.name}: {_names(missing)}. "
            f"Pass the raw partition frame (every column of the dataset)."
        )
    if frame.empty:
        raise DataQualityError(f"detect_drift: {name} has no rows. Expected at least one row to compare.")


def _check_scores(scores: Any, name: str, rows: int, task: str = "binary") -> np.ndarray | None:
    import numpy as np

    if scores is None:
        return None
    if task != "binary":  # a value (regression) or a class (multiclass) per row
        out = np.asarray(scores, dtype="float64" if task == "regression" else object).reshape(-1)
        if len(out) != rows:
            raise ValueError(
                f"detect_drift: {name} must hold one prediction per row ({rows}). Got {len(out)}."
            )
        return out
    values = np.asarray(scores, dtype="float64").reshape(-1)
    if len(values) != rows:
        raise ValueError(f"detect_drift: {name} must hold one score per row ({rows}). Got {len(values)}.")
    bad = ~np.isfinite(values) | (values < 0) | (values > 1)
    if bad.any():
        raise ValueError(
            f"detect_drift: {name} must be probabilities in [0, 1]. Got {int(bad.sum())}/{rows} values outside, "
            f"e.g. {values[bad][:3].tolist()}."
        )
    return values


def _finite(value: Any) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def _names(names: Sequence[str]) -> str:
    shown = ", ".join(repr(n) for n in names[:5])
    return f"[{shown}{', ...' if len(names) > 5 else ''}]"
