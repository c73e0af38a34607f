"""Replay a dataset day by day without Airflow, under a retraining policy, and measure what retraining buys.

The replay runs the daily flow in process (`ml.runner`: the steps the DAG runs, declared once in `ml.flow`),
one process per policy, each in a throwaway DRIFTWATCH_HOME (history DB, MLflow store, reports) with its own
copy of the lake (hard links: quarantine moves a bad batch out of the lake and score_batch writes the scores
beside the batch). Policies (`ml.policy`, passed to the flow's `decide`):

    never      bootstrap the first champion, then never retrain
    daily      retrain every day                         (every-1)
    every-7    retrain when 7 days have passed since the last training
    every-30   retrain when 30 days have passed since the last training
    drift      the platform's own decision (DriftTriggered) with the dataset's thresholds

Every policy bootstraps the same first champion, and every challenger goes through the same promotion gate
(evaluate_challenger: paired bootstrap CI of the AUC gain on the same holdout rows, log-loss and segment
guardrails), so policies differ only in when they train. Each day the serving champion's AUC and accuracy
on the day's labels are recorded from its stored scores (`daily_quality`: the same metrics as the drift
check's `quality`). Only the drift policy runs the monitors (monitor_model, detect_drift): the calendar
policies read none of their outputs.

    driftwatch replay --dataset flights --policy drift --to 2013-12-31
    python scripts/bench_replay.py          # make bench: every policy, synthetic streams, docs/benchmarks.md
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ml import policy as policies
from ml.policy import RetrainPolicy

log = logging.getLogger(__name__)

HORIZON_DAYS = (
    7  # a promotion "made the next days worse" when the new champion's mean daily AUC over them is lower
)
RESULT_FILE = "result.json"
LOG_FILE = "replay.log"


# ---- policies -------------------------------------------------------------------------------------------
# The policies are ml.policy's: `never`, `daily`, `every-N`, `drift` (the dataset's own, DriftTriggered).
POLICY_NAMES = policies.POLICY_NAMES
parse_policy = policies.parse
cost_rank = policies.cost_rank


# ---- one day's metrics ----------------------------------------------------------------------------------
def daily_quality(settings: Any, day: dt.date) -> dict[str, Any] | None:
    """AUC, accuracy (at 0.5), log loss of the champion's stored scores on the day's labels; None when the
    day was not scored. Computed by `ml.evaluate.classification_metrics`, the same definitions as the
    drift step's batch quality; `roc_auc` is None for a single-class day."""
    from ml import data as lake
    from ml.evaluate import classification_metrics

    preds = lake.read_predictions(settings, day)
    if preds is None:
        return None
    frame = lake.read_batch(settings, day)
    if len(frame) != len(preds):
        raise ValueError(f"{settings.name} {day}: {len(preds)} stored scores for {len(frame)} batch rows")
    known = frame[settings.label].notna().to_numpy()  # captured traffic: the rows labelled so far
    _, y = lake.model_frame(settings, frame[known])
    if settings.task != "binary":  # the task's metrics; its primary one stands in the row's `auc` column
        out = settings.objective.metrics(y.to_numpy(), settings.objective.from_frame(preds)[known])
        return {**out, "roc_auc": out[settings.objective.primary], "accuracy": out.get("accuracy")}
    return classification_metrics(y.to_numpy(), preds["score"].to_numpy()[known])


