"""The pipeline's steps, one function per DAG task. Orchestrator-free: the DAG, the CLI and the replay
harness call the same functions.

Every step takes the dataset name and the logical date, reads and writes only what belongs to that date,
and returns a small JSON-able dict (paths, versions, a few numbers) for XCom. The serving champion of a
day is the one in force after the previous day's run, read from the audit log, so re-running a day or
backfilling a range reproduces its decisions.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

from ml import data as lake
from ml.config import Settings, load_settings
from ml.exceptions import BatchMissingError, ModelError
from ml.history import History

log = logging.getLogger(__name__)

REFERENCE_ROWS = 50_000  # training rows kept as the drift/validation reference (seeded sample)


@lru_cache(maxsize=16)
def settings_for(dataset: str) -> Settings:
    return load_settings(dataset)


def history_for(settings: Settings) -> History:
    return History(settings.history_url)


def _ctx(dataset: str | Settings, day: str | dt.date) -> tuple[Settings, History, dt.date]:
    s = dataset if isinstance(dataset, Settings) else settings_for(dataset)
    return s, history_for(s), lake.as_date(day)


def serving_champion(settings: Settings, history: History, day: dt.date) -> int | None:
    """The champion that serves on `day`: the one in force after the previous day's run."""
    return history.champion_at(settings.name, day - dt.timedelta(days=1))


def _artifact(settings: Settings, history: History, version: int, name: str):
    """A parquet file logged with a model version (reference sample, holdout scores), cached locally."""
    import mlflow
    import pandas as pd

    from ml.registry import _configure

    cached = settings.paths.models / settings.name / f"v{version}" / name
    if not cached.is_file():
        record = history.get_model(settings.name, version)
        if record is None:
            raise ModelError(f"model version {version} of {settings.name} is not in the history database")
        _configure(settings)
        cached.parent.mkdir(parents=True, exist_ok=True)
        got = mlflow.artifacts.download_artifacts(
            run_id=record["run_id"], artifact_path=f"data/{name}", dst_path=str(cached.parent / "_download")
        )
        Path(got).replace(cached)
    return pd.read_parquet(cached)


# ---- wait_for_batch -------------------------------------------------------------------------------------
def batch_ready(dataset: str, day: str | dt.date) -> bool:
    """True when the day's partition is in the lake (or was quarantined by an earlier run of the day)."""
    s, _, d = _ctx(dataset, day)
    folder = s.partition_dir(d)
    if lake.partition_exists(s, d):
        log.info(
            "%s %s: batch found in %s (%s)",
            s.name,
            d,
            folder,
            ", ".join(p.name for p in lake.batch_files(folder)[:5]),
        )
        return True
    quarantined = lake.quarantined_files(s, d)
    if quarantined:
        log.info(
            "%s %s: no batch in %s, but the day was quarantined by an earlier run: re-checking %s",
            s.name,
            d,
            folder,
            s.quarantine_dir(d),
        )
        return True
    log.info("%s %s: waiting for the day's batch: no *.parquet file in %s yet", s.name, d, folder)
    return False


# ---- validate_batch -------------------------------------------------------------------------------------
def validate(dataset: str, day: str | dt.date, dag_run_id: str | None = None) -> dict[str, Any]:
    """Validate the day's batch against the serving champion's reference and the dataset's rules.

    Returns: {"ok", "rows", "summary", "report", "champion_version", "requarantine"}.
    """
    from ml import validation

    s, h, d = _ctx(dataset, day)
    champion = serving_champion(s, h, d)
    reference = _artifact(s, h, champion, "reference.parquet") if champion else None
    files = lake.batch_files(s.partition_dir(d))
    from_quarantine = False
    if not files:
        files = lake.quarantined_files(s, d)
        from_quarantine = bool(files)
    if not files:
        raise BatchMissingError(f"{s.partition_dir(d)}: no batch for {s.name} on {d}.")
    result = validation.validate_batch(s, d, reference=reference, files=files)
    if from_quarantine and result.success:
        # quarantined by an earlier run, passing now (rules changed): copy it back into the lake so the
        # day is scored and trained on like any accepted day; the quarantined copy stays as evidence
        import shutil

        s.partition_dir(d).mkdir(parents=True, exist_ok=True)
        for f in files:
            shutil.copy2(f, s.partition_dir(d) / f.name)
        log.warning(
            "%s %s: quarantined batch passes validation now; restored to %s", s.name, d, s.partition_dir(d)
        )
    h.start_day(
        s.name,
        d,
        status="accepted" if result.success else "invalid",
        rows=result.rows,
        validation=result.summary()[:4000],
        champion_version=champion,
        dag_run_id=dag_run_id,
        reports={"validation": result.html_path},
    )
    return {
        "ok": bool(result.success),
        "rows": result.rows,
        "summary": result.summary()[:1000],
        "report": result.html_path,
        "champion_version": champion,
        "requarantine": from_quarantine,
    }


def quarantine(dataset: str, day: str | dt.date, dag_run_id: str | None = None) -> dict[str, Any]:
    """Move a failed batch to the quarantine area (never delete) and record it. The alert is raised by the
    caller (the DAG's notifier on this task's success, `ml.pipeline` in-process)."""
    s, h, d = _ctx(dataset, day)
    row = h.get_day(s.name, d) or {}
    summary = row.get("validation") or "validation failed"
    if lake.partition_exists(s, d):
        target = lake.quarantine(
            s,
            d,
            {
                "dataset": s.name,
                "day": d.isoformat(),
                "dag_run_id": dag_run_id,
                "failures": summary,
                "validation_report": (row.get("reports") or {}).get("validation"),
            },
        )
    else:  # a re-run of a day quarantined before: the evidence is already there
        target = s.quarantine_dir(d)
    h.update_day(
        s.name,
        d,
        status="quarantined",
        decision="quarantine",
        reason=f"batch quarantined to {target}: {summary}"[:4000],
    )
    return {"path": str(target), "summary": summary[:1000]}


