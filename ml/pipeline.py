"""The DAG's control flow in one process, for debugging a day and for replays without Airflow.

It calls the same `ml.steps` functions in the same order and takes the same branches as
dags/retraining_pipeline.py; the DAG stays the way to run in production.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from ml import alerts, steps


def run_day(
    dataset: str,
    day: dt.date,
    *,
    force_retrain: bool = False,
    dry_run: bool = False,
    model_params: dict[str, Any] | None = None,
    overrides: dict[str, float] | None = None,
    run_id: str | None = None,
) -> dict[str, Any]:
    run_id = run_id or f"local__{day.isoformat()}"
    out: dict[str, Any] = {"day": day.isoformat()}
    if not steps.batch_ready(dataset, day):
        raise FileNotFoundError(f"{dataset} {day}: no batch in the lake")
    validated = steps.validate(dataset, day, run_id)
    if not validated["ok"]:
        out["quarantine"] = steps.quarantine(dataset, day, run_id)
        s = steps.settings_for(dataset)
        alerts.send_once(s, alerts.quarantine_alert(s, day, out["quarantine"], run_id))
    else:
        out["score"] = steps.score(dataset, day)
        out["monitor"] = steps.monitor(dataset, day)
        if out["monitor"].get("alerts"):
            s = steps.settings_for(dataset)
            alerts.send_once(s, alerts.monitor_alert(s, day, out["monitor"], run_id))
        out["drift"] = steps.detect(dataset, day)
        decision = steps.decide(dataset, day, force=force_retrain, overrides=overrides)
        out["decide"] = decision
        if decision["retrain"]:
            try:
                trained = steps.train(dataset, day, dag_run_id=run_id, model_params=model_params)
                evaluated = steps.evaluate(dataset, day, trained["version"], dry_run=dry_run)
                out["train"], out["evaluate"] = trained, evaluated
                if evaluated["promote"]:
                    out["promote"] = steps.promote(dataset, day, trained["version"], run_id)
                    s = steps.settings_for(dataset)
                    alerts.send_once(s, alerts.promotion_alert(s, day, out["promote"], run_id))
                else:
                    out["reject"] = steps.reject(dataset, day, trained["version"])
            except Exception as exc:
                steps.record_failure(dataset, day, "train_challenger", f"{type(exc).__name__}: {exc}", run_id)
                s = steps.settings_for(dataset)
                alerts.send_once(s, alerts.failure_alert(s, day, ["train_challenger"], run_id))
                raise
    out["record"] = steps.record(dataset, day, run_id)
    return out
