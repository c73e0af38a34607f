"""MLflow tracking and registry: log challengers, move the `champion` alias, roll it back, keep the audit log.

The alias audit log in the history database is the timeline of record (ordered by logical date, so a
backfill and day-by-day runs agree); the MLflow aliases mirror its latest entry.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ml.config import Settings
from ml.history import History

if TYPE_CHECKING:
    import pandas as pd
    from mlflow import MlflowClient

log = logging.getLogger(__name__)

CHAMPION = "champion"
PREVIOUS = "previous"
TAG = "driftwatch."
SKOPS_TRUSTED_TYPES = [
    "functools.partial",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.utils.validation.check_array",
]


def _configure(settings: Settings) -> None:
    import mlflow

    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_registry_uri(settings.tracking_uri)


def client(settings: Settings) -> MlflowClient:
    from mlflow import MlflowClient

    _configure(settings)
    return MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)


def _local_store(settings: Settings) -> bool:
    return settings.tracking_uri.startswith(("sqlite:", "file:", "/", "postgresql:", "mysql:"))


def experiment_id(settings: Settings, kind: str) -> str:
    """The dataset's `training` or `monitoring` experiment, created on first use.

    With a database tracking URI the artifact location is set explicitly, so artifacts land under
    DRIFTWATCH_HOME whichever process creates the experiment (MLflow's default is ./mlruns of the cwd).
    """
    return _experiment_id(
        settings.tracking_uri, f"{settings.name}-{kind}", str(settings.paths.mlflow_artifacts)
    )


@lru_cache(maxsize=32)
def _experiment_id(tracking_uri: str, name: str, artifact_root: str) -> str:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    c = MlflowClient(tracking_uri=tracking_uri)
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    location = None
    if tracking_uri.startswith(("sqlite:", "postgresql:", "mysql:", "file:")):
        location = Path(artifact_root, name).as_uri()
    try:
        return c.create_experiment(name, artifact_location=location)
    except MlflowException:  # created meanwhile by another process
        exp = c.get_experiment_by_name(name)
        assert exp is not None
        return exp.experiment_id


def log_challenger(
    settings: Settings,
    *,
    day: dt.date,
    model: Any,
    train: pd.DataFrame,
    split: dict[str, Any],
    trigger: str,
    digest: str,
    params: dict[str, Any],
    reference: pd.DataFrame,
    dag_run_id: str | None,
    dag_run_url: str | None,
    metrics: dict[str, float],
    files: Mapping[str, Sequence[Path]] | None = None,
) -> dict[str, Any]:
    """Log a trained challenger (params, lineage, model with signature, `files` {artifact folder: paths}) and
    then register it as a new version.

    The order makes a crash harmless: the run is complete and FINISHED before the version exists, and the
    version is created with its tags (logical date, data digest) in one call, so a retry finds what an
    earlier try registered (`registered_for`) instead of registering the same challenger again.

    Returns: {"version", "run_id", "experiment_id", "model_uri"}.
    """
    import tempfile

    import mlflow
    from mlflow.models import infer_signature

    from ml import faults
    from ml.data import model_frame

    _configure(settings)
    exp = experiment_id(settings, "training")
    X, _ = model_frame(settings, train)
    example = X.head(5)
    signature = infer_signature(example, model.predict_proba(example)[:, 1])
    tags = challenger_tags(
        settings, day, digest, trigger=trigger, split=split, dag_run_id=dag_run_id, dag_run_url=dag_run_url
    )
    with (
        _prints_as_info(),
        mlflow.start_run(experiment_id=exp, run_name=f"{settings.name}-{day}-challenger", tags=tags) as run,
    ):
        faults.point("train.after_run_start", settings.name)
        mlflow.log_params(
            {
                "model": settings.training.model,
                "window": settings.training.window,
                "seed": settings.training.seed,
                "train_days": len(split["train_days"]),
                "train_rows": len(train),
                "train_range": split["train_range"],
                "holdout_range": split["holdout_range"],
                **{f"model.{k}": v for k, v in params.items()},
            }
        )
        mlflow.log_metrics({k: float(v) for k, v in metrics.items() if v is not None})
        source = str(settings.lake_dir)
        train_ds = mlflow.data.from_pandas(
            train[[settings.date_column, *settings.features, settings.label]],
            source=source,
            targets=settings.label,
            name=f"{settings.name}:{split['train_range']}",
        )
        mlflow.log_input(train_ds, context="training")
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "split.json").write_text(json.dumps(split, indent=2))
            reference.to_parquet(Path(tmp) / "reference.parquet", index=False)
            mlflow.log_artifacts(tmp, artifact_path="data")
        for folder, paths in (files or {}).items():
            for path in paths:
                mlflow.log_artifact(str(path), artifact_path=folder)
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            signature=signature,
            input_example=example,
            # skops (MLflow's default format) refuses types it does not know; these are the ones a
            # HistGradientBoosting pipeline we built ourselves contains, reviewed and trusted
            skops_trusted_types=SKOPS_TRUSTED_TYPES,
            # stated, not inferred: MLflow's inference re-imports the model in a subprocess (~10 s)
            pip_requirements=_pip_requirements(),
        )
    faults.point("train.before_register", settings.name)
    with _prints_as_info():
        registered = mlflow.register_model(info.model_uri, settings.registered_model, tags=tags)
    version = int(registered.version)
    faults.point("train.after_register", settings.name)
    client(settings).update_model_version(
        settings.registered_model,
        str(version),
        description=f"Challenger trained on {day} ({trigger}). Training days {split['train_range']}, "
        f"holdout {split['holdout_range']}. Awaiting evaluation.",
    )
    return {
        "version": version,
        "run_id": run.info.run_id,
        "experiment_id": exp,
        "model_uri": f"models:/{settings.registered_model}/{version}",
    }


@contextmanager
def _prints_as_info() -> Iterator[None]:
    """MLflow prints some events to stderr itself ("Created version '7' of model ...", the run's URL), which
    Airflow shows in the task log at level error: they become INFO lines of this module's logger."""
    import contextlib
    import io

    buffer = io.StringIO()
    try:
        with contextlib.redirect_stderr(buffer):
            yield
    finally:
        for line in buffer.getvalue().splitlines():
            if line.strip():
                log.info("mlflow: %s", line.strip())


def challenger_tags(
    settings: Settings,
    day: dt.date,
    digest: str,
    *,
    trigger: str,
    split: Mapping[str, Any],
    dag_run_id: str | None,
    dag_run_url: str | None,
) -> dict[str, str]:
    """The tags a challenger's run and version carry; the logical date and the data digest identify it."""
    return {
        f"{TAG}dataset": settings.name,
        f"{TAG}logical_date": day.isoformat(),
        f"{TAG}trigger": trigger,
        f"{TAG}train_range": split["train_range"],
        f"{TAG}holdout_range": split["holdout_range"],
        f"{TAG}data_digest": digest,
        f"{TAG}dag_run_id": dag_run_id or "",
        f"{TAG}dag_run_url": dag_run_url or "",
    }


def registered_for(settings: Settings, day: dt.date, digest: str) -> list[dict[str, Any]]:
    """Versions registered for `day` on the data with `digest` (an earlier try of the same training), oldest
    first: [{"version", "run_id", "run_status", "metrics", "params", "experiment_id"}]."""
    c = client(settings)
    found = c.search_model_versions(
        f"name = '{settings.registered_model}' and tags.`{TAG}logical_date` = '{day.isoformat()}' "
        f"and tags.`{TAG}data_digest` = '{digest}'"
    )
    out = []
    for mv in sorted(found, key=lambda m: int(m.version)):
        run = c.get_run(mv.run_id) if mv.run_id else None
        out.append(
            {
                "version": int(mv.version),
                "run_id": mv.run_id,
                "tags": dict(mv.tags),
                "description": mv.description,
                "run_status": run.info.status if run else None,
                "experiment_id": run.info.experiment_id if run else None,
                "metrics": dict(run.data.metrics) if run else {},
                "params": dict(run.data.params) if run else {},
            }
        )
    return out


def register_finished_run(settings: Settings, day: dt.date, digest: str) -> int | None:
    """A complete training run of `day` on the data with `digest` whose try was killed before it created the
    model version (between the run's end and the registration): register it now, with its tags. Returns the
    new version, or None when there is no such run."""
    import mlflow

    c = client(settings)
    exp = experiment_id(settings, "training")
    runs = c.search_runs(
        [exp],
        filter_string=f"tags.`{TAG}logical_date` = '{day.isoformat()}' and tags.`{TAG}data_digest` = '{digest}' "
        "and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
    )
    for run in runs:
        models = mlflow.search_logged_models(
            experiment_ids=[exp], output_format="list", filter_string=f"source_run_id = '{run.info.run_id}'"
        )
        if not models:
            continue
        tags = {k: v for k, v in run.data.tags.items() if k.startswith(TAG)}
        with _prints_as_info():
            version = int(
                mlflow.register_model(
                    f"models:/{models[0].model_id}", settings.registered_model, tags=tags
                ).version
            )
        log.warning(
            "%s %s: registered version %s from training run %s, which an earlier try completed but was "
            "killed before registering",
            settings.name,
            day,
            version,
            run.info.run_id,
        )
        return version
    return None


def end_abandoned_runs(settings: Settings, day: dt.date, note: str) -> list[str]:
    """Training runs of `day` left RUNNING by a try that died (killed before it could end them): ended
    FAILED with `note` in tag driftwatch.failed_reason. Returns their run ids."""
    c = client(settings)
    runs = c.search_runs(
        [experiment_id(settings, "training")],
        filter_string=f"tags.`{TAG}logical_date` = '{day.isoformat()}' and attributes.status = 'RUNNING'",
    )
    for run in runs:
        c.set_tag(run.info.run_id, f"{TAG}failed_reason", note[:5000])
        c.set_terminated(run.info.run_id, "FAILED")
        log.warning(
            "%s %s: training run %s of an earlier try was left RUNNING; ended as FAILED (%s)",
            settings.name,
            day,
            run.info.run_id,
            note,
        )
    return [r.info.run_id for r in runs]


def mark_failed(settings: Settings, version: int, day: dt.date, message: str) -> None:
    """A version that will never be evaluated says so: decision `failed`, the reason, a description."""
    c = client(settings)
    _set_tags(c, settings, version, {f"{TAG}decision": "failed", f"{TAG}reason": f"{day}: {message}"[:5000]})
    c.update_model_version(
        settings.registered_model,
        str(version),
        description=f"Not evaluated: {message} ({day}). Never served.",
    )


def _pip_requirements() -> list[str]:
    from importlib.metadata import PackageNotFoundError, version

    reqs = []
    for dist in ("scikit-learn", "numpy", "scipy", "pandas", "skops", "cloudpickle"):
        try:
            reqs.append(f"{dist}=={version(dist)}")
        except PackageNotFoundError:
            continue
    return reqs


_MODEL_CACHE: dict[tuple[str, str, int], Any] = {}


def load_model(settings: Settings, version: int, *, run_id: str | None = None) -> Any:
    """The scikit-learn pipeline of a registered version (cached per process). `run_id`, the MLflow run
    that logged it (the history knows it), lets a process find its local copy without asking the registry."""
    import mlflow

    key = (settings.tracking_uri, settings.registered_model, int(version))
    if key not in _MODEL_CACHE:
        _configure(settings)
        _MODEL_CACHE[key] = mlflow.sklearn.load_model(str(_local_model_dir(settings, int(version), run_id)))
    return _MODEL_CACHE[key]


def _local_model_dir(settings: Settings, version: int, run_id: str | None = None) -> Path:
    """The version's MLflow model folder, downloaded once into <models>/<dataset>/v<N>/model-<run id>/.

    Every task is a new process: without this each one fetched the model from the registry again (~1 s a
    task in server mode). A version's files never change; the run id in the folder name keeps a cache
    from an older registry (same version number, another run) from being used. With `run_id` given, a
    copy already there is used without a registry call (~0.1 s a task); a download always asks the
    registry which run the version came from.
    """
    import shutil
    import tempfile

    import mlflow

    def folder(run: str) -> Path:
        return settings.paths.models / settings.name / f"v{version}" / f"model-{run}"

    if run_id and (folder(run_id) / "MLmodel").is_file():
        return folder(run_id)
    target = folder(client(settings).get_model_version(settings.registered_model, str(version)).run_id)
    if (target / "MLmodel").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".download-", dir=target.parent))
    try:
        got = Path(
            mlflow.artifacts.download_artifacts(
                f"models:/{settings.registered_model}/{version}", dst_path=str(tmp)
            )
        )
        try:
            got.replace(target)
        except OSError:  # another process cached it first: theirs is the same files
            if not (target / "MLmodel").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _set_tags(c: MlflowClient, settings: Settings, version: int, tags: dict[str, Any]) -> None:
    for key, value in tags.items():
        if value is None:
            continue
        if isinstance(value, float):
            value = f"{value:.6f}"
        c.set_model_version_tag(settings.registered_model, str(version), key, str(value))