# ---- the replay -----------------------------------------------------------------------------------------
def replay(
    dataset: str,
    policy: RetrainPolicy,
    days: Sequence[dt.date],
    *,
    horizon: int = HORIZON_DAYS,
    progress: bool = False,
) -> dict[str, Any]:
    """Run `days` in order through the daily flow (`ml.runner`, the steps the DAG runs) under `policy`, in
    this process.

    The caller isolates the environment first (DRIFTWATCH_HOME, DRIFTWATCH_LAKE, DRIFTWATCH_DB_URL,
    MLFLOW_TRACKING_URI): the replay writes history, models and reports like the DAG does. A policy that
    reads no drift signal (the calendar ones) does not run the monitors (`flow.SIGNAL_STEPS`).

    Returns: {"dataset", "policy", "label", "thresholds", "from", "to", "days": [one dict per day],
    "promotions": [...], "wall_s", "cpu_s"}. A day's dict has day, status, champion, auc, accuracy,
    drift_share, quality_drop, decision, trained, version, promoted, rejected, train_cpu_s, reason, wall_s
    (the day's seconds, all steps).
    """
    from threadpoolctl import threadpool_limits

    # one OpenMP thread, as a DAG task trains (idle OpenMP threads spin: two processes with two threads
    # each on two cores took 10-20x longer to fit)
    with threadpool_limits(limits=int(os.environ.get("OMP_NUM_THREADS") or 1)):
        return _replay(dataset, policy, days, horizon=horizon, progress=progress)


def _replay(
    dataset: str, policy: RetrainPolicy, days: Sequence[dt.date], *, horizon: int, progress: bool
) -> dict[str, Any]:
    from dataclasses import asdict

    from ml import flow, runner
    from ml.day import RunParams, settings_for
    from ml.history import History

    started_wall, started_cpu = time.perf_counter(), time.process_time()
    s = settings_for(dataset)
    h = History(s.history_url)
    params = RunParams(policy=policy)
    skip = () if policy.reads_signals else flow.SIGNAL_STEPS
    rows: list[dict[str, Any]] = []
    iterator: Iterable[dt.date] = days
    if progress:
        from tqdm import tqdm

        iterator = tqdm(days, desc=f"replay {s.name} {policy.name}", mininterval=5)
    for d in iterator:
        day_started = time.perf_counter()
        done = runner.run_day(
            dataset, d, run_id=f"replay__{policy.name}__{d.isoformat()}", params=params, skip=skip
        )
        rows.append(_day_row(s, h, d, done))
        rows[-1]["wall_s"] = round(time.perf_counter() - day_started, 3)
    # what the monitors recorded (drift policy): the estimate made on the day, and its flags
    for row in rows:
        kept = h.get_day(s.name, dt.date.fromisoformat(row["day"])) or {}
        row["estimated_auc"] = (kept.get("estimated_quality") or {}).get("roc_auc")
        row["estimated_accuracy"] = (kept.get("estimated_quality") or {}).get("accuracy")
        row["attribution_ndcg"] = kept.get("attribution_ndcg")
        row["attribution_violation"] = kept.get("attribution_violation")
        row["bias_violation"] = kept.get("bias_violation")
        served = h.get_model(s.name, row["champion"]) if row.get("champion") else None
        row["champion_holdout_auc"] = ((served or {}).get("holdout_metrics") or {}).get(s.objective.primary)
    promotions = promotion_effects(s, h, rows, horizon=horizon)
    return {
        "dataset": s.name,
        "policy": policy.name,
        "label": policy.label,
        "thresholds": asdict(s.thresholds),
        "task": s.task,
        "metric": s.objective.label,  # what the days' `auc` holds: AUC, macro F1 or RMSE (lower is better)
        "from": days[0].isoformat() if days else None,
        "to": days[-1].isoformat() if days else None,
        "days": rows,
        "promotions": promotions,
        "wall_s": round(time.perf_counter() - started_wall, 2),
        "cpu_s": round(time.process_time() - started_cpu, 2),
    }


