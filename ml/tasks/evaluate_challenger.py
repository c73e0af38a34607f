"""Champion and challenger on the same holdout rows (the challenger's holdout days): the paired-bootstrap
95% CI of the AUC gain must clear `min_delta`, log loss stay within its tolerance and no segment (origin,
carrier) lose more than its tolerance, checked with `mlflow.validate_evaluation_results`. Writes
`evaluation.json` and logs it with the metrics to the challenger's MLflow run. Branch: `promote_challenger`
or `reject_challenger` (always reject on a `dry_run`)."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any, Literal, TypedDict

from ml import data as lake
from ml import registry
from ml.day import Day
from ml.exceptions import ModelError
from ml.tasks import train_challenger


class Output(TypedDict):
    next: Literal["promote_challenger", "approve_challenger", "reject_challenger"]
    promote: bool
    reason: str
    version: int
    champion_version: int | None
    evaluation: str  # path of evaluation.json: the evidence promote/reject carry to the registry
    run_id: str
    experiment_id: str
    model: str


def run(day: Day, trained: train_challenger.Output) -> Output:
    from ml.evaluate import compare
    from ml.train import predict_proba

    s, h, d = day.settings, day.history, day.date
    version = int(trained["version"])
    record = h.get_model(s.name, version)
    if record is None:
        raise ModelError(f"challenger version {version} of {s.name} is not in the history database")
    holdout = lake.read_days(s, [dt.date.fromisoformat(x) for x in record["holdout_days"]])
    _, y = lake.model_frame(s, holdout)
    p_new = predict_proba(registry.version_model(s, h, version), s, holdout)
    champion = day.serving_champion()
    p_old = predict_proba(registry.version_model(s, h, champion), s, holdout) if champion else None
    missing = [c for c in s.evaluation.segments if c not in holdout.columns]
    if missing:
        raise ModelError(f"{s.name}: evaluation.segments {missing} are not columns of the holdout partitions")
    segments = {c: holdout[c].to_numpy() for c in s.evaluation.segments}
    naive = _naive(s, record) if champion is None and s.task != "binary" else None
    result = compare(
        s, y.to_numpy(), p_old, p_new, min_delta=day.params.min_delta, segments=segments, naive=naive
    )
    result["champion_version"] = champion
    result["challenger_version"] = version
    if day.params.dry_run and result["promote"]:
        result["promote"] = False
        result["reason"] = f"dry run, not promoted (would have been {result['reason']})"
    report = s.report_dir(d) / "evaluation.json"
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(json.dumps(result, indent=2, default=str))
    _log(day, record["run_id"], result, report)
    day.record(evaluation=result)
    h.add_reports(s.name, d, evaluation=str(report))
    return {
        "next": ("approve_challenger" if s.promotion.approval == "manual" else "promote_challenger")
        if result["promote"]
        else "reject_challenger",
        "promote": bool(result["promote"]),
        "reason": result["reason"],
        "version": version,
        "champion_version": champion,
        "evaluation": str(report),
        "run_id": record["run_id"],
        "experiment_id": record["experiment_id"],
        "model": s.registered_model,
    }


def _naive(s: Any, record: dict[str, Any]) -> float:
    """What a naive model learns from the first champion's training labels: their mean (regression) or the
    position of their most frequent class (multiclass)."""
    import numpy as np

    train = lake.read_days(s, [dt.date.fromisoformat(x) for x in record["train_days"]])
    _, y = lake.model_frame(s, train)
    values = y.to_numpy()
    if s.task == "regression":
        return float(np.nanmean(values))
    return float(np.bincount(values[values >= 0], minlength=len(s.classes)).argmax())


def load(evaluated: Output) -> dict[str, Any]:
    """The full evaluation (bootstrap CI, checks, segments) behind an output of this task."""
    out: dict[str, Any] = json.loads(open(evaluated["evaluation"]).read())
    return out


def _log(day: Day, run_id: str, result: dict[str, Any], report: Any) -> None:
    checks = result["checks"]
    if result.get("task", "binary") != "binary":
        metric = result["metric"]
        metrics = {
            f"eval_challenger_{k}": v for k, v in result["challenger"].items() if isinstance(v, int | float)
        }
        if result.get("champion"):
            metrics.update(
                {
                    f"eval_champion_{metric}": result["champion"][metric],
                    "eval_gain_ci_low": result["bootstrap_ci"]["low"],
                    "eval_gain_ci_high": result["bootstrap_ci"]["high"],
                }
            )
    else:
        metrics = {
            "eval_challenger_roc_auc": result["challenger"]["roc_auc"],
            "eval_challenger_log_loss": result["challenger"]["log_loss"],
        }
    if result.get("task", "binary") == "binary" and result.get("champion_version"):
        metrics.update(
            eval_champion_roc_auc=result["champion"]["roc_auc"],
            eval_gain_ci_low=result["bootstrap_ci"]["low"],
            eval_gain_ci_high=result["bootstrap_ci"]["high"],
        )
    if "worst_segment_auc_drop" in checks:
        metrics["eval_worst_segment_auc_drop"] = checks["worst_segment_auc_drop"]["value"]
    c = registry.client(day.settings)
    for key, value in metrics.items():
        if value is not None:
            c.log_metric(run_id, key, float(value))
    c.log_artifact(run_id, str(report), artifact_path="evaluation")
