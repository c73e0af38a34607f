"""Replay a dataset day by day without Airflow, under a retraining policy, and measure what retraining buys.

The replay calls the `ml.steps` functions the DAG's tasks call, in the DAG's order, one process per
policy, each in a throwaway DRIFTWATCH_HOME (history DB, MLflow store, reports) with its own copy of the
lake (hard links: `steps.quarantine` moves a bad batch out of the lake and `steps.score` writes the scores
beside the batch). Policies:

    never      bootstrap the first champion, then never retrain
    daily      retrain every day                         (every-1)
    every-7    retrain when 7 days have passed since the last training
    every-30   retrain when 30 days have passed since the last training
    drift      the platform's own decision (`steps.decide`) with the dataset's thresholds

Every policy bootstraps the same first champion, and every challenger goes through the same promotion gate
(`steps.evaluate`: paired bootstrap CI of the AUC gain on the same holdout rows, log-loss and segment
guardrails), so policies differ only in when they train. Each day, before the day is used for anything,
the serving champion (the one in force after day D-1) scores the batch and its AUC and accuracy on the
day's labels are recorded (`daily_quality`: the same metrics as `steps.detect`'s `quality`). Only the
drift policy runs `steps.detect` (Evidently): it is the only policy that reads the drift report.

    driftwatch replay --dataset flights --policy drift --to 2013-12-31
    python scripts/bench_replay.py          # make bench: every policy, synthetic streams, docs/benchmarks.md
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ml.exceptions import BatchMissingError, ConfigError

log = logging.getLogger(__name__)

HORIZON_DAYS = (
    7  # a promotion "made the next days worse" when the new champion's mean daily AUC over them is lower
)
RESULT_FILE = "result.json"
LOG_FILE = "replay.log"


# ---- policies -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Policy:
    """When to retrain: `every` days after the last training, never (None), or on drift (`drift`)."""

    name: str
    every: int | None = None
    drift: bool = False

    @property
    def label(self) -> str:
        if self.drift:
            return "drift-triggered"
        if self.every is None:
            return "never retrain"
        return "every day" if self.every == 1 else f"every {self.every} days"


POLICY_NAMES = ("never", "daily", "every-7", "every-30", "drift")


def parse_policy(name: str) -> Policy:
    """`never`, `daily`, `every-N` (N >= 1 days) or `drift`.

    Raises:
        ConfigError: any other name.
    """
    if name == "never":
        return Policy("never")
    if name == "drift":
        return Policy("drift", drift=True)
    if name == "daily":
        return Policy("daily", every=1)
    m = re.fullmatch(r"every-(\d+)", name)
    if m and int(m.group(1)) >= 1:
        n = int(m.group(1))
        return Policy("daily" if n == 1 else name, every=n)
    raise ConfigError(
        f"replay: unknown policy {name!r}. Use one of {list(POLICY_NAMES)} or every-N (N >= 1)."
    )


def cost_rank(policy: Policy) -> float:
    """Sort key, most expensive replay first (so a parallel run does not end on the longest alone):
    every day, drift (a drift report a day), then the rarer schedules, never."""
    if policy.drift:
        return -0.5
    return -1.0 / policy.every if policy.every else 0.0


def due(policy: Policy, day: dt.date, last_trained: dt.date | None) -> bool:
    """Whether a scheduled policy retrains on `day`, given the logical date of the last training.

    Never before a first champion exists (`last_trained` None: the bootstrap is the pipeline's own), never
    for `never`, and never for `drift` (decided by `steps.decide`, not by the calendar).
    """
    if policy.drift or policy.every is None or last_trained is None:
        return False
    return (day - last_trained).days >= policy.every


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
    _, y = lake.model_frame(settings, frame)
    if len(y) != len(preds):
        raise ValueError(f"{settings.name} {day}: {len(preds)} stored scores for {len(y)} batch rows")
    return classification_metrics(y.to_numpy(), preds["score"].to_numpy())


# ---- the replay -----------------------------------------------------------------------------------------
def replay(
    dataset: str,
    policy: Policy,
    days: Sequence[dt.date],
    *,
    horizon: int = HORIZON_DAYS,
    progress: bool = False,
) -> dict[str, Any]:
    """Run `days` in order through the pipeline's steps under `policy`, in this process.

    The caller isolates the environment first (DRIFTWATCH_HOME, DRIFTWATCH_LAKE, DRIFTWATCH_DB_URL,
    MLFLOW_TRACKING_URI): the replay writes history, models and reports like the DAG does.

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
    dataset: str, policy: Policy, days: Sequence[dt.date], *, horizon: int, progress: bool
) -> dict[str, Any]:
    from dataclasses import asdict

    from ml import steps
    from ml.exceptions import ModelError

    started_wall, started_cpu = time.perf_counter(), time.process_time()
    s = steps.settings_for(dataset)
    h = steps.history_for(s)
    rows: list[dict[str, Any]] = []
    last_trained: dt.date | None = None
    day_started = started_wall  # a day's wall_s is set when the next one starts (the loop has several exits)
    iterator: Iterable[dt.date] = days
    if progress:
        from tqdm import tqdm

        iterator = tqdm(days, desc=f"replay {s.name} {policy.name}", mininterval=5)
    for d in iterator:
        if rows:
            rows[-1]["wall_s"] = round(time.perf_counter() - day_started, 3)
        day_started = time.perf_counter()
        run_id = f"replay__{policy.name}__{d.isoformat()}"
        row: dict[str, Any] = {
            "day": d.isoformat(),
            "status": None,
            "champion": None,
            "auc": None,
            "accuracy": None,
            "drift_share": None,
            "quality_drop": None,
            "decision": None,
            "trained": False,
            "bootstrap": False,
            "version": None,
            "promoted": False,
            "rejected": False,
            "failed": False,
            "train_cpu_s": 0.0,
            "reason": None,
            "wall_s": None,
        }
        rows.append(row)
        if not steps.batch_ready(dataset, d):
            row["status"] = "missing"
            continue
        validated = steps.validate(dataset, d, run_id)
        row["champion"] = validated["champion_version"]
        if not validated["ok"]:
            steps.quarantine(dataset, d, run_id)
            row["status"] = "quarantined"
            steps.record(dataset, d, run_id)
            continue
        row["status"] = "accepted"
        scored = steps.score(dataset, d)
        quality = daily_quality(s, d) if scored["champion_version"] is not None else None
        if quality:
            row["auc"], row["accuracy"] = quality["roc_auc"], quality["accuracy"]
        if policy.drift:  # the platform's own monitors, as the DAG runs them
            steps.monitor(dataset, d)
            steps.detect(dataset, d)
        champion = scored["champion_version"]
        scheduled = champion is not None and due(policy, d, last_trained)
        decision = steps.decide(dataset, d, force=scheduled)
        if champion is not None and not policy.drift:
            # the calendar decided, not decide()'s drift rules (no drift is measured for these policies)
            since = (
                f"{(d - last_trained).days} days since training on {last_trained}"
                if last_trained
                else "no training yet"
            )
            reason = f"{policy.label}: {'scheduled retrain' if scheduled else 'not scheduled'} ({since})"
            h.update_day(s.name, d, reason=reason)
            decision["reason"] = reason
        day_row = h.get_day(s.name, d) or {}
        row.update(
            decision=day_row.get("decision"),
            reason=decision["reason"],
            drift_share=day_row.get("drift_share"),
            quality_drop=day_row.get("quality_drop"),
        )
        if decision["retrain"]:
            cpu = time.process_time()
            row["trained"], row["bootstrap"] = True, bool(decision["bootstrap"])
            try:
                trained = steps.train(dataset, d, dag_run_id=run_id)
                row["version"] = trained["version"]
                evaluated = steps.evaluate(dataset, d, trained["version"])
                if evaluated["promote"]:
                    steps.promote(dataset, d, trained["version"], run_id)
                    row["promoted"] = True
                else:
                    steps.reject(dataset, d, trained["version"])
                    row["rejected"] = True
                last_trained = d
            except Exception as exc:  # noqa: BLE001 - recorded like the DAG's failure callback, replay goes on
                steps.record_failure(dataset, d, "train_challenger", f"{type(exc).__name__}: {exc}", run_id)
                row["failed"] = True
                log.error("%s %s: training failed: %s", s.name, d, exc)
            row["train_cpu_s"] = round(time.process_time() - cpu, 3)
        try:
            steps.record(dataset, d, run_id)
        except ModelError as exc:
            log.error("%s", exc)
    if rows:
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
        row["champion_holdout_auc"] = ((served or {}).get("holdout_metrics") or {}).get("roc_auc")
    promotions = promotion_effects(s, h, rows, horizon=horizon)
    return {
        "dataset": s.name,
        "policy": policy.name,
        "label": policy.label,
        "thresholds": asdict(s.thresholds),
        "from": days[0].isoformat() if days else None,
        "to": days[-1].isoformat() if days else None,
        "days": rows,
        "promotions": promotions,
        "wall_s": round(time.perf_counter() - started_wall, 2),
        "cpu_s": round(time.process_time() - started_cpu, 2),
    }


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
            frame = lake.read_batch(settings, d)
            _, y = lake.model_frame(settings, frame)
            a_old = auc(y.to_numpy(), predict_proba(load_model(settings, before), settings, frame))
            a_new = auc(y.to_numpy(), predict_proba(load_model(settings, after), settings, frame))
            if a_old is not None and a_new is not None:
                old_aucs.append(a_old)
                new_aucs.append(a_new)
        out.append(next_days_effect(r["day"], before, after, old_aucs, new_aucs))
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
    result: Mapping[str, Any], start: dt.date | None = None, end: dt.date | None = None
) -> dict[str, Any]:
    """Per-policy figures over the days in [start, end] (default: all): mean daily AUC and accuracy of the
    serving champion (days it scored), retrains (bootstrap excluded), training CPU s (train + evaluate +
    promote/reject), promotions, rejections, promotions that made the next days worse."""

    def inside(day: str) -> bool:
        d = dt.date.fromisoformat(day)
        return (start is None or d >= start) and (end is None or d <= end)

    rows = [r for r in result["days"] if inside(r["day"])]
    scored = [r for r in rows if r["auc"] is not None]
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
        "promotions": sum(1 for r in retrains if r["promoted"]),
        "rejected": sum(1 for r in retrains if r["rejected"]),
        "failed": sum(1 for r in retrains if r["failed"]),
        "worse_next_days": sum(1 for p in effects if p["worse"]),
        "quarantined": sum(1 for r in rows if r["status"] == "quarantined"),
    }


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
    """Whether a monitored day crossed a retrain threshold (drift share or AUC drop), cooldown aside."""
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