def _model(s: Settings, h: History, version: int) -> Any:
    """A registered version's pipeline; the history knows the run that logged it, so a task finds the local
    copy without a registry call."""
    from ml.registry import load_model

    return load_model(s, int(version), run_id=(h.get_model(s.name, int(version)) or {}).get("run_id"))


# ---- score_batch ----------------------------------------------------------------------------------------
def score(dataset: str, day: str | dt.date) -> dict[str, Any]:
    """Score the batch with the serving champion; store the scores beside the batch (data capture)."""
    import pandas as pd

    from ml.train import predict_proba

    s, h, d = _ctx(dataset, day)
    champion = serving_champion(s, h, d)
    if champion is None:
        return {"champion_version": None, "rows": 0, "path": None}
    frame = lake.read_batch(s, d)
    scores = predict_proba(_model(s, h, champion), s, frame)
    out = pd.DataFrame({"row": range(len(frame)), "score": scores, "champion_version": champion})
    path = lake.write_predictions(s, d, out)
    return {"champion_version": champion, "rows": len(frame), "path": str(path)}


# ---- monitor_model --------------------------------------------------------------------------------------
MONITOR_HTML = "model_monitor.html"
MONITOR_JSON = "model_monitor.json"
MONITOR_REFERENCE = "monitor_reference.json"


def monitor_reference(s: Settings, h: History, version: int) -> dict[str, Any]:
    """The champion's baseline for the model monitors, computed once per version and cached beside it.

    Calibration and bias come from the champion's own scores on its holdout days: out-of-time, like every
    day it will serve (scores on its training period, even out-of-fold, are optimistic about later days and
    would make every estimate too high). The calibrator is isotonic, fitted on the whole holdout; its
    calibration error is reported cross-fitted (fitted on half of the holdout days, measured on the other).
    The bias reference gap is the median of the holdout's daily gaps, so that one day is compared with
    days of the same size. Feature importances come from the reference sample of the training data, as
    Model Monitor's baseline does.
    """
    import numpy as np

    from ml import monitor

    cache = Path(s.paths.models) / s.name / f"v{version}" / MONITOR_REFERENCE
    if cache.is_file():
        return json.loads(cache.read_text())
    mon = s.monitoring
    record = h.get_model(s.name, version) or {}
    holdout_days = [dt.date.fromisoformat(x) for x in record.get("holdout_days") or []]
    holdout = lake.read_days(s, holdout_days)
    scores = _artifact(s, h, version, "holdout_scores.parquet")["score"].to_numpy()
    if len(scores) != len(holdout):
        raise ModelError(
            f"{s.name} v{version}: {len(scores)} holdout scores for {len(holdout)} holdout rows "
            f"({record.get('holdout_days')}); the lake changed since it was trained"
        )
    y = lake.model_frame(s, holdout)[1].to_numpy()
    calibrator = monitor.fit_calibrator(scores, y)
    day_of = holdout[s.date_column].astype(str).str[:10].to_numpy()
    days = sorted(set(day_of))
    calibration: dict[str, Any] = {
        "rows": len(holdout),
        "holdout_days": days,
        "ece_raw": monitor.calibration_error(y, scores),
        "estimated_on_holdout": monitor.estimate_performance(calibrator(scores)),
    }
    halves = [np.isin(day_of, days[0::2]), np.isin(day_of, days[1::2])]
    if all(len(set(y[m].tolist())) == 2 for m in halves):
        cross = np.empty(len(scores))
        for fit_on, apply_to in (halves, halves[::-1]):
            cross[apply_to] = monitor.fit_calibrator(scores[fit_on], y[fit_on])(scores[apply_to])
        calibration["ece_calibrated"] = monitor.calibration_error(y, cross)
    else:
        calibration["ece_calibrated"] = None
    bias = None
    if mon.bias.segments:
        kwargs = {"threshold": mon.bias.threshold, "min_rows": mon.bias.min_rows}
        bias = monitor.segment_stats(
            {c: holdout[c].to_numpy() for c in mon.bias.segments}, scores, y, **kwargs
        )
        daily = [
            monitor.segment_stats(
                {c: holdout[c].to_numpy()[day_of == d] for c in mon.bias.segments},
                scores[day_of == d],
                y[day_of == d],
                **kwargs,
            )
            for d in days
        ]
        for col, info in bias.items():
            for key in ("positive_rate_gap", "accuracy_gap", "recall_gap"):
                gaps = [one[col][key] for one in daily if one[col][key] is not None]
                info[key] = float(np.median(gaps)) if gaps else None
            info["gaps_from"] = "median of the holdout's daily gaps"
    importance = None
    if mon.attribution.enabled:
        model = _model(s, h, version)
        X, _ = lake.model_frame(s, _artifact(s, h, version, "reference.parquet"))
        importance = monitor.prediction_importance(
            lambda frame: model.predict_proba(frame[s.features])[:, 1],
            X,
            s.features,
            repeats=mon.attribution.repeats,
            seed=s.training.seed,
            max_rows=mon.attribution.rows,
        )
    out = {
        "version": version,
        "calibrator": calibrator.to_dict(),
        "calibration": calibration,
        "bias": bias,
        "importance": importance,
        "holdout_auc": (record.get("holdout_metrics") or {}).get("roc_auc"),
    }
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp")
    tmp.write_text(json.dumps(out, default=float))
    tmp.replace(cache)
    return out