def evidence_tags(evaluation: dict[str, Any]) -> dict[str, Any]:
    ch = evaluation["challenger"]
    tags: dict[str, Any] = {
        f"{TAG}decision": "promoted" if evaluation["promote"] else "rejected",
        f"{TAG}reason": evaluation["reason"][:5000],
        "holdout.roc_auc": ch["roc_auc"],
        "holdout.log_loss": ch["log_loss"],
        "holdout.accuracy": ch["accuracy"],
        "holdout.f1": ch["f1"],
        "holdout.rows": evaluation["holdout_rows"],
    }
    if evaluation.get("champion"):
        ci = evaluation["bootstrap_ci"]
        tags.update(
            {
                "champion.roc_auc": evaluation["champion"]["roc_auc"],
                "champion.log_loss": evaluation["champion"]["log_loss"],
                "gain.roc_auc": ci["delta"],
                "gain.ci_low": ci["low"],
                "gain.ci_high": ci["high"],
            }
        )
    segment = evaluation.get("checks", {}).get("worst_segment_auc_drop")
    if segment:
        tags["guardrail.worst_segment_drop"] = segment["value"]
        tags["guardrail.worst_segment"] = segment.get("segment")
    return tags


def _description(settings: Settings, day: dt.date, evaluation: dict[str, Any], before: int | None) -> str:
    lines = [
        f"Decision on {day}: {evaluation['reason']}.",
        f"Holdout: {evaluation['holdout_rows']} rows, the same rows for champion and challenger.",
    ]
    for name, check in evaluation["checks"].items():
        where = f" (worst: {check['segment']})" if check.get("segment") else ""
        lines.append(
            f"- {name}: {check['value']:.5f} {check['rule']} {check['threshold']} -> "
            f"{'pass' if check['passed'] else 'FAIL'}{where}"
        )
    if evaluation["promote"]:
        lines.append(f"Replaced champion version {before}." if before else "First champion of the dataset.")
    return "\n".join(lines)