def _day_row(s: Any, h: Any, d: dt.date, done: Any) -> dict[str, Any]:
    """One replayed day, from what its run did: status, serving champion, its AUC and accuracy on the day's
    labels, the decision, and the challenger's fate."""
    validated = done.output("validate_batch") or {}
    decided = done.output("decide") or {}
    challenger = ("train_challenger", "evaluate_challenger", "promote_challenger", "reject_challenger")
    promote_out = done.output("promote_challenger") or {}
    shadowed = (done.output("watch_champion") or {}).get("shadow") or {}
    row: dict[str, Any] = {
        "day": d.isoformat(),
        "status": "missing" if done.missing else ("accepted" if validated.get("ok") else "quarantined"),
        "champion": validated.get("champion_version"),
        "auc": None,
        "accuracy": None,
        "drift_share": None,
        "quality_drop": None,
        "decision": None,
        "trained": bool(decided.get("retrain")),
        "bootstrap": bool(decided.get("bootstrap")),
        "version": (done.output("train_challenger") or {}).get("version")
        or (
            shadowed.get("version")
            if shadowed.get("verdict") == "promote" and shadowed.get("acted")
            else None
        ),
        # promoted: directly, or (promotion.mode: shadow) when a shadow test ended with its promotion today
        "promoted": (done.states.get("promote_challenger") == "success" and not promote_out.get("shadow"))
        or (shadowed.get("verdict") == "promote" and bool(shadowed.get("acted"))),
        "shadowed": bool(promote_out.get("shadow")),  # put in shadow today (promotion.mode: shadow)
        "shadow_rejected": shadowed.get("version")
        if shadowed.get("verdict") == "reject" and shadowed.get("acted")
        else None,
        "rejected": done.states.get("reject_challenger") == "success",
        "failed": any(st == "failed" for step, st in done.states.items() if step != "record"),
        # the version `watch_champion` rolled back today (ml/watch.py), else None
        "rolled_back": (done.output("watch_champion") or {}).get("champion")
        if (done.output("watch_champion") or {}).get("rolled_back")
        else None,
        "reason": decided.get("reason"),
        "train_cpu_s": round(sum(done.cpu_s.get(step, 0.0) for step in challenger), 3),
        "wall_s": None,
    }
    if done.missing or not validated:
        return row
    if validated.get("ok") and (done.output("score_batch") or {}).get("champion_version") is not None:
        quality = daily_quality(s, d)
        if quality:
            row["auc"], row["accuracy"] = quality["roc_auc"], quality["accuracy"]
    kept = h.get_day(s.name, d) or {}
    row.update(
        decision=kept.get("decision"),
        drift_share=kept.get("drift_share"),
        quality_drop=kept.get("quality_drop"),
    )
    for step in done.failed:
        if step != "record":
            log.error("%s %s: %s failed: %s", s.name, d, step, done.errors[step])
    return row


def promotion_effects(
    settings: Any, history: Any, rows: Sequence[Mapping[str, Any]], *, horizon: int
) -> list[dict]:
    """For every promotion that replaced a champion: both models' mean daily AUC over the next `horizon`
    accepted days (the new one served them, the old one is scored on the same batches afterwards)."""
    from ml import data as lake
    from ml.evaluate import auc
    from ml.registry import load_model
    from ml.train import predict_proba

    accepted = [dt.date.fromisoformat(r["day"]) for r in rows if r["status"] == "accepted"]
    out = []
    for r in rows:
        if not r["promoted"] or r["bootstrap"]:
            continue
        day = dt.date.fromisoformat(r["day"])
        before = history.champion_at(settings.name, day - dt.timedelta(days=1))
        after = r["version"]
        window = [d for d in accepted if day < d <= day + dt.timedelta(days=horizon)]
        old_aucs, new_aucs = [], []
        for d in window:
            frame = lake.labelled(settings, lake.read_batch(settings, d))
            _, y = lake.model_frame(settings, frame)
            if settings.task == "binary":
                a_old = auc(y.to_numpy(), predict_proba(load_model(settings, before), settings, frame))
                a_new = auc(y.to_numpy(), predict_proba(load_model(settings, after), settings, frame))
            else:  # the primary metric, signed so that higher is better (RMSE negated)
                sign = 1.0 if settings.objective.higher_is_better else -1.0
                o = settings.objective
                a_old = sign * o._value(
                    y.to_numpy(), predict_proba(load_model(settings, before), settings, frame)
                )
                a_new = sign * o._value(
                    y.to_numpy(), predict_proba(load_model(settings, after), settings, frame)
                )
            if a_old is not None and a_new is not None:
                old_aucs.append(a_old)
                new_aucs.append(a_new)
        effect = next_days_effect(r["day"], before, after, old_aucs, new_aucs)
        effect["rolled_back"] = any(
            other.get("rolled_back") == after and other["day"] > r["day"] for other in rows
        )
        out.append(effect)
    return out