def monitor(dataset: str, day: str | dt.date) -> dict[str, Any]:
    """Model Monitor's other checks on the day's batch, with the serving champion:

    - performance without labels: CBPE estimate of AUC and accuracy from the champion's calibrated scores;
    - bias drift: per segment column, the gap between segment values' positive-prediction rates (and
      accuracy, when the day's labels are known) vs the same gap on the champion's reference;
    - feature-attribution drift: nDCG of the champion's feature ranking on the day vs on its reference;
    - labels arriving today (`label_delay_days` > 0): the realized quality and accuracy gaps of the day
      whose labels arrive now, recorded on that day's row beside its estimate.

    Writes model_monitor.html/.json to the day's reports. Returns the violations and the alert flag:
    {"skipped"?, "estimated_auc", "bias_violation", "attribution_ndcg", "attribution_violation",
     "alerts": [str], "report"}.
    """
    from ml import monitor as mon_lib
    from ml.evaluate import classification_metrics

    s, h, d = _ctx(dataset, day)
    champion = serving_champion(s, h, d)
    if champion is None:
        return {"skipped": True, "reason": "no champion yet", "alerts": []}
    mon = s.monitoring
    ref = monitor_reference(s, h, champion)
    calibrator = mon_lib.Calibrator.from_dict(ref["calibrator"])
    batch = lake.read_batch(s, d)
    preds = lake.read_predictions(s, d)
    if preds is None or len(preds) != len(batch):
        raise ModelError(f"{s.partition_dir(d)}: no champion scores for the batch; run score_batch first")
    scores = preds["score"].to_numpy()
    labels_now = s.labels_known(d, d)
    y = lake.model_frame(s, batch)[1].to_numpy() if labels_now else None
    fields: dict[str, Any] = {}
    alerts: list[str] = []

    estimated = None
    if mon.estimation.enabled:
        estimated = mon_lib.estimate_performance(calibrator(scores), threshold=mon.bias.threshold)
        fields["estimated_quality"] = estimated
        if ref.get("holdout_auc") is not None and estimated.get("roc_auc") is not None:
            fields["estimated_quality_drop"] = float(ref["holdout_auc"]) - float(estimated["roc_auc"])
    if labels_now:
        fields["labels_known_on"] = d.isoformat()

    bias = None
    if mon.bias.segments:
        stats = mon_lib.segment_stats(
            {c: batch[c].to_numpy() for c in mon.bias.segments},
            scores,
            y,
            threshold=mon.bias.threshold,
            min_rows=mon.bias.min_rows,
        )
        bias = mon_lib.bias_drift(
            ref["bias"],
            stats,
            max_positive_rate_gap_change=mon.bias.max_positive_rate_gap_change,
            max_accuracy_gap_change=mon.bias.max_accuracy_gap_change,
        )
        bias["segments"] = stats

    # labels of an earlier day arrive today: its realized quality, beside the estimate made on its day
    arrived = None
    if s.label_delay_days > 0:
        arrived = _labels_arrive(s, h, d - dt.timedelta(days=s.label_delay_days), d, classification_metrics)
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
        model = _model(s, h, champion)
        X, _ = lake.model_frame(s, batch.assign(**{s.label: batch.get(s.label, 0)}))
        current = mon_lib.prediction_importance(
            lambda frame: model.predict_proba(frame[s.features])[:, 1],
            X,
            s.features,
            repeats=mon.attribution.repeats,
            seed=s.training.seed,
            max_rows=mon.attribution.rows,
        )
        attribution = mon_lib.attribution_drift(
            ref["importance"], current, min_ndcg=mon.attribution.min_ndcg, k=mon.attribution.top_k or None
        )
        fields.update(
            attribution=attribution,
            attribution_ndcg=attribution["ndcg"],
            attribution_violation=bool(attribution["violation"]),
        )
        if attribution["violation"] and mon.attribution.action != "record":
            alerts.append(attribution["reason"])

    if labels_now:
        realized = classification_metrics(y, scores)
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
    html = mon_lib.render_html(
        d.isoformat(),
        s.name,
        champion_version=champion,
        bias=bias,
        attribution=attribution,
        estimated=estimated,
        realized=realized,
        calibration=ref.get("calibration"),
        labels_note=note,
    )
    folder = s.report_dir(d)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MONITOR_HTML).write_text(html)
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
    (folder / MONITOR_JSON).write_text(json.dumps(summary, indent=1, default=float))
    h.update_day(s.name, d, **fields)
    h.add_reports(s.name, d, monitor=str(folder / MONITOR_HTML))
    _log_monitor_metrics(s, h, d, champion, fields, folder / MONITOR_HTML)
    return {
        "estimated_auc": (estimated or {}).get("roc_auc"),
        "bias_violation": fields.get("bias_violation"),
        "attribution_ndcg": fields.get("attribution_ndcg"),
        "attribution_violation": fields.get("attribution_violation"),
        "labels_arrived_for": arrived["day"] if arrived else None,
        "alerts": alerts,
        "report": str(folder / MONITOR_HTML),
    }


def _fmt(quality: dict[str, Any] | None) -> str:
    auc = (quality or {}).get("roc_auc")
    return "n/a" if auc is None else f"{auc:.3f}"