def promote(
    settings: Settings,
    history: History,
    *,
    version: int,
    day: dt.date,
    evaluation: dict[str, Any],
    dag_run_id: str | None,
) -> dict[str, Any]:
    """Make `version` the champion as of `day`, under the dataset's promotion lock. Crash-safe and retry-safe.

    One source of truth: the history database. The promotion happens when one transaction commits the
    `champion` and `previous` audit events and the day's row (`History.record_promotion`); the MLflow tags,
    description and aliases are then brought to mirror it. A process killed at any point leaves either
    nothing (before the commit: the retry promotes) or a committed promotion whose mirror is incomplete:
    the retry, a re-run, the day's `record` step or `driftwatch repair` finds the audit rows and completes
    the mirror. A killed holder's lock row is taken over at once (see `History.lock`).

    An old day re-run after later promotions records its event but leaves the aliases on the later champion.
    `before` is the champion in force just before this event in the audit timeline, including events of
    the same logical date (a manual and a scheduled run of one day, or a rollback stamped that day): the
    second promotion of a day replaces the first, so each event's `before` is the previous event's `after`.

    Returns: {"promoted", "champion", "previous", "recorded_before"}: `recorded_before` is True when an
    earlier try had already committed this promotion (nothing new happened, no new alert is due).
    """
    from ml import faults

    c = client(settings)
    holder = f"promote:{dag_run_id or 'manual'}:v{version}"
    with history.lock(f"promote:{settings.name}", holder):
        faults.point("promote.after_lock", settings.name)
        done = [
            e
            for e in history.alias_events(settings.name, CHAMPION)
            if e["logical_date"] == day.isoformat() and e["after_version"] == version
        ]
        if done:  # an earlier try committed it: complete the mirror, report what that promotion replaced
            before = done[0]["before_version"]
            log.info(
                "%s %s: the promotion of version %s was recorded by an earlier try or run (%s); completing "
                "the MLflow side",
                settings.name,
                day,
                version,
                done[0]["dag_run_id"],
            )
            # a re-run of the day started its row afresh: it says promoted again
            history.update_day(
                settings.name,
                day,
                promotion="promoted",
                promotion_reason=evaluation["reason"],
                candidate_version=version,
            )
        else:
            before = history.champion_at(settings.name, day)
            if before == version:
                return {
                    "promoted": False,
                    "champion": version,
                    "previous": None,
                    "note": "already champion",
                    "recorded_before": True,
                }
            history.record_promotion(
                dataset=settings.name,
                model=settings.registered_model,
                day=day,
                version=version,
                before=before,
                reason=evaluation["reason"],
                dag_run_id=dag_run_id,
            )
            faults.point("promote.after_audit", settings.name)
        _set_tags(
            c,
            settings,
            version,
            {
                **evidence_tags(evaluation),
                f"{TAG}promoted_on": day.isoformat(),
                f"{TAG}replaced_version": before,
            },
        )
        c.update_model_version(
            settings.registered_model,
            str(version),
            description=_description(settings, day, evaluation, before),
        )
        faults.point("promote.after_tags", settings.name)
        sync_aliases(settings, history, c)
    return {"promoted": True, "champion": version, "previous": before, "recorded_before": bool(done)}


