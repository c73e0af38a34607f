"""Evidently drift of the day's batch against the serving champion's training data (a reference sample):
per-feature drift with Evidently's default test per column type (overrides in the YAML's `drift.columns`),
the share of drifted features, prediction drift, and the quality on the batch's labels when they came with
it. Writes the day's `drift.html` (the "Drift report" tab) and `drift.json`, and logs them to the day's
MLflow monitoring run."""

from __future__ import annotations

from typing import Any, TypedDict

from ml import data as lake
from ml import registry
from ml.day import Day


class Output(TypedDict, total=False):
    skipped: bool  # no champion yet
    reason: str
    drift_share: float
    dataset_drift: bool
    quality_drop: float | None  # the champion's holdout AUC minus its AUC on the day's labels
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
    result = drift.detect_drift(
        s,
        d,
        current=current,
        reference=reference,
        current_scores=None if preds is None else preds["score"].to_numpy(),
        reference_scores=reference_scores,
        champion_holdout=model.get("holdout_metrics"),
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
    h.add_reports(s.name, d, drift=result["html_path"])
    metrics: dict[str, Any] = {"drift_share": result["drift_share"], "n_drifted": result["n_drifted"]}
    for k, v in (result.get("quality") or {}).items():
        if isinstance(v, int | float):
            metrics[f"batch_{k}"] = v
    metrics["quality_drop"] = result.get("quality_drop")
    if result.get("prediction_drift"):
        metrics["prediction_drift"] = result["prediction_drift"]["score"]
    registry.log_monitoring(
        s, h, d, champion, metrics, [("drift", result["html_path"]), ("drift", result.get("json_path"))]
    )
    return {
        "drift_share": result["drift_share"],
        "dataset_drift": bool(result["dataset_drift"]),
        "quality_drop": result.get("quality_drop"),
        "report": result["html_path"],
    }