def _labels_arrive(s: Settings, h: History, labelled: dt.date, on: dt.date, metrics) -> dict[str, Any] | None:
    """The labels of `labelled` become readable on `on`: record its realized quality (of the champion that
    served it, from its stored scores), its quality drop, and its accuracy gaps between segments."""
    from ml import monitor as mon_lib

    row = h.get_day(s.name, labelled)
    if not row or row.get("status") != "accepted" or labelled <= s.original_end:
        return None
    preds = lake.read_predictions(s, labelled)
    if preds is None:
        return None
    batch = lake.read_batch(s, labelled)
    if len(preds) != len(batch):
        return None
    y = lake.model_frame(s, batch)[1].to_numpy()
    scores = preds["score"].to_numpy()
    quality = metrics(y, scores)
    champion = (
        int(preds["champion_version"].iloc[0]) if "champion_version" in preds else row.get("champion_version")
    )
    model = h.get_model(s.name, champion) if champion else None
    holdout_auc = ((model or {}).get("holdout_metrics") or {}).get("roc_auc")
    fields: dict[str, Any] = {"quality": quality, "labels_known_on": on.isoformat()}
    if holdout_auc is not None and quality.get("roc_auc") is not None:
        fields["quality_drop"] = float(holdout_auc) - float(quality["roc_auc"])
    out: dict[str, Any] = {
        "day": labelled.isoformat(),
        "quality": quality,
        "quality_drop": fields.get("quality_drop"),
    }
    mon = s.monitoring
    if mon.bias.segments and champion:
        ref = monitor_reference(s, h, champion)
        stats = mon_lib.segment_stats(
            {c: batch[c].to_numpy() for c in mon.bias.segments},
            scores,
            y,
            threshold=mon.bias.threshold,
            min_rows=mon.bias.min_rows,
        )
        bias = mon_lib.bias_drift(
            ref["bias"],
            stats,
            max_positive_rate_gap_change=mon.bias.max_positive_rate_gap_change,
            max_accuracy_gap_change=mon.bias.max_accuracy_gap_change,
        )
        bias["segments"] = stats
        fields.update(bias=bias, bias_violation=bool(bias["violation"] or row.get("bias_violation")))
        out["bias"] = bias
    h.update_day(s.name, labelled, **fields)
    return out


# ---- detect_drift ---------------------------------------------------------------------------------------
def detect(dataset: str, day: str | dt.date) -> dict[str, Any]:
    """Evidently drift of the batch against the champion's training data; quality on the batch's labels."""
    from ml import drift

    s, h, d = _ctx(dataset, day)
    champion = serving_champion(s, h, d)
    if champion is None:
        return {"skipped": True, "reason": "no champion yet"}
    reference = _artifact(s, h, champion, "reference.parquet")
    # out-of-fold scores of the reference rows: unbiased, unlike the champion's scores on its own
    # training rows, and row-aligned with the reference for Evidently
    reference_scores = _artifact(s, h, champion, "reference_scores.parquet")["score"].to_numpy()
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
    h.update_day(
        s.name,
        d,
        drift_share=result["drift_share"],
        dataset_drift=bool(result["dataset_drift"]),
        drifted_columns=result["drifted_columns"],
        prediction_drift=pred.get("score"),
        quality=result.get("quality"),
        quality_drop=result.get("quality_drop"),
    )
    h.add_reports(s.name, d, drift=result["html_path"])
    _log_drift_metrics(s, h, d, champion, result)
    return {
        "drift_share": result["drift_share"],
        "dataset_drift": bool(result["dataset_drift"]),
        "quality_drop": result.get("quality_drop"),
        "report": result["html_path"],
    }


def _monitoring_run(s: Settings, h: History, d: dt.date, champion: int) -> str:
    """The day's run in the dataset's monitoring experiment: found by its logical-date tag (a re-run of the
    day reuses it), else created. monitor_model and detect_drift run at the same time and both log into
    it: the look-up and the creation happen under a lock, so a day never gets two runs."""
    from ml.registry import client, experiment_id

    c = client(s)
    exp = experiment_id(s, "monitoring")
    with h.lock(
        f"monitoring-run:{s.name}:{d.isoformat()}", holder=f"{os.getpid()}:{d.isoformat()}", timeout_s=60
    ):
        found = c.search_runs(
            [exp], filter_string=f"tags.`driftwatch.logical_date` = '{d.isoformat()}'", max_results=1
        )
        if found:
            return found[0].info.run_id
        return c.create_run(
            exp,
            run_name=f"{s.name}-{d}-monitoring",
            tags={
                "driftwatch.logical_date": d.isoformat(),
                "driftwatch.dataset": s.name,
                "driftwatch.champion_version": str(champion),
            },
        ).info.run_id


def _log_to_monitoring_run(
    s: Settings,
    h: History,
    d: dt.date,
    champion: int,
    metrics: dict[str, Any],
    artifacts: list[tuple[str, str | Path | None]],
) -> None:
    """One step's metrics (stamped with the logical date, one request) and artifacts [(folder, file)]."""
    from mlflow.entities import Metric

    from ml.registry import client

    c = client(s)
    run_id = _monitoring_run(s, h, d, champion)
    timestamp = int(dt.datetime.combine(d, dt.time(), dt.UTC).timestamp() * 1000)
    c.log_batch(
        run_id, metrics=[Metric(k, float(v), timestamp, 0) for k, v in metrics.items() if v is not None]
    )
    for folder, path in artifacts:
        if path and Path(path).is_file():
            c.log_artifact(run_id, str(path), artifact_path=folder)
    c.set_terminated(run_id, "FINISHED")  # each step: the run reads as finished whichever step ends last


def _log_drift_metrics(s: Settings, h: History, d: dt.date, champion: int, result: dict[str, Any]) -> None:
    metrics = {"drift_share": result["drift_share"], "n_drifted": result["n_drifted"]}
    for k, v in (result.get("quality") or {}).items():
        if isinstance(v, int | float):
            metrics[f"batch_{k}"] = v
    metrics["quality_drop"] = result.get("quality_drop")
    if result.get("prediction_drift"):
        metrics["prediction_drift"] = result["prediction_drift"]["score"]
    _log_to_monitoring_run(
        s, h, d, champion, metrics, [("drift", result["html_path"]), ("drift", result.get("json_path"))]
    )