# ---- isolation: one process and one DRIFTWATCH_HOME per replay ------------------------------------------
def link_lake(source: Path, target: Path, days: Iterable[dt.date]) -> int:
    """Give a replay its own lake: hard links of the days' data files (copies across filesystems).

    Only data files are linked (driftwatch's own `_` files are not), so the replay starts unscored.
    Returns the number of partitions linked.
    """
    from ml.data import batch_files

    n = 0
    for day in days:
        files = batch_files(source / f"date={day.isoformat()}")
        if not files:
            continue
        part = target / f"date={day.isoformat()}"
        part.mkdir(parents=True, exist_ok=True)
        for f in files:
            try:
                os.link(f, part / f.name)
            except OSError:
                shutil.copy2(f, part / f.name)
        n += 1
    return n


def isolated_env(
    home: Path, lake: Path, overrides: Mapping[str, Any] | None = None, datasets: Path | None = None
) -> dict[str, str]:
    """The environment of a replay process: every store under `home`, one OpenMP thread, no alerts.

    `overrides` are YAML keys as dotted paths (`thresholds.drift_share`), passed as DRIFTWATCH__A__B."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DRIFTWATCH_DB_URL", "MLFLOW_TRACKING_URI", "DRIFTWATCH_ALERT_TARGET")
    }
    env.update(
        DRIFTWATCH_HOME=str(home),
        DRIFTWATCH_LAKE=str(lake),
        DRIFTWATCH_DB_URL=f"sqlite:///{home / 'driftwatch.db'}",
        MLFLOW_TRACKING_URI=f"sqlite:///{home / 'mlflow' / 'mlflow.db'}",
        MLFLOW_DISABLE_TELEMETRY="true",
        DO_NOT_TRACK="true",
        OMP_NUM_THREADS="1",
        DRIFTWATCH_TASK_THREADS="1",
        PYTHONWARNINGS="ignore",
    )
    if datasets is not None:
        env["DRIFTWATCH_DATASETS"] = str(datasets)
    for key, value in (overrides or {}).items():
        env["DRIFTWATCH__" + "__".join(p.upper() for p in key.split("."))] = json.dumps(value)
    return env


@dataclass(frozen=True)
class Job:
    """One replay to run in its own process: a dataset, a policy, a day range, YAML overrides."""

    key: str  # unique name of the job: its work folder and its key in the results
    dataset: str
    policy: str
    start: dt.date
    end: dt.date
    overrides: Mapping[str, Any] | None = None
    datasets: Path | None = None  # DRIFTWATCH_DATASETS for this job (e.g. generated synthetic variants)
    source_lake: Path | None = None  # where the partitions are (default: the settings' lake)


def _start(job: Job, workdir: Path) -> tuple[subprocess.Popen, Path]:
    from ml.config import Paths, load_settings
    from ml.data import daterange

    env = isolated_env(workdir / "home", workdir / "lake", job.overrides, job.datasets)
    s = load_settings(
        job.dataset if job.datasets is None else job.datasets / f"{job.dataset}.yaml", environ=env
    )
    # the partitions come from this process's lake (DRIFTWATCH_LAKE or <home>/lake), not the replay's
    source = (job.source_lake or Paths.from_env().lake) / s.name
    if workdir.exists():
        shutil.rmtree(workdir)
    # from the original window's start even when the replay starts later: the first champion trains on it,
    # as a backfill of a later range finds those days in the lake
    linked = link_lake(
        source, workdir / "lake" / s.name, daterange(min(job.start, s.original_start), job.end)
    )
    if not linked:
        raise BatchMissingError(
            f"replay {job.key}: no partitions of {s.name} in {source} for {job.start}..{job.end}. "
            f"Write them first (`driftwatch prepare {job.dataset}`) or set DRIFTWATCH_LAKE."
        )
    spec = {
        "dataset": job.dataset,
        "policy": job.policy,
        "from": job.start.isoformat(),
        "to": job.end.isoformat(),
        "out": str(workdir / RESULT_FILE),
    }
    logf = (workdir / LOG_FILE).open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "ml.replay", json.dumps(spec)], env=env, stdout=logf, stderr=subprocess.STDOUT
    )
    return proc, workdir / RESULT_FILE


def run_jobs(jobs: Sequence[Job], root: Path, *, parallel: int = 1, echo=print) -> dict[str, dict[str, Any]]:
    """Run replays in separate processes, `parallel` at a time, in the given order (put the longest first).

    Returns {job.key: result} with `process_wall_s` (spawn to exit) added. Raises RuntimeError naming the
    log of a replay that failed, after the others finished.
    """
    pending = list(jobs)
    running: list[tuple[Job, subprocess.Popen, Path, float]] = []
    results: dict[str, dict[str, Any]] = {}
    failed: list[str] = []
    while pending or running:
        while pending and len(running) < max(1, parallel):
            job = pending.pop(0)
            proc, out = _start(job, root / job.key)
            running.append((job, proc, out, time.perf_counter()))
            echo(f"replay {job.key}: started ({job.dataset}, {job.policy}, {job.start}..{job.end})")
        time.sleep(0.5)
        for item in list(running):
            job, proc, out, t0 = item
            if proc.poll() is None:
                continue
            running.remove(item)
            if proc.returncode != 0 or not out.is_file():
                failed.append(f"{job.key} (exit {proc.returncode}, log {out.parent / LOG_FILE})")
                echo(f"replay {job.key}: FAILED, see {out.parent / LOG_FILE}")
                continue
            result = json.loads(out.read_text())
            result["process_wall_s"] = round(time.perf_counter() - t0, 1)
            results[job.key] = result
            echo(f"replay {job.key}: done in {result['process_wall_s']:.0f} s")
    if failed:
        raise RuntimeError("replays failed: " + "; ".join(failed))
    return results


def _worker(spec: Mapping[str, Any]) -> None:
    """Entry point of a replay process (`python -m ml.replay SPEC`): the environment is already isolated."""
    from ml import data as lake
    from ml import steps

    s = steps.settings_for(spec["dataset"])
    start, end = dt.date.fromisoformat(spec["from"]), dt.date.fromisoformat(spec["to"])
    days = lake.daterange(start, end)
    result = replay(spec["dataset"], parse_policy(spec["policy"]), days, progress=True)
    result["settings"] = {"yaml": str(s.yaml_path), "lake": str(s.paths.lake), "home": str(s.paths.home)}
    out = Path(spec["out"])
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(json.dumps(result, default=str))
    tmp.replace(out)


# ---- report helpers -------------------------------------------------------------------------------------
def replace_section(text: str, name: str, body: str) -> str:
    """Replace what lies between `<!-- bench:NAME:start -->` and `<!-- bench:NAME:end -->` (appended at the
    end, markers included, when the markers are not there yet)."""
    start, end = f"<!-- bench:{name}:start -->", f"<!-- bench:{name}:end -->"
    block = f"{start}\n{body.strip()}\n{end}"
    if start in text and end in text and text.index(start) < text.index(end):
        return text[: text.index(start)] + block + text[text.index(end) + len(end) :]
    return text.rstrip("\n") + "\n\n" + block + "\n"


def format_table(summaries: Sequence[Mapping[str, Any]]) -> str:
    """A markdown table of `summarize` results, one row per policy."""

    def num(value: float | None, digits: int) -> str:
        return "n/a" if value is None else f"{value:.{digits}f}"

    lines = [
        "| policy | days scored | mean AUC | mean accuracy | retrains | training CPU s | promoted | rejected "
        f"| promotions worse over the next {HORIZON_DAYS} days |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for m in summaries:
        lines.append(
            f"| {m['label']} | {m['days_scored']} | {num(m['mean_auc'], 4)} | {num(m['mean_accuracy'], 4)} "
            f"| {m['retrains']} | {m['train_cpu_s']:.0f} | {m['promotions']} | {m['rejected']} "
            f"| {m['worse_next_days']} |"
        )
    return "\n".join(lines)


def plot_auc(
    results: Mapping[str, Mapping[str, Any]],
    path: Path,
    *,
    title: str,
    split: dt.date | None = None,
    window: int = 7,
) -> Path:
    """Daily AUC of the serving champion per policy (a `window`-day rolling mean) above a strip of each
    policy's retrains (filled: promoted, open: rejected)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    fig, (ax, rug) = plt.subplots(
        2, 1, figsize=(10, 5.2), dpi=100, sharex=True, gridspec_kw={"height_ratios": [3.2, 1]}
    )
    labels = []
    for i, result in enumerate(results.values()):
        frame = pd.DataFrame(result["days"])
        scored = frame[frame["auc"].notna()]
        if scored.empty:
            continue
        (line,) = ax.plot(
            pd.to_datetime(scored["day"]),
            scored["auc"].astype(float).rolling(window, min_periods=1).mean(),
            lw=1.3,
            label=result["label"],
        )
        color = line.get_color()
        trained = frame[frame["trained"] & ~frame["bootstrap"]]
        promoted, rejected = trained[trained["promoted"]], trained[trained["rejected"]]
        rug.scatter(pd.to_datetime(promoted["day"]), [i] * len(promoted), marker="|", s=40, color=color, lw=1)
        rug.scatter(
            pd.to_datetime(rejected["day"]),
            [i] * len(rejected),
            marker="o",
            s=9,
            facecolors="none",
            edgecolors=color,
            lw=0.8,
        )
        labels.append(result["label"].split(" (")[0])
    rug.set_yticks(range(len(labels)), labels, fontsize=7)
    rug.set_ylim(-0.7, len(labels) - 0.3)
    rug.invert_yaxis()
    rug.set_title("retrains: | promoted, o rejected", fontsize=8, loc="left")
    for a in (ax, rug):
        a.grid(alpha=0.3)
        if split is not None:
            a.axvline(pd.Timestamp(split), color="0.4", ls="--", lw=1)
    if split is not None:
        ax.text(pd.Timestamp(split), ax.get_ylim()[1], " tuning | test", va="top", fontsize=8, color="0.3")
    ax.set_ylabel(f"champion AUC on the day's labels\n({window}-day rolling mean)", fontsize=9)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="best", ncol=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print(
            "usage: python -m ml.replay SPEC_JSON (started by run_jobs; use `driftwatch replay`)",
            file=sys.stderr,
        )
        return 2
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    _worker(json.loads(args[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