def _alias_version(c: MlflowClient, settings: Settings, alias: str) -> int | None:
    from mlflow.exceptions import MlflowException

    try:
        return int(c.get_model_version_by_alias(settings.registered_model, alias).version)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            return None  # no model yet, or no such alias
        raise


def alias_drift(settings: Settings, history: History, c: MlflowClient | None = None) -> list[dict[str, Any]]:
    """Where the MLflow aliases differ from the audit log's latest events (nothing is changed):
    [{"alias", "audit", "mlflow", "since", "reason"}]. Empty when the registry mirrors the audit log."""
    c = c or client(settings)
    out = []
    for alias in (CHAMPION, PREVIOUS):
        last = history.latest_alias(settings.name, alias)
        if last is None or last["after_version"] is None:
            continue
        current = _alias_version(c, settings, alias)
        if current != int(last["after_version"]):
            out.append(
                {
                    "alias": alias,
                    "audit": int(last["after_version"]),
                    "mlflow": current,
                    "since": last["logical_date"],
                    "reason": last["reason"],
                }
            )
    return out


def sync_aliases(
    settings: Settings, history: History, c: MlflowClient | None = None
) -> dict[str, int | None]:
    """Point the MLflow aliases at the latest entries of the audit log (idempotent); `champion` first."""
    from ml import faults

    c = c or client(settings)
    latest: dict[str, int | None] = {}
    for alias in (CHAMPION, PREVIOUS):
        last = history.latest_alias(settings.name, alias)
        if last is None:
            continue
        latest[alias] = last["after_version"]
        if last["after_version"] is None:
            continue
        if _alias_version(c, settings, alias) != int(last["after_version"]):
            c.set_registered_model_alias(settings.registered_model, alias, str(last["after_version"]))
            c.set_registered_model_tag(
                settings.registered_model,
                f"{TAG}audit.{alias}",
                json.dumps(
                    {
                        "version": last["after_version"],
                        "before": last["before_version"],
                        "logical_date": last["logical_date"],
                        "reason": (last["reason"] or "")[:200],
                        "dag_run_id": last["dag_run_id"],
                        "actor": last["actor"],
                        "at": last["at"],
                    }
                ),
            )
            if alias == CHAMPION:
                faults.point("promote.after_champion_alias", settings.name)
    return latest