def _log_monitor_metrics(
    s: Settings, h: History, d: dt.date, champion: int, fields: dict[str, Any], page: Path
) -> None:
    metrics: dict[str, Any] = {}
    for key, value in (fields.get("estimated_quality") or {}).items():
        if key in ("roc_auc", "accuracy"):
            metrics[f"estimated_{key}"] = value
    metrics["attribution_ndcg"] = fields.get("attribution_ndcg")
    for col, info in ((fields.get("bias") or {}).get("columns") or {}).items():
        for key in ("positive_rate_gap", "accuracy_gap"):
            metrics[f"bias_{col}_{key}"] = info.get(key)
    _log_to_monitoring_run(s, h, d, champion, metrics, [("monitor", page)])


# ---- decide ---------------------------------------------------------------------------------------------
def decide(
    dataset: str,
    day: str | dt.date,
    *,
    force: bool = False,
    overrides: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Retrain or not, with the reason. Retrain on drift share or quality drop past their thresholds,
    outside the cooldown and with enough new rows; `force` bypasses all three. No champion yet: collect
    the original window, then bootstrap the first champion on its last day.

    Returns: {"retrain", "bootstrap", "reason"}.
    """
    s, h, d = _ctx(dataset, day)
    t = s.thresholds
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    drift_limit = float(given.get("drift_share", t.drift_share))
    quality_limit = float(given.get("quality_drop", t.quality_drop))
    champion = serving_champion(s, h, d)
    retrain = bootstrap = False
    if champion is None:
        if d >= s.original_end:
            retrain = bootstrap = True
            reason = f"bootstrap: no champion yet; training the first one on the original window ending {s.original_end}"
        else:
            n = (d - s.original_start).days + 1
            total = (s.original_end - s.original_start).days + 1
            reason = f"collecting the original window: day {n} of {total}; the first champion is trained on {s.original_end}"
    elif force:
        retrain = True
        reason = "forced by the force_retrain parameter"
    else:
        row = h.get_day(s.name, d) or {}
        share = row.get("drift_share")
        drop, drop_name = _quality_signal(s, h, d, row)
        triggers = []
        if share is not None and share >= drift_limit:
            triggers.append(f"drift share {share:.2f} >= {drift_limit}")
        if drop is not None and drop >= quality_limit:
            triggers.append(f"{drop_name} {drop:.3f} >= {quality_limit}")
        mon = s.monitoring
        if mon.bias.action == "retrain" and row.get("bias_violation"):
            bias = row.get("bias") or {}
            first = (bias.get("reasons") or bias.get("labels_day_reasons") or ["a segment disparity moved"])[
                0
            ]
            triggers.append(f"bias drift ({first})")
        if mon.attribution.action == "retrain" and row.get("attribution_violation"):
            triggers.append(f"attribution nDCG {row['attribution_ndcg']:.2f} < {mon.attribution.min_ndcg}")
        if not triggers:
            parts = [f"drift share {share:.2f} < {drift_limit}" if share is not None else "no drift measured"]
            if drop is not None:
                parts.append(f"{drop_name} {drop:.3f} < {quality_limit}")
            reason = "no retrain: " + "; ".join(parts)
        else:
            last = max(
                (m["trained_on"] for m in h.models(s.name) if m["trained_on"] < d.isoformat()), default=None
            )
            since = (d - dt.date.fromisoformat(last)).days if last else None
            new_rows = sum(  # rows a challenger could train on today: accepted, labels arrived
                (r["rows"] or 0)
                for r in h.days(s.name, until=d)
                if r["status"] == "accepted"
                and (last is None or r["day"] > last)
                and s.labels_known(dt.date.fromisoformat(r["day"]), d)
            )
            if since is not None and since < t.cooldown_days:
                reason = f"{' and '.join(triggers)}, but in cooldown: {since} of {t.cooldown_days} days since training on {last}"
            elif new_rows == 0 and last is not None:
                reason = f"{' and '.join(triggers)}, but no new labelled rows since training on {last}"
            elif new_rows < t.min_new_rows:
                reason = f"{' and '.join(triggers)}, but only {new_rows} new rows since {last} (minimum {t.min_new_rows})"
            else:
                retrain = True
                reason = f"retrain: {' and '.join(triggers)}; {new_rows} new rows since {last}"
    decision = (
        "bootstrap" if bootstrap else "retrain" if retrain else ("collect" if champion is None else "skip")
    )
    h.update_day(s.name, d, decision=decision, reason=reason)
    log.info("%s %s: %s", s.name, d, reason)
    return {"retrain": retrain, "bootstrap": bootstrap, "reason": reason}


def _quality_signal(s: Settings, h: History, d: dt.date, row: dict[str, Any]) -> tuple[float | None, str]:
    """The AUC drop the decision looks at: the day's own when its labels came with the batch; with delayed
    labels, the CBPE estimate for the day (`monitoring.estimation.use_for_decisions`) or else the realized
    drop of the day whose labels arrived today."""
    if s.labels_known(d, d):
        return row.get("quality_drop"), "AUC drop"
    if s.monitoring.estimation.use_for_decisions:
        return row.get("estimated_quality_drop"), "estimated AUC drop (CBPE, labels not in yet)"
    labelled = d - dt.timedelta(days=s.label_delay_days)
    earlier = h.get_day(s.name, labelled) or {}
    return earlier.get("quality_drop"), f"AUC drop on {labelled} (its labels arrived today)"


# ---- train_challenger -----------------------------------------------------------------------------------
def train(
    dataset: str,
    day: str | dt.date,
    *,
    dag_run_id: str | None = None,
    dag_run_url: str | None = None,
    model_params: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train a challenger on the original window + accepted days before the holdout; log and register it.

    A re-run of the same day on the same data and parameters reuses the version it registered before, and a
    retry after a crash adopts the version the killed try registered (`_adopt_registered`); training runs a
    killed try left RUNNING are ended FAILED. No version is ever left without its record.
    Returns: {"version", "run_id", "experiment_id", "holdout_auc", "reused"}.
    """
    import hashlib

    from ml import registry
    from ml.evaluate import classification_metrics
    from ml.train import data_digest, fit, load_split, out_of_fold_scores, predict_proba, split_days

    s, h, d = _ctx(dataset, day)
    params = dict(model_params or {})
    split = split_days(s, h, d)
    digest = hashlib.sha256(
        (data_digest(s, split.train_days + split.holdout_days) + json.dumps(params, sort_keys=True)).encode()
    ).hexdigest()[:16]
    for m in h.models(s.name):
        if m["trained_on"] == d.isoformat() and m["data_digest"] == digest:
            log.info("reusing version %s trained for %s on the same data", m["version"], d)
            h.update_day(s.name, d, candidate_version=m["version"])
            return {
                "version": m["version"],
                "run_id": m["run_id"],
                "experiment_id": m["experiment_id"],
                "model": s.registered_model,
                "holdout_auc": (m["holdout_metrics"] or {}).get("roc_auc"),
                "reused": True,
            }
    adopted = _adopt_registered(s, h, d, split, digest)
    if adopted is not None:
        return adopted
    registry.end_abandoned_runs(
        s, d, "the task that ran it was killed before it finished; a retry trains again"
    )
    train_df, holdout_df = load_split(s, split)
    model = fit(s, train_df, d, params)
    _, y_hold = lake.model_frame(s, holdout_df)
    p_hold = predict_proba(model, s, holdout_df)
    metrics = classification_metrics(y_hold.to_numpy(), p_hold)
    reference = train_df.sample(n=min(REFERENCE_ROWS, len(train_df)), random_state=s.training.seed)
    reference_scores = out_of_fold_scores(s, reference, params)
    row = h.get_day(s.name, d) or {}
    import tempfile

    import pandas as pd

    from ml import drift

    models_dir = s.paths.models / s.name
    models_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".train-", dir=models_dir) as tmp:
        staged = Path(tmp)
        pd.DataFrame({"score": p_hold}).to_parquet(staged / "holdout_scores.parquet", index=False)
        pd.DataFrame({"score": reference_scores}).to_parquet(staged / "reference_scores.parquet", index=False)
        # the day's drift report, when there is one: the evidence that triggered this challenger travels
        # with it (a bootstrap or forced run may have none)
        evidence = [
            p
            for p in (s.report_dir(d) / drift.REPORT_FILE, s.report_dir(d) / drift.SUMMARY_FILE)
            if p.is_file()
        ]
        info = registry.log_challenger(
            s,
            day=d,
            model=model,
            train=train_df,
            split=split.to_dict(),
            trigger=row.get("reason") or "",
            digest=digest,
            params=params,
            reference=reference,
            dag_run_id=dag_run_id,
            dag_run_url=dag_run_url,
            metrics={f"holdout_{k}": v for k, v in metrics.items()},
            files={
                "data": [staged / "holdout_scores.parquet", staged / "reference_scores.parquet"],
                "trigger": evidence,
            },
        )
        version = info["version"]
        cache = models_dir / f"v{version}"
        cache.mkdir(parents=True, exist_ok=True)
        reference.to_parquet(cache / "reference.parquet", index=False)
        for name in ("holdout_scores.parquet", "reference_scores.parquet"):
            (staged / name).replace(cache / name)
    h.put_model(
        s.name,
        version,
        trained_on=d.isoformat(),
        run_id=info["run_id"],
        experiment_id=info["experiment_id"],
        train_days=[x.isoformat() for x in split.train_days],
        holdout_days=[x.isoformat() for x in split.holdout_days],
        train_rows=len(train_df),
        data_digest=digest,
        holdout_metrics=metrics,
        reference_path=str(cache / "reference.parquet"),
        trigger=row.get("reason"),
    )
    h.update_day(s.name, d, candidate_version=version)
    return {
        "version": version,
        "run_id": info["run_id"],
        "experiment_id": info["experiment_id"],
        "model": s.registered_model,
        "holdout_auc": metrics["roc_auc"],
        "reused": False,
    }


