"""Evidently drift of the day's batch against the serving champion's training data (a reference sample):
per-feature drift with Evidently's default test per column type (overrides in the YAML's `drift.columns`),
the share of drifted features, prediction drift, and the quality on the batch's labels when they came with
it. Writes the day's `drift.json` and logs it with the metrics to the day's MLflow monitoring run; the full
Evidently report (the "Drift report" tab) is rendered when someone opens it or the day triggers a retrain
(ml/drift_report.py), and rendered reports older than `reports.keep_rendered_days` are deleted here."""

from __future__ import annotations

import json
from typing import Any, TypedDict

from ml import data as lake
from ml import registry
from ml.day import Day

CALIBRATION = "drift_calibration.json"  # beside the champion's cached model files


class Output(TypedDict, total=False):
    skipped: bool  # no champion yet
    reason: str
    drift_share: float
    dataset_drift: bool
    quality_drop: float | None  # how much worse than on its holdout the champion did on the day's labels
    quality_se: float | None  # the standard error of the day's AUC (how much of the drop noise explains)
    report: str


def run(day: Day) -> Output:
    from ml import drift

    s, h, d = day.settings, day.history, day.date
    champion = day.serving_champion()
    if champion is None:
        return {"skipped": True, "reason": "no champion yet"}
    reference = registry.artifact(s, h, champion, "reference.parquet")
    # out-of-fold scores of the reference rows: unbiased, unlike the champion's scores on its own training
    # rows, and row-aligned with the reference for Evidently
    reference_scores = registry.artifact(s, h, champion, "reference_scores.parquet")["score"].to_numpy()
    current = lake.read_batch(s, d)
    if not s.labels_known(d, d) and s.label in current.columns:
        current = current.drop(columns=[s.label])  # not arrived yet: no batch quality today (monitor_model)
    preds = lake.read_predictions(s, d)
    model = h.get_model(s.name, champion) or {}
    calibrated = calibration(day, champion, reference, reference_scores)
    result = drift.detect_drift(
        s,
        d,
        current=current,
        reference=reference,
        current_scores=None if preds is None else preds["score"].to_numpy(),
        current_pred=None if preds is None or s.task == "binary" else s.objective.from_frame(preds),
        reference_scores=reference_scores,
        champion_holdout=model.get("holdout_metrics"),
        calibration=calibrated,
    )
    pred = result.get("prediction_drift") or {}
    day.record(
        drift_share=result["drift_share"],
        dataset_drift=bool(result["dataset_drift"]),
        drifted_columns=result["drifted_columns"],
        prediction_drift=pred.get("score"),
        quality=result.get("quality"),
        quality_drop=result.get("quality_drop"),
    )
    h.add_reports(s.name, d, drift=result["json_path"])
    metrics: dict[str, Any] = {"drift_share": result["drift_share"], "n_drifted": result["n_drifted"]}
    for k, v in (result.get("quality") or {}).items():
        if isinstance(v, int | float):
            metrics[f"batch_{k}"] = v
    metrics["quality_drop"] = result.get("quality_drop")
    if result.get("prediction_drift"):
        metrics["prediction_drift"] = result["prediction_drift"]["score"]
    registry.log_monitoring(s, h, d, champion, metrics, [("drift", result["json_path"])])
    from ml import drift_report

    drift_report.prune(s, d)
    return {
        "drift_share": result["drift_share"],
        "dataset_drift": bool(result["dataset_drift"]),
        "quality_drop": result.get("quality_drop"),
        "quality_se": result.get("quality_se"),
        "report": result["json_path"],
    }


def calibration(day: Day, champion: int, reference: Any, reference_scores: Any) -> dict[str, Any] | None:
    """The champion's calibrated drift thresholds (ml/calibration.py), computed once per version and
    setting, cached beside its model; None with `drift.calibrate: false`."""
    from ml import calibration as cal
    from ml import drift
    from ml.tasks.train_challenger import REFERENCE_ROWS

    s = day.settings
    if not s.drift.calibrate:
        return None
    key = {
        "version": cal.VERSION,
        "false_alarm_rate": s.drift.false_alarm_rate,
        "drift_share": s.thresholds.drift_share,
        "columns": {c: dict(o) for c, o in s.drift_columns.items()},
    }
    cache = s.paths.models / s.name / f"v{champion}" / CALIBRATION
    if cache.is_file():
        cached: dict[str, Any] = json.loads(cache.read_text())
        if cached.get("key") == key:
            return cached
    frame = drift._model_columns(s, reference, reference_scores)
    days = reference[s.date_column] if s.date_column in reference.columns else None
    batches = {}
    if days is not None and len(reference) >= REFERENCE_ROWS:
        # a sample of a long window holds a fraction of each day: compare the chosen days whole
        for d in cal.choose_days(cal.day_labels(days), s.training.seed):
            whole = lake.read_days(s, [lake.as_date(d)])
            if len(whole):
                batches[d] = drift._model_columns(s, whole, None)
    out = cal.calibrate(
        frame,
        numeric=[*s.numeric, *([drift.PREDICTION_COLUMN] if s.task != "multiclass" else [])],
        categorical=[*s.categorical, *([drift.PREDICTION_COLUMN] if s.task == "multiclass" else [])],
        days=days,
        methods={c: str(o["method"]) for c, o in s.drift_columns.items() if o.get("method")},
        false_alarm_rate=s.drift.false_alarm_rate,
        drift_share=s.thresholds.drift_share,
        batches=batches,
        seed=s.training.seed,
        outside_share=[drift.PREDICTION_COLUMN],
    )
    out["key"] = key
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_name(f".{cache.name}.tmp")
    tmp.write_text(json.dumps(out, indent=1))
    tmp.replace(cache)
    return out
