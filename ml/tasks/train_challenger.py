"""Train a challenger on the original window + the accepted days before the holdout (the last
`holdout_days` usable days, kept out for the evaluation); log it to MLflow (params, lineage, the drift report
that triggered it) and register it as a new version of the dataset's model.

Crash-safe: the MLflow run is complete before the version is created (with its tags, in one call). A re-run
of the day on the same data reuses the version it registered; a retry after a kill adopts the version the
killed try registered (or registers its finished run) instead of registering it twice, and ends the runs a
killed try left RUNNING as FAILED (ml/faults.py lists the crash points).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any, TypedDict

from ml import data as lake
from ml import registry
from ml.config import Settings
from ml.day import Day
from ml.history import History
from ml.tasks import decide

log = logging.getLogger(__name__)

REFERENCE_ROWS = 50_000  # training rows kept as the drift/validation reference (seeded sample)


class Output(TypedDict, total=False):
    version: int
    run_id: str
    experiment_id: str
    model: str  # the registered model's name
    holdout_auc: float | None  # the holdout's primary metric (AUC for a binary task; ml/objective.py)
    reused: bool  # an earlier run or try registered it
    adopted: bool  # a killed try registered it, this one recorded it


def run(day: Day, decided: decide.Output | None = None) -> Output:
    from ml.train import data_digest, fit, load_split, out_of_fold_scores, predict_proba, split_days

    s, h, d = day.settings, day.history, day.date
    params = dict(day.params.model_params or {})
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
                "holdout_auc": (m["holdout_metrics"] or {}).get(s.objective.primary),
                "reused": True,
            }
    reason = decided["reason"] if decided else ""
    adopted = _adopt_registered(s, h, d, split, digest, reason)
    if adopted is not None:
        return adopted
    registry.end_abandoned_runs(
        s, d, "the task that ran it was killed before it finished; a retry trains again"
    )
    train_df, holdout_df = load_split(s, split)
    model = fit(s, train_df, d, params)
    _, y_hold = lake.model_frame(s, holdout_df)
    p_hold = predict_proba(model, s, holdout_df)
    metrics = s.objective.metrics(y_hold.to_numpy(), p_hold)
    reference = train_df.sample(n=min(REFERENCE_ROWS, len(train_df)), random_state=s.training.seed)
    reference_scores = out_of_fold_scores(s, reference, params)
    trigger = reason
    import tempfile

    from ml import drift

    models_dir = s.paths.models / s.name
    models_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".train-", dir=models_dir) as tmp:
        staged = Path(tmp)
        s.objective.to_frame(p_hold).to_parquet(staged / "holdout_scores.parquet", index=False)
        s.objective.to_frame(reference_scores).to_parquet(staged / "reference_scores.parquet", index=False)
        # the day's drift report, when there is one: the evidence that triggered this challenger travels
        # with it (a bootstrap or forced run may have none). Rendered now: the drift step keeps numbers only
        _render_evidence(s, h, d)
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
            trigger=trigger,
            digest=digest,
            params=params,
            reference=reference,
            dag_run_id=day.run_id,
            dag_run_url=day.run_url,
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
        trigger=trigger,
    )
    h.update_day(s.name, d, candidate_version=version)
    return {
        "version": version,
        "run_id": info["run_id"],
        "experiment_id": info["experiment_id"],
        "model": s.registered_model,
        "holdout_auc": metrics[s.objective.primary],
        "reused": False,
    }


def _render_evidence(s: Settings, h: History, d: Any) -> None:
    from ml import drift_report

    if drift_report.summary(s, d) is None:
        return
    try:
        drift_report.render_day(s, h, d)
    except Exception as exc:  # the evidence is a report for people: its absence must not stop a retrain
        log.warning("%s %s: the drift report could not be rendered as evidence: %s", s.name, d, exc)


def _adopt_registered(
    s: Settings, h: History, d: Any, split: Any, digest: str, reason: str | None
) -> Output | None:
    """A version an earlier try registered for this day and data, but was killed before the history knew it:
    the retry adopts it (its run is complete: runs end before the version is created) instead of
    registering the same challenger twice; a complete run killed before its registration is registered now. A version whose run did not finish (an older release registered
    first) is marked failed in the registry and not used. Returns train()'s result, or None."""
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
    version = adopted["version"]
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
        trigger=adopted["tags"].get(f"{registry.TAG}trigger") or reason,
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