def _adopt_registered(s: Settings, h: History, d: dt.date, split: Any, digest: str) -> dict[str, Any] | None:
    """A version an earlier try registered for this day and data, but was killed before the history knew it:
    the retry adopts it (its run is complete: runs end before the version is created) instead of
    registering the same challenger twice; a complete run killed before its registration is registered now. A version whose run did not finish (an older release registered
    first) is marked failed in the registry and not used. Returns train()'s result, or None."""
    from ml import registry

    adopted = None
    found_versions = registry.registered_for(s, d, digest)
    if not found_versions and registry.register_finished_run(s, d, digest) is not None:
        found_versions = registry.registered_for(s, d, digest)
    for found in found_versions:
        if adopted is None and found["run_status"] == "FINISHED":
            adopted = found
            continue
        registry.mark_failed(
            s,
            found["version"],
            d,
            "registered by a try that was killed before it finished; "
            f"{'version ' + str(adopted['version']) if adopted else 'a new version'} is used",
        )
    if adopted is None:
        return None
    version, row = adopted["version"], h.get_day(s.name, d) or {}
    metrics = {k[len("holdout_") :]: v for k, v in adopted["metrics"].items() if k.startswith("holdout_")}
    if "rows" in metrics:
        metrics["rows"] = int(metrics["rows"])
    h.put_model(
        s.name,
        version,
        trained_on=d.isoformat(),
        run_id=adopted["run_id"],
        experiment_id=adopted["experiment_id"],
        train_days=[x.isoformat() for x in split.train_days],
        holdout_days=[x.isoformat() for x in split.holdout_days],
        train_rows=int(adopted["params"].get("train_rows", 0)) or None,
        data_digest=digest,
        holdout_metrics=metrics,
        reference_path=str(s.paths.models / s.name / f"v{version}" / "reference.parquet"),
        trigger=adopted["tags"].get(f"{registry.TAG}trigger") or row.get("reason"),
    )
    h.update_day(s.name, d, candidate_version=version)
    if not adopted.get("description"):
        registry.client(s).update_model_version(
            s.registered_model,
            str(version),
            description=f"Challenger trained on {d} ({adopted['tags'].get(f'{registry.TAG}trigger', '')}). Training "
            f"days {split.to_dict()['train_range']}, holdout {split.to_dict()['holdout_range']}. Awaiting evaluation.",
        )
    log.warning(
        "%s %s: adopting version %s, registered by an earlier try of this task that was killed before "
        "it recorded it (kill -9 or out of memory); not training it again",
        s.name,
        d,
        version,
    )
    return {
        "version": version,
        "run_id": adopted["run_id"],
        "experiment_id": adopted["experiment_id"],
        "model": s.registered_model,
        "holdout_auc": metrics.get("roc_auc"),
        "reused": True,
        "adopted": True,
    }