def next_days_effect(
    day: str, before: int | None, after: int, old_aucs: Sequence[float], new_aucs: Sequence[float]
) -> dict[str, Any]:
    """One promotion's effect: mean daily AUC of the replaced and the new champion on the same days;
    `worse` when the new one's is lower (None without a scored day after the promotion)."""
    if len(old_aucs) != len(new_aucs):
        raise ValueError(
            f"next_days_effect: {len(old_aucs)} AUCs of the old champion, {len(new_aucs)} of the new"
        )
    if not old_aucs:
        return {
            "day": day,
            "before": before,
            "after": after,
            "days": 0,
            "old_auc": None,
            "new_auc": None,
            "delta": None,
            "worse": None,
        }
    old, new = sum(old_aucs) / len(old_aucs), sum(new_aucs) / len(new_aucs)
    return {
        "day": day,
        "before": before,
        "after": after,
        "days": len(old_aucs),
        "old_auc": old,
        "new_auc": new,
        "delta": new - old,
        "worse": new < old,
    }


# ---- summaries ------------------------------------------------------------------------------------------
def _mean(values: Iterable[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


def summarize(
    result: Mapping[str, Any],
    start: dt.date | None = None,
    end: dt.date | None = None,
    *,
    scored_on: set[str] | None = None,
) -> dict[str, Any]:
    """Per-policy figures over the days in [start, end] (default: all): mean daily AUC and accuracy of the
    serving champion (days it scored; only those in `scored_on` when given, so policies are compared on the
    same days: `common_days`), retrains (bootstrap excluded), training CPU s (train + evaluate +
    promote/reject), promotions, rejections, promotions that made the next days worse, quarantined days."""

    def inside(day: str) -> bool:
        d = dt.date.fromisoformat(day)
        return (start is None or d >= start) and (end is None or d <= end)

    rows = [r for r in result["days"] if inside(r["day"])]
    scored = [r for r in rows if r["auc"] is not None and (scored_on is None or r["day"] in scored_on)]
    retrains = [r for r in rows if r["trained"] and not r["bootstrap"]]
    effects = [p for p in result.get("promotions", []) if inside(p["day"])]
    return {
        "policy": result["policy"],
        "label": result["label"],
        "days_scored": len(scored),
        "mean_auc": _mean(r["auc"] for r in scored),
        "mean_accuracy": _mean(r["accuracy"] for r in scored),
        "retrains": len(retrains),
        "train_cpu_s": round(sum(r["train_cpu_s"] for r in retrains), 1),
        "promotions": sum(1 for r in rows if r["promoted"] and not r["bootstrap"]),
        "shadowed": sum(1 for r in rows if r.get("shadowed")),
        "shadow_rejected": sum(1 for r in rows if r.get("shadow_rejected")),
        "rejected": sum(1 for r in retrains if r["rejected"]),
        "failed": sum(1 for r in retrains if r["failed"]),
        "worse_next_days": sum(1 for p in effects if p["worse"]),
        # rolled back by the watch (promotion.watch_days), and worse but left in place
        "rolled_back": sum(1 for r in rows if r.get("rolled_back")),
        "worse_kept": sum(1 for p in effects if p["worse"] and not p.get("rolled_back")),
        "quarantined": sum(1 for r in rows if r["status"] == "quarantined"),
    }


def common_days(results: Iterable[Mapping[str, Any]]) -> set[str]:
    """The days every replay scored (a quarantine under one policy's champion leaves a day out of all)."""
    sets = [{r["day"] for r in result["days"] if r["auc"] is not None} for result in results]
    return set.intersection(*sets) if sets else set()


CHOICE_RULE = (
    "among the settings with at most {budget} of the every-day policy's retrains, the highest mean "
    "daily AUC (ties within 0.0005: fewer retrains); when none fits the budget, the fewest retrains."
)
AUC_TIE = 0.0005


def choose_thresholds(
    candidates: Sequence[Mapping[str, Any]], *, reference: Mapping[str, Any], budget_share: float = 0.10
) -> Mapping[str, Any]:
    """Pick one tuning candidate (a `summarize` dict with its `thresholds`) by `CHOICE_RULE`.

    Raises:
        ValueError: no candidate, or a candidate without a mean AUC.
    """
    if not candidates:
        raise ValueError("choose_thresholds: no candidates")
    if any(c["mean_auc"] is None for c in candidates):
        raise ValueError("choose_thresholds: a candidate has no scored day (mean_auc None)")
    budget = budget_share * reference["retrains"]
    within = [c for c in candidates if c["retrains"] <= budget]
    if not within:
        return min(candidates, key=lambda c: (c["retrains"], -c["mean_auc"]))
    best = max(c["mean_auc"] for c in within)
    return min(
        (c for c in within if c["mean_auc"] >= best - AUC_TIE), key=lambda c: (c["retrains"], -c["mean_auc"])
    )


def triggers(row: Mapping[str, Any], thresholds: Mapping[str, Any]) -> bool:
    """Whether a monitored day crossed a retrain threshold (drift share or AUC drop beyond its noise, or a
    monitor set to retrain), cooldown aside: from the drift-triggered policy's reason when it decided the
    day, else from the thresholds."""
    from ml.policy import triggered

    if row.get("decision") in ("retrain", "skip") and row.get("reason"):
        return triggered(row["reason"])
    share, drop = row.get("drift_share"), row.get("quality_drop")
    return bool(
        (share is not None and share >= thresholds["drift_share"])
        or (drop is not None and drop >= thresholds["quality_drop"])
    )


def detection(result: Mapping[str, Any], onset: dt.date | None) -> dict[str, Any]:
    """Detection delay and false alarms of a drift-policy replay of a stream with a known onset.

    Batches are the monitored (scored) days. Delay: batches from the onset batch to the first batch that
    crossed a threshold (0 = flagged on the onset day itself); `retrain_delay` the same for the first
    retrain decision. False alarms: batches before the onset (all of them without drift) that crossed a
    threshold, also per 100 of those batches.
    """
    monitored = [r for r in result["days"] if r["status"] == "accepted" and r["champion"] is not None]
    t = result["thresholds"]
    clean = [r for r in monitored if onset is None or dt.date.fromisoformat(r["day"]) < onset]
    after = [r for r in monitored if onset is not None and dt.date.fromisoformat(r["day"]) >= onset]
    alarms = [r for r in clean if triggers(r, t)]
    first = next((i for i, r in enumerate(after) if triggers(r, t)), None)
    first_retrain = next((i for i, r in enumerate(after) if r["decision"] == "retrain"), None)
    return {
        "onset": onset.isoformat() if onset else None,
        "drift_free_batches": len(clean),
        "false_alarms": len(alarms),
        "false_alarms_per_100": 100 * len(alarms) / len(clean) if clean else None,
        "false_alarm_days": [r["day"] for r in alarms],
        "false_retrains": sum(1 for r in clean if r["decision"] == "retrain"),
        "batches_after_onset": len(after),
        "delay": first,
        "detected_on": after[first]["day"] if first is not None else None,
        "retrain_delay": first_retrain,
    }