def _complete_promotion_tags(settings: Settings, history: History, c: MlflowClient) -> None:
    """The evidence tags and description of the audit log's champion, when a promotion was interrupted before
    it set them (read back from the evaluation kept in the day's row)."""
    last = history.latest_alias(settings.name, CHAMPION)
    if last is None or last["after_version"] is None or (last["reason"] or "").startswith("rollback:"):
        return
    version = int(last["after_version"])
    if c.get_model_version(settings.registered_model, str(version)).tags.get(f"{TAG}promoted_on"):
        return
    day = dt.date.fromisoformat(last["logical_date"])
    evaluation = (history.get_day(settings.name, day) or {}).get("evaluation")
    if not isinstance(evaluation, dict) or evaluation.get("challenger_version") != version:
        return
    before = last["before_version"]
    _set_tags(
        c,
        settings,
        version,
        {**evidence_tags(evaluation), f"{TAG}promoted_on": day.isoformat(), f"{TAG}replaced_version": before},
    )
    c.update_model_version(
        settings.registered_model, str(version), description=_description(settings, day, evaluation, before)
    )


def repair(settings: Settings, history: History, *, holder: str = "repair") -> list[dict[str, Any]]:
    """Make the MLflow aliases name what the audit log names, under the promotion lock (so an in-flight
    promotion is not mistaken for drift). Returns the drift it repaired (empty: nothing was wrong); each
    repair is logged as an error: either a promotion was interrupted and never retried, or someone moved
    an alias outside driftwatch (use `driftwatch rollback` to change the champion, not the MLflow UI)."""
    c = client(settings)
    with history.lock(f"promote:{settings.name}", f"{holder}:{os.getpid()}"):
        drift = alias_drift(settings, history, c)
        if drift:
            _complete_promotion_tags(settings, history, c)
            sync_aliases(settings, history, c)
    for d in drift:
        log.error(
            "%s: MLflow alias %r of %s named %s, the audit log names version %s (since %s: %s); moved "
            "it back to %s",
            settings.name,
            d["alias"],
            settings.registered_model,
            f"version {d['mlflow']}" if d["mlflow"] is not None else "nothing",
            d["audit"],
            d["since"],
            d["reason"],
            d["audit"],
        )
    return drift