# ---- evaluate -------------------------------------------------------------------------------------------
def evaluate(
    dataset: str, day: str | dt.date, version: int, *, dry_run: bool = False, min_delta: float | None = None
) -> dict[str, Any]:
    """Score champion and challenger on the challenger's holdout rows and decide. Returns {"promote", "reason"}."""
    from ml import registry
    from ml.evaluate import compare
    from ml.train import predict_proba

    s, h, d = _ctx(dataset, day)
    record = h.get_model(s.name, int(version))
    if record is None:
        raise ModelError(f"challenger version {version} of {s.name} is not in the history database")
    holdout = lake.read_days(s, [dt.date.fromisoformat(x) for x in record["holdout_days"]])
    _, y = lake.model_frame(s, holdout)
    p_new = predict_proba(_model(s, h, version), s, holdout)
    champion = serving_champion(s, h, d)
    p_old = predict_proba(_model(s, h, champion), s, holdout) if champion else None
    missing = [c for c in s.evaluation.segments if c not in holdout.columns]
    if missing:
        raise ModelError(f"{s.name}: evaluation.segments {missing} are not columns of the holdout partitions")
    segments = {c: holdout[c].to_numpy() for c in s.evaluation.segments}
    result = compare(s, y.to_numpy(), p_old, p_new, min_delta=min_delta, segments=segments)
    result["champion_version"] = champion
    result["challenger_version"] = int(version)
    if dry_run and result["promote"]:
        result["promote"] = False
        result["reason"] = f"dry run, not promoted (would have been {result['reason']})"
    report = s.report_dir(d) / "evaluation.json"
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(json.dumps(result, indent=2, default=str))
    c = registry.client(s)
    for key, value in {
        "eval_challenger_roc_auc": result["challenger"]["roc_auc"],
        "eval_challenger_log_loss": result["challenger"]["log_loss"],
        **(
            {
                "eval_champion_roc_auc": result["champion"]["roc_auc"],
                "eval_gain_ci_low": result["bootstrap_ci"]["low"],
                "eval_gain_ci_high": result["bootstrap_ci"]["high"],
            }
            if champion
            else {}
        ),
        **(
            {"eval_worst_segment_auc_drop": result["checks"]["worst_segment_auc_drop"]["value"]}
            if "worst_segment_auc_drop" in result["checks"]
            else {}
        ),
    }.items():
        if value is not None:
            c.log_metric(record["run_id"], key, float(value))
    c.log_artifact(record["run_id"], str(report), artifact_path="evaluation")
    h.update_day(s.name, d, evaluation=result)
    h.add_reports(s.name, d, evaluation=str(report))
    return {
        "promote": bool(result["promote"]),
        "reason": result["reason"],
        "version": int(version),
        "champion_version": champion,
        "run_id": record["run_id"],
        "experiment_id": record["experiment_id"],
        "model": s.registered_model,
    }


def promote(dataset: str, day: str | dt.date, version: int, dag_run_id: str | None = None) -> dict[str, Any]:
    """Move alias `champion` to `version` (audited, under a lock, crash-safe: `ml.registry.promote`).

    Returns {"promoted", "version", "previous", "reason", "run_id", "experiment_id", "recorded_before"}; the
    alert is raised by the caller, as for quarantine (once per promotion: `ml.alerts.send_once`)."""
    from ml import registry

    s, h, d = _ctx(dataset, day)
    evaluation = (h.get_day(s.name, d) or {}).get("evaluation")
    if not evaluation or evaluation.get("challenger_version") != int(version):
        raise ModelError(f"{s.name} {d}: no evaluation of version {version} recorded; run evaluate first")
    out = registry.promote(s, h, version=int(version), day=d, evaluation=evaluation, dag_run_id=dag_run_id)
    if not out["promoted"]:  # it was the champion already: nothing moved, the day says so
        h.update_day(
            s.name,
            d,
            promotion="promoted",
            promotion_reason=f"version {version} was already the champion; nothing moved",
        )
    model = h.get_model(s.name, int(version)) or {}
    return {
        "promoted": bool(out.get("promoted")),
        "version": int(version),
        "previous": out.get("previous"),
        "reason": evaluation["reason"],
        "run_id": model.get("run_id"),
        "experiment_id": model.get("experiment_id"),
        "model": s.registered_model,
        "recorded_before": bool(out.get("recorded_before")),
    }


