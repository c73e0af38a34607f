"""Model Monitor's other checks on the day's batch, with the serving champion (beside `detect_drift`):

- performance without labels: the champion's AUC and accuracy estimated from its calibrated scores (CBPE);
- bias drift: per segment column, the gap between segment values' positive-prediction rates (and accuracy,
  once the labels are known) vs the same gap on the champion's reference;
- feature-attribution drift: nDCG of the champion's feature ranking on the day vs on its reference;
- labels arriving today (`label_delay_days` > 0): the realized quality of the day whose labels arrive now,
  recorded on that day's row beside its estimate.

Per task (`ml.monitor_tasks`): a multiclass champion's macro F1 and accuracy are estimated the same way
(per-class calibrators), its bias gaps are of predicted-class shares and accuracy; a regression has no
label-free estimate (the page says why) and its gaps are of mean prediction and absolute error, in the
label's standard deviations; attribution shuffles against the class probabilities or the predicted value.

Writes model_monitor.html/.json (the "Model monitor" tab) and logs to the day's MLflow monitoring run. Alerts
on a violation of a check whose action is `alert` or `retrain`.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any, TypedDict

from ml import data as lake
from ml import monitoring, registry
from ml.config import Settings
from ml.day import Day
from ml.exceptions import ModelError
from ml.history import History
from ml.monitor_tasks import BIAS_KEYS

HTML = "model_monitor.html"
JSON = "model_monitor.json"
REFERENCE = "monitor_reference.json"


class LabelsArrived(TypedDict):
    day: str
    quality_drop: float | None


class Output(TypedDict, total=False):
    skipped: bool  # no champion yet
    reason: str
    estimated_auc: float | None  # the estimated primary metric (binary AUC, multiclass macro F1)
    estimated_quality_drop: float | None
    bias_violation: bool | None
    bias_reason: str | None  # the first reason of a violation
    attribution_ndcg: float | None
    attribution_violation: bool | None
    labels_arrived: LabelsArrived | None
    alerts: list[str]
    report: str


def run(day: Day) -> Output:
    from ml.evaluate import classification_metrics
    from ml.reports import monitor_page

    s, h, d = day.settings, day.history, day.date
    champion = day.serving_champion()
    if champion is None:
        return {"skipped": True, "reason": "no champion yet", "alerts": []}
    mon = s.monitoring
    ref = reference(s, h, champion)
    batch = lake.read_batch(s, d)
    preds = lake.read_predictions(s, d)
    if preds is None or len(preds) != len(batch):
        raise ModelError(f"{s.partition_dir(d)}: no champion scores for the batch; run score_batch first")
    objective = s.objective
    scores = objective.from_frame(preds)  # binary: the positive class's probability (ml.objective's `pred`)
    labels_now = s.labels_known(d, d)
    y = lake.model_frame(s, batch)[1].to_numpy() if labels_now else None
    fields: dict[str, Any] = {}
    alerts: list[str] = []

    estimated = monitoring.estimate(mon, ref, scores)
    if estimated is not None:
        fields["estimated_quality"] = estimated
        if s.task == "binary":
            if ref.get("holdout_auc") is not None and estimated.get("roc_auc") is not None:
                fields["estimated_quality_drop"] = float(ref["holdout_auc"]) - float(estimated["roc_auc"])
        elif ref.get("holdout_quality") is not None and estimated.get(objective.primary) is not None:
            fields["estimated_quality_drop"] = objective.drop(
                float(ref["holdout_quality"]), float(estimated[objective.primary])
            )
    if labels_now:
        fields["labels_known_on"] = d.isoformat()

    bias = monitoring.bias(mon, ref, {c: batch[c].to_numpy() for c in mon.bias.segments}, scores, y)
    # labels of an earlier day arrive today: its realized quality, beside the estimate made on its day
    arrived = None
    if s.label_delay_days > 0:
        arrived = _labels_arrive(s, h, d - dt.timedelta(days=s.label_delay_days), d)
        if bias is not None and arrived and arrived.get("bias"):
            bias["labels_day"] = arrived["day"]
            bias["labels_day_violation"] = bool(arrived["bias"]["violation"])
            bias["labels_day_reasons"] = arrived["bias"]["reasons"]
    if bias is not None:
        violated = bool(bias["violation"] or bias.get("labels_day_violation"))
        fields.update(bias=bias, bias_violation=violated)
        if violated and mon.bias.action != "record":
            alerts += bias["reasons"] + [
                f"{bias['labels_day']} (labels arrived): {r}" for r in bias.get("labels_day_reasons") or []
            ]

    attribution = None
    if mon.attribution.enabled and ref.get("importance"):
        model = registry.version_model(s, h, champion)
        X, _ = lake.model_frame(s, batch.assign(**{s.label: batch.get(s.label, 0)}))
        attribution = monitoring.attribution(
            mon,
            ref,
            _predictor(s, model),
            X,
            s.features,
            s.training.seed,
        )
    if attribution is not None:
        fields.update(
            attribution=attribution,
            attribution_ndcg=attribution["ndcg"],
            attribution_violation=bool(attribution["violation"]),
        )
        if attribution["violation"] and mon.attribution.action != "record":
            alerts.append(attribution["reason"])

    if y is not None:
        realized = classification_metrics(y, scores) if s.task == "binary" else objective.metrics(y, scores)
        note = "labels arrive with the batch"
    else:
        realized = None
        note = (
            f"labels arrive {s.label_delay_days} days later: the realized metrics of {d} are recorded on "
            f"{d + dt.timedelta(days=s.label_delay_days)}"
        )
        if arrived:
            note += (
                f"; today the labels of {arrived['day']} arrived (realized AUC {_fmt(arrived['quality'])})"
            )
    folder = s.report_dir(d)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / HTML).write_text(
        monitor_page(
            d.isoformat(),
            s.name,
            champion_version=champion,
            bias=bias,
            attribution=attribution,
            estimated=estimated,
            realized=realized,
            calibration=ref.get("calibration"),
            labels_note=note,
            task=s.task,
            estimation_note=ref.get("estimation"),
        )
    )
    summary = {
        "day": d.isoformat(),
        "champion_version": champion,
        "estimated_quality": estimated,
        "realized_quality": realized,
        "calibration": ref.get("calibration"),
        "bias": bias,
        "attribution": attribution,
        "labels_arrived": arrived,
        "alerts": alerts,
    }
    (folder / JSON).write_text(json.dumps(summary, indent=1, default=float))
    h.update_day(s.name, d, **fields)
    h.add_reports(s.name, d, monitor=str(folder / HTML))
    _log_metrics(s, h, d, champion, fields, folder / HTML)
    reasons = (bias or {}).get("reasons") or (bias or {}).get("labels_day_reasons") or []
    return {
        "estimated_auc": (estimated or {}).get(objective.primary),
        "estimated_quality_drop": fields.get("estimated_quality_drop"),
        "bias_violation": fields.get("bias_violation"),
        "bias_reason": (reasons[0] if reasons else "a segment disparity moved")
        if fields.get("bias_violation")
        else None,
        "attribution_ndcg": fields.get("attribution_ndcg"),
        "attribution_violation": fields.get("attribution_violation"),
        "labels_arrived": {"day": arrived["day"], "quality_drop": arrived.get("quality_drop")}
        if arrived
        else None,
        "alerts": alerts,
        "report": str(folder / HTML),
    }


def reference(s: Settings, h: History, version: int) -> dict[str, Any]:
    """The champion's fitted monitor reference (`ml.monitoring.fit`), computed once per version and cached
    beside its model."""
    cache = Path(s.paths.models) / s.name / f"v{version}" / REFERENCE
    if cache.is_file():
        out: dict[str, Any] = json.loads(cache.read_text())
        return out
    record = h.get_model(s.name, version) or {}
    holdout_days = [dt.date.fromisoformat(x) for x in record.get("holdout_days") or []]
    holdout = lake.read_days(s, holdout_days)
    scores = s.objective.from_frame(registry.artifact(s, h, version, "holdout_scores.parquet"))
    if len(scores) != len(holdout):
        raise ModelError(
            f"{s.name} v{version}: {len(scores)} holdout scores for {len(holdout)} holdout rows "
            f"({record.get('holdout_days')}); the lake changed since it was trained"
        )
    predict = None
    reference_X = None
    if s.monitoring.attribution.enabled:
        reference_X, _ = lake.model_frame(s, registry.artifact(s, h, version, "reference.parquet"))
        predict = _predictor(s, registry.version_model(s, h, version))

    out = monitoring.fit(
        s.monitoring,
        version=version,
        holdout=holdout,
        holdout_scores=scores,
        holdout_labels=lake.model_frame(s, holdout)[1].to_numpy(),
        holdout_day=holdout[s.date_column].astype(str).str[:10].to_numpy(),
        reference_X=reference_X,
        features=s.features,
        predict=predict,
        seed=s.training.seed,
        holdout_auc=(record.get("holdout_metrics") or {}).get(s.objective.primary),
        task=s.task,
    )
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp")
    tmp.write_text(json.dumps(out, default=float))
    tmp.replace(cache)
    return out


def _predictor(s: Settings, model: Any) -> Any:
    """What attribution shuffles against: the positive class's probability (binary), the class probabilities
    (multiclass), the predicted value (regression)."""
    if s.task == "binary":
        return lambda frame: model.predict_proba(frame[s.features])[:, 1]  # the binary path as it always was
    from ml import train

    return lambda frame: train.predictions(model, s, frame[s.features])


def _fmt(quality: dict[str, Any] | None) -> str:
    auc = (quality or {}).get("roc_auc")
    return "n/a" if auc is None else f"{auc:.3f}"


def _labels_arrive(s: Settings, h: History, labelled: dt.date, on: dt.date) -> dict[str, Any] | None:
    """The labels of `labelled` become readable on `on`: record its realized quality (of the champion that
    served it, from its stored scores), its quality drop, and its accuracy gaps between segments."""
    from ml.evaluate import classification_metrics

    row = h.get_day(s.name, labelled)
    if not row or row.get("status") != "accepted" or labelled <= s.original_end:
        return None
    preds = lake.read_predictions(s, labelled)
    if preds is None:
        return None
    batch = lake.read_batch(s, labelled)
    if len(preds) != len(batch):
        return None
    known = batch[s.label].notna().to_numpy()  # captured traffic: the rows whose label has arrived
    if not known.any():
        return None
    batch = batch[known].reset_index(drop=True)
    y = lake.model_frame(s, batch)[1].to_numpy()
    scores = preds["score"].to_numpy()[known]
    quality = classification_metrics(y, scores)
    if not known.all():
        quality = {**quality, "batch_rows": len(known)}  # `rows`: the labelled ones
    champion = (
        int(preds["champion_version"].iloc[0]) if "champion_version" in preds else row.get("champion_version")
    )
    model = h.get_model(s.name, champion) if champion else None
    holdout_auc = ((model or {}).get("holdout_metrics") or {}).get("roc_auc")
    fields: dict[str, Any] = {"quality": quality, "labels_known_on": on.isoformat()}
    realized_auc = quality.get("roc_auc")
    if holdout_auc is not None and realized_auc is not None:
        fields["quality_drop"] = float(holdout_auc) - float(realized_auc)
    out: dict[str, Any] = {
        "day": labelled.isoformat(),
        "quality": quality,
        "quality_drop": fields.get("quality_drop"),
    }
    if s.monitoring.bias.segments and champion:
        bias = monitoring.bias(
            s.monitoring,
            reference(s, h, champion),
            {c: batch[c].to_numpy() for c in s.monitoring.bias.segments},
            scores,
            y,
        )
        assert bias is not None
        fields.update(bias=bias, bias_violation=bool(bias["violation"] or row.get("bias_violation")))
        out["bias"] = bias
    h.update_day(s.name, labelled, **fields)
    return out


def _log_metrics(
    s: Settings, h: History, d: dt.date, champion: int, fields: dict[str, Any], page: Path
) -> None:
    metrics: dict[str, Any] = {}
    for key, value in (fields.get("estimated_quality") or {}).items():
        if key in ("roc_auc", "accuracy", "macro_f1"):
            metrics[f"estimated_{key}"] = value
    metrics["attribution_ndcg"] = fields.get("attribution_ndcg")
    for col, info in ((fields.get("bias") or {}).get("columns") or {}).items():
        for key, _, _ in BIAS_KEYS[s.task]:
            metrics[f"bias_{col}_{key}"] = info.get(key)
    registry.log_monitoring(s, h, d, champion, metrics, [("monitor", page)])
