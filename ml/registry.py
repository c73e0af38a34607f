"""MLflow tracking and registry, the model side of the store: log and register challengers (crash-safe: a
retry finds what a killed try registered), load a version's model and artifacts through a local cache, log a
day's monitoring metrics. Moving the aliases is `ml.promotion`'s.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
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
SHADOW = "shadow"  # a challenger scoring live traffic beside the champion (promotion.mode: shadow)
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
    metrics: Mapping[str, float | None],
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
    from mlflow.data.pandas_dataset import from_pandas
    from mlflow.models import infer_signature

    from ml import faults
    from ml.data import model_frame
    from ml.train import custom_model, predictions

    _configure(settings)
    exp = experiment_id(settings, "training")
    X, _ = model_frame(settings, train)
    example = X.head(5)
    signature = infer_signature(example, predictions(model, settings, example))
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
        train_ds = from_pandas(
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
            # HistGradientBoosting pipeline we built ourselves contains, reviewed and trusted. A model of the
            # user's own (training.model: "package.module:factory") may hold any type: cloudpickle, loaded
            # only from this registry, by processes that can import the factory's module
            **(
                {"serialization_format": mlflow.sklearn.SERIALIZATION_FORMAT_CLOUDPICKLE}
                if custom_model(settings)
                else {"skops_trusted_types": SKOPS_TRUSTED_TYPES}
            ),
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
    """A version that will never serve says so: decision `failed`, the reason, a description."""
    c = client(settings)
    _set_tags(c, settings, version, {f"{TAG}decision": "failed", f"{TAG}reason": f"{day}: {message}"[:5000]})
    c.update_model_version(
        settings.registered_model,
        str(version),
        description=f"Failed on {day}: {message}. Never served.",
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
    target = folder(str(client(settings).get_model_version(settings.registered_model, str(version)).run_id))
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


def version_model(settings: Settings, history: History, version: int) -> Any:
    """A registered version's pipeline; the history knows the run that logged it, so a task finds the local
    copy without a registry call."""
    return load_model(
        settings, int(version), run_id=(history.get_model(settings.name, int(version)) or {}).get("run_id")
    )


def artifact(settings: Settings, history: History, version: int, name: str) -> pd.DataFrame:
    """A parquet file logged with a model version under `data/` (reference sample, holdout scores, reference
    scores), downloaded once into the version's local cache."""
    import mlflow
    import pandas as pd

    from ml.exceptions import ModelError

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


def monitoring_run(settings: Settings, history: History, day: dt.date, champion: int) -> str:
    """The day's run in the dataset's monitoring experiment: found by its logical-date tag (a re-run of the
    day reuses it), else created. monitor_model and detect_drift run at the same time and both log into
    it: the look-up and the creation happen under a lock, so a day never gets two runs."""
    c = client(settings)
    exp = experiment_id(settings, "monitoring")
    with history.lock(
        f"monitoring-run:{settings.name}:{day.isoformat()}", holder=f"monitoring-run:{day}", timeout_s=60
    ):
        found = c.search_runs(
            [exp], filter_string=f"tags.`{TAG}logical_date` = '{day.isoformat()}'", max_results=1
        )
        if found:
            return str(found[0].info.run_id)
        tags = {
            f"{TAG}logical_date": day.isoformat(),
            f"{TAG}dataset": settings.name,
            f"{TAG}champion_version": str(champion),
        }
        return str(c.create_run(exp, run_name=f"{settings.name}-{day}-monitoring", tags=tags).info.run_id)


def log_monitoring(
    settings: Settings,
    history: History,
    day: dt.date,
    champion: int,
    metrics: Mapping[str, Any],
    artifacts: Sequence[tuple[str, str | Path | None]],
) -> None:
    """One step's metrics (stamped with the logical date, one request) and artifacts [(folder, file)] in the
    day's monitoring run; the run reads as FINISHED whichever step ends last."""
    from mlflow.entities import Metric

    c = client(settings)
    run_id = monitoring_run(settings, history, day, champion)
    # MLflow refuses timestamps before 1970 ("must be a nonnegative long"): a day before then is stamped
    # 1970-01-01 (its run is found by the logical_date tag, not by this time)
    timestamp = max(0, int(dt.datetime.combine(day, dt.time(), dt.UTC).timestamp() * 1000))
    c.log_batch(
        run_id, metrics=[Metric(k, float(v), timestamp, 0) for k, v in metrics.items() if v is not None]
    )
    for folder, path in artifacts:
        if path and Path(path).is_file():
            c.log_artifact(run_id, str(path), artifact_path=folder)
    c.set_terminated(run_id, "FINISHED")