def reject(dataset: str, day: str | dt.date, version: int) -> dict[str, Any]:
    from ml import registry

    s, h, d = _ctx(dataset, day)
    evaluation = (h.get_day(s.name, d) or {}).get("evaluation")
    if not evaluation:
        raise ModelError(f"{s.name} {d}: no evaluation of version {version} recorded; run evaluate first")
    registry.reject(
        s, version=int(version), day=d, evaluation=evaluation, champion=evaluation.get("champion_version")
    )
    h.update_day(s.name, d, promotion="rejected", promotion_reason=evaluation["reason"])
    return {"rejected": int(version), "champion": evaluation.get("champion_version")}


# ---- record ---------------------------------------------------------------------------------------------
def record(
    dataset: str,
    day: str | dt.date,
    dag_run_id: str | None = None,
    failed_tasks: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Close the day's row, check that the run reached a decision and that the MLflow aliases mirror the
    audit log (repaired, with an error in the log and an alert, when they do not); raise when a step failed,
    so that the run is marked failed (the history row keeps what happened and why).

    Args:
        failed_tasks: {task id: state} of this run's tasks that did not succeed, as the orchestrator knows
            them now (Airflow: after retries and clears). A step whose retry succeeded is not in it, so an
            error an earlier try left in the row is history, not a failure. None (in-process runners, which
            raise as soon as a step fails): the row's `error` decides.
    """
    s, h, d = _ctx(dataset, day)
    row = h.get_day(s.name, d)
    problems = []
    if failed_tasks is not None:
        failed = [t for t, state in failed_tasks.items() if state == "failed"]
        for task in failed:
            error = (row or {}).get("error") or ""
            problems.append(error if error.startswith(f"{task} failed") else f"{task} failed (see its log)")
        if row is not None and row.get("error") and not failed:
            h.update_day(s.name, d, error=None)  # left by a try that a retry or a clear has since made good
            row["error"] = None
    elif row is not None and row.get("error"):
        problems.append(row["error"])
    if row is None:
        problems.append("no history row: the batch was never validated (see wait_for_batch)")
        raise ModelError(f"{s.name} {d}: " + "; ".join(problems))
    if row["status"] == "invalid":
        problems.append("the batch failed validation but was not quarantined")
    if row["status"] == "accepted" and not row.get("decision"):
        problems.append("no retrain decision was recorded")
    if row.get("decision") in ("retrain", "bootstrap") and not row.get("promotion"):
        problems.append("a retrain was decided but no challenger was evaluated; the champion is unchanged")
    repaired = _repair_registry(s, h, d, dag_run_id)
    champion = h.champion_at(s.name, d)
    h.update_day(s.name, d, dag_run_id=dag_run_id or row.get("dag_run_id"))
    summary = {
        k: row.get(k)
        for k in ("status", "rows", "drift_share", "decision", "reason", "candidate_version", "promotion")
    }
    summary["champion_after"] = champion
    summary["registry_repaired"] = repaired
    if problems:
        raise ModelError(f"{s.name} {d}: " + "; ".join(problems))
    return summary


def _repair_registry(s: Settings, h: History, d: dt.date, dag_run_id: str | None) -> list[dict[str, Any]]:
    """Every run ends with the MLflow aliases naming what the audit log names: a promotion killed after its
    commit and never retried, or an alias moved by hand in MLflow, is put right here, loudly (error log +
    alert). The registry out of reach is a warning: the audit log stays the truth and status shows it."""
    from ml import alerts, registry

    if h.latest_alias(s.name, registry.CHAMPION) is None:
        return []
    try:
        drift = registry.repair(s, h, holder=f"record:{dag_run_id or d.isoformat()}")
    except Exception as exc:  # noqa: BLE001 - reported; the decisions of the day stand
        log.warning(
            "%s %s: could not compare the MLflow aliases with the audit log (%s: %s); "
            "`driftwatch status` shows the difference, `driftwatch repair` fixes it",
            s.name,
            d,
            type(exc).__name__,
            exc,
        )
        return []
    if drift:
        alerts.send_once(s, alerts.registry_alert(s, d, drift, dag_run_id))
    return drift


def record_failure(
    dataset: str, day: str | dt.date, task_id: str, error: str, dag_run_id: str | None = None
) -> None:
    """Called from the DAG's task failure callback: keep the error in the day's row (the run-level alert
    is the DAG's failure notifier). A promotion that an earlier try committed to the audit log stays a
    promotion: only its MLflow mirror is incomplete, and the day's `record` step completes it."""
    s, h, d = _ctx(dataset, day)
    message = f"{task_id} failed: {error}"[:4000]
    fields: dict[str, Any] = {"error": message}
    row = h.get_day(s.name, d) or {}
    version = row.get("candidate_version")
    committed = version is not None and any(
        e["logical_date"] == d.isoformat() and e["after_version"] == int(version)
        for e in h.alias_events(s.name, "champion")
    )
    if task_id.endswith(("train_challenger", "evaluate_challenger", "promote_challenger")) and not committed:
        fields["promotion"] = "failed"
        fields["promotion_reason"] = f"{message}; champion unchanged"
    h.update_day(s.name, d, **fields)
    if fields.get("promotion") == "failed" and version is not None:
        _tag_failed(s, int(version), d, message)


def _tag_failed(s: Settings, version: int, d: dt.date, message: str) -> None:
    """A registered challenger whose evaluation or promotion failed says so in the registry too (best
    effort: MLflow itself may be what failed; the history row already has the error)."""
    try:
        from ml.registry import TAG, client

        c = client(s)
        for key, value in {f"{TAG}decision": "failed", f"{TAG}reason": f"{d}: {message}"[:5000]}.items():
            c.set_model_version_tag(s.registered_model, str(version), key, value)
    except Exception as exc:  # noqa: BLE001 - reported, not raised: the failure is already recorded
        log.error("%s: could not tag version %s as failed: %s", s.name, version, exc)