ROLLED_BACK_TAGS = (f"{TAG}rolled_back", f"{TAG}rolled_back_reason", f"{TAG}rolled_back_on")


def rollback(
    settings: Settings,
    history: History,
    *,
    reason: str,
    actor: str | None = None,
    day: dt.date | None = None,
) -> dict[str, Any]:
    """Move `champion` back to `previous`, under the promotion lock, with audit rows like a promotion's.

    Semantics:
        - current = the latest `champion` event of the audit log, target = the latest `previous` event.
        - `champion` goes current -> target and `previous` goes target -> current: `previous` points at the
          version rolled back from, so a second rollback undoes the first.
        - Both events are stamped with the latest of: the latest audit event's logical date, the latest
          processed day (so days already run keep the champion they had) — or `day`, which may not
          be earlier). A rollback is a manual act outside the daily schedule; stamped so, it sorts after
          every event already recorded, `champion_at` answers the restored version from that date on (that
          date included), the next scheduled day serves it, and the timeline stays in logical-date order.
          Dates before it keep their answers. The wall-clock time is in the events' `at` column.
        - The version rolled back from is tagged driftwatch.rolled_back=true with the reason and date; the
          restored version loses those tags.

    Args:
        reason: why (required); recorded as "rollback: <reason>".
        actor: who (default: $USER@host).
        day: logical date to stamp the events with (default: the latest audit event's).

    Returns: {"rolled_back", "champion", "previous", "logical_date", "reason"}.

    Raises:
        ModelError: no reason, no champion, no previous version, `day` before the latest audit event, or
            the registry refused the change (the message says what was recorded).
    """
    from mlflow.exceptions import MlflowException

    from ml.exceptions import ModelError

    reason = (reason or "").strip()
    if not reason:
        raise ModelError(f'{settings.name}: rollback needs a reason for the audit log (--reason "...").')
    c = client(settings)
    holder = f"rollback:{actor or 'manual'}"
    with history.lock(f"promote:{settings.name}", holder):
        events = history.alias_events(settings.name)

        def latest(alias: str) -> dict[str, Any] | None:
            return max(
                (e for e in events if e["alias"] == alias),
                key=lambda e: (e["logical_date"], e["id"]),
                default=None,
            )

        champion, previous = latest(CHAMPION), latest(PREVIOUS)
        if champion is None or champion["after_version"] is None:
            raise ModelError(f"{settings.name}: nothing to roll back: the audit log has no champion.")
        current = int(champion["after_version"])
        if previous is None or previous["after_version"] is None:
            raise ModelError(
                f"{settings.name}: cannot roll back champion version {current}: there is no previous "
                f"version to go back to (version {current} is the first champion)."
            )
        target = int(previous["after_version"])
        if target == current:
            raise ModelError(
                f"{settings.name}: cannot roll back: previous and champion are both version {current}."
            )
        # after the latest processed day (or audit event): days already run keep the champion they had
        processed = history.days(settings.name)
        stamp = max([e["logical_date"] for e in events] + ([processed[-1]["day"]] if processed else []))
        if day is not None:
            if day.isoformat() < stamp:
                raise ModelError(
                    f"{settings.name}: rollback date {day} is before the latest audit event ({stamp}); "
                    f"use {stamp} or later, so the timeline stays in logical-date order."
                )
            stamp = day.isoformat()
        # the registry is reached before the audit rows are written: unreachable, nothing is recorded
        try:
            restored = c.get_model_version(settings.registered_model, str(target))
        except MlflowException as exc:
            raise ModelError(
                f"{settings.name}: cannot roll back to version {target} of {settings.registered_model}: the MLflow "
                f"registry answered {exc.error_code}: {exc.message}. Nothing was recorded."
            ) from exc
        text = f"rollback: {reason}"
        who = {"actor": actor} if actor else {}
        with history.engine.begin() as conn:  # both audit rows or neither
            history.add_alias_event(
                conn,
                dataset=settings.name,
                model=settings.registered_model,
                alias=CHAMPION,
                logical_date=stamp,
                before_version=current,
                after_version=target,
                reason=text,
                dag_run_id=None,
                **who,
            )
            history.add_alias_event(
                conn,
                dataset=settings.name,
                model=settings.registered_model,
                alias=PREVIOUS,
                logical_date=stamp,
                before_version=target,
                after_version=current,
                reason=f"{text} (rolled back from version {current})",
                dag_run_id=None,
                **who,
            )
        try:
            _set_tags(
                c,
                settings,
                current,
                {ROLLED_BACK_TAGS[0]: "true", ROLLED_BACK_TAGS[1]: reason[:5000], ROLLED_BACK_TAGS[2]: stamp},
            )
            for key in ROLLED_BACK_TAGS:
                if key in restored.tags:
                    c.delete_model_version_tag(settings.registered_model, str(target), key)
            sync_aliases(settings, history, c)
        except Exception as exc:
            raise ModelError(
                f"{settings.name}: rollback {current} -> {target} is recorded in the audit log, but the MLflow "
                f"registry was not fully updated ({exc}). Do not roll back again (that would undo it); "
                f"`driftwatch repair` (or the next run) makes the MLflow aliases follow the audit log."
            ) from exc
    log.warning("%s: champion rolled back from version %s to %s (%s)", settings.name, current, target, reason)
    return {
        "rolled_back": current,
        "champion": target,
        "previous": current,
        "logical_date": stamp,
        "reason": text,
    }


def reject(
    settings: Settings, *, version: int, day: dt.date, evaluation: dict[str, Any], champion: int | None
) -> None:
    """Tag a rejected challenger with the reason and its metrics; the aliases are not touched."""
    c = client(settings)
    _set_tags(c, settings, version, evidence_tags(evaluation))
    c.update_model_version(
        settings.registered_model, str(version), description=_description(settings, day, evaluation, champion)
    )


def champion_alias(settings: Settings) -> int | None:
    """The version the MLflow `champion` alias points at now (None when there is none)."""
    return _alias_version(client(settings), settings, CHAMPION)
