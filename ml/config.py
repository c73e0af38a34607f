"""One frozen settings object per dataset: the dataset YAML, then environment overrides.

Environment:
    DRIFTWATCH_HOME          working directory for everything driftwatch writes (default: <repo>/var)
    DRIFTWATCH_LAKE          root of the data lake (default: $DRIFTWATCH_HOME/lake)
    DRIFTWATCH_DATASETS      folder of dataset YAML files (default: the bundled ml/datasets)
    DRIFTWATCH_DB_URL        SQLAlchemy URL of the history database (default: SQLite under home)
    MLFLOW_TRACKING_URI      MLflow tracking/registry URI (default: SQLite under home)
    DRIFTWATCH__A__B=value   overrides key a.b of every dataset YAML, e.g. DRIFTWATCH__THRESHOLDS__DRIFT_SHARE=0.3
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ml.exceptions import ConfigError
from ml.objective import TASKS, Objective
from ml.schema import (
    MONITOR_ACTIONS,
    NOVELTY_ACTIONS,
    TOP_LEVEL_KEYS,
    Alerts,
    AttributionMonitor,
    BiasMonitor,
    Drift,
    Estimation,
    Evaluation,
    Monitoring,
    Promotion,
    Reports,
    Retries,
    Serving,
    Thresholds,
    Training,
    Validation,
    Wait,
    apply_env_overrides,
    read_alerts,
    read_promotion,
    read_reports,
    read_wait,
    read_yaml,
    section,
)

# what a record captured by the model server carries beside the date column and the features (ml/capture.py)
CAPTURE_COLUMNS = ("inference_id", "captured_at", "served_score", "served_version")

REPO_ROOT = Path(__file__).resolve().parent.parent
BUNDLED_DATASETS = Path(__file__).resolve().parent / "datasets"


def home_dir() -> Path:
    return Path(os.environ.get("DRIFTWATCH_HOME") or REPO_ROOT / "var").resolve()


def datasets_dir() -> Path:
    return Path(os.environ.get("DRIFTWATCH_DATASETS") or BUNDLED_DATASETS).resolve()


@dataclass(frozen=True)
class Paths:
    home: Path
    lake: Path
    quarantine: Path
    reports: Path
    models: Path
    mlflow_artifacts: Path
    alerts: Path

    @classmethod
    def from_env(cls) -> Paths:
        home = home_dir()
        lake = Path(os.environ.get("DRIFTWATCH_LAKE") or home / "lake").resolve()
        return cls(
            home=home,
            lake=lake,
            quarantine=home / "quarantine",
            reports=home / "reports",
            models=home / "models",
            mlflow_artifacts=home / "mlflow" / "artifacts",
            alerts=home / "alerts.log",
        )


@dataclass(frozen=True)
class Settings:
    name: str
    description: str
    dag_id: str
    start_date: dt.date
    registered_model: str
    source: str | None
    date_column: str
    label: str
    positive: Any
    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    drop: tuple[str, ...]
    keys: tuple[str, ...]
    original_start: dt.date
    original_end: dt.date
    holdout_days: int
    training: Training
    thresholds: Thresholds
    validation: Validation
    wait: Wait
    drift_columns: Mapping[str, Mapping[str, Any]]  # per-column Evidently method/threshold overrides
    paths: Paths
    tracking_uri: str
    history_url: str
    yaml_path: Path
    evaluation: Evaluation = field(default_factory=Evaluation)
    # the `synthetic:` section of a generated stream (`source: synthetic`), checked by ml.datasets.synthetic
    synthetic: Mapping[str, Any] = field(default_factory=dict)
    # labels of day D are read from D + label_delay_days on (0: with the batch)
    label_delay_days: int = 0
    monitoring: Monitoring = field(default_factory=Monitoring)
    retries: Retries = field(default_factory=Retries)
    reports: Reports = field(default_factory=Reports)
    promotion: Promotion = field(default_factory=Promotion)
    alerts: Alerts = field(default_factory=Alerts)
    serving: Serving = field(default_factory=Serving)
    drift: Drift = field(default_factory=Drift)
    task: str = "binary"  # binary | multiclass | regression (ml/objective.py)
    classes: tuple[Any, ...] = ()  # multiclass: label.classes, in order

    @property
    def objective(self) -> Objective:
        """What the models of this dataset are judged on (metrics, primary metric, noise, bootstrap)."""
        return Objective(self.task, self.classes)

    def labels_known(self, day: dt.date, on: dt.date) -> bool:
        """True when the labels of `day` may be read by the run of `on`."""
        return (on - day).days >= self.label_delay_days

    @property
    def min_new_days(self) -> int:
        """Accepted days needed since the last training before a triggered retrain (default: holdout_days)."""
        given = self.thresholds.min_new_days
        return self.holdout_days if given is None else int(given)

    @property
    def features(self) -> list[str]:
        return [*self.numeric, *self.categorical]

    @property
    def columns(self) -> list[str]:
        """Every column a partition must have, in a stable order."""
        return [self.date_column, *self.features, self.label, *self.drop]

    @property
    def optional_columns(self) -> tuple[str, ...]:
        """Columns a partition may have beyond `columns`: a captured batch's inference ids, scores, versions."""
        return CAPTURE_COLUMNS if self.captured else ()

    @property
    def lake_dir(self) -> Path:
        return self.paths.lake / self.name

    def partition_dir(self, day: dt.date) -> Path:
        return self.lake_dir / f"date={day.isoformat()}"

    @property
    def captured(self) -> bool:
        """True when the daily batches are the model server's captured traffic (`source: capture`)."""
        return self.source == "capture"

    @property
    def capture_dir(self) -> Path:
        """Where the model server writes its captured requests (ml/capture.py)."""
        return self.lake_dir / "_capture"

    @property
    def labels_dir(self) -> Path:
        """Where ground truth arriving after the predictions is stored, keyed by inference id."""
        return self.lake_dir / "_labels"

    def quarantine_dir(self, day: dt.date) -> Path:
        return self.paths.quarantine / self.name / f"date={day.isoformat()}"

    def report_dir(self, day: dt.date) -> Path:
        return self.paths.reports / self.name / f"date={day.isoformat()}"

    def with_overrides(self, **changes: Any) -> Settings:
        """A copy with top-level fields replaced (e.g. thresholds for one manual run)."""
        from dataclasses import replace

        return replace(self, **changes)


def _date(value: Any, key: str) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError:
        raise ConfigError(f"{key}: expected a date YYYY-MM-DD. Got {value!r}.") from None


def _names(raw: Any, key: str, path: str) -> tuple[str, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw):
        raise ConfigError(f"{path}: {key}: expected a list of column names. Got {raw!r}.")
    return tuple(raw)


def _monitoring(raw: Mapping[str, Any], p: str, columns: set[str]) -> Monitoring:
    from dataclasses import replace

    given = raw.get("monitoring") or {}
    if not isinstance(given, Mapping):
        raise ConfigError(f"{p}: monitoring: expected a mapping. Got {type(given).__name__}.")
    parts = {"bias": BiasMonitor, "attribution": AttributionMonitor, "estimation": Estimation}
    unknown = sorted(set(given) - set(parts))
    if unknown:
        raise ConfigError(f"{p}: monitoring: unknown keys {unknown[:5]}. Allowed: {sorted(parts)}.")
    got = {
        k: section({f"monitoring.{k}": given.get(k)}, f"monitoring.{k}", cls, p) for k, cls in parts.items()
    }
    bias, attribution = got["bias"], got["attribution"]
    segments = _names(bias.segments or None, "monitoring.bias.segments", p)
    missing = [c for c in segments if c not in columns]
    if missing:
        raise ConfigError(f"{p}: monitoring.bias.segments: {missing[:5]} are not columns of the dataset.")
    bias = replace(bias, segments=segments)
    for key, value in (("bias.action", bias.action), ("attribution.action", attribution.action)):
        if value not in MONITOR_ACTIONS:
            raise ConfigError(
                f"{p}: monitoring.{key}: expected one of {' | '.join(MONITOR_ACTIONS)}. Got {value!r}."
            )
    if not 0 < bias.threshold < 1:
        raise ConfigError(
            f"{p}: monitoring.bias.threshold: expected a probability in (0, 1). Got {bias.threshold}."
        )
    if bias.min_rows < 1:
        raise ConfigError(f"{p}: monitoring.bias.min_rows: expected at least 1. Got {bias.min_rows}.")
    for key in ("max_positive_rate_gap_change", "max_accuracy_gap_change"):
        if getattr(bias, key) < 0:
            raise ConfigError(f"{p}: monitoring.bias.{key}: expected a share >= 0. Got {getattr(bias, key)}.")
    if not 0 < attribution.min_ndcg <= 1:
        raise ConfigError(
            f"{p}: monitoring.attribution.min_ndcg: expected a value in (0, 1]. Got {attribution.min_ndcg}."
        )
    if attribution.rows < 10 or attribution.repeats < 1 or attribution.top_k < 0:
        raise ConfigError(
            f"{p}: monitoring.attribution: expected rows >= 10, repeats >= 1 and top_k >= 0. "
            f"Got rows={attribution.rows}, repeats={attribution.repeats}, top_k={attribution.top_k}."
        )
    for name, part in (("bias", bias), ("attribution", attribution), ("estimation", got["estimation"])):
        for key in ("enabled", "use_for_decisions"):
            if hasattr(part, key) and not isinstance(getattr(part, key), bool):
                raise ConfigError(
                    f"{p}: monitoring.{name}.{key}: expected true or false. Got {getattr(part, key)!r}."
                )
    return Monitoring(bias=bias, attribution=attribution, estimation=got["estimation"])


# libyaml's loader when PyYAML was built with it: the pure-Python one takes ~25 ms per dataset file, and the
# DAG file reads every dataset file in every task process
def load_settings(dataset: str | Path, environ: Mapping[str, str] | None = None) -> Settings:
    """Load a dataset's settings.

    Args:
        dataset: a dataset name (looked up in DRIFTWATCH_DATASETS) or a path to its YAML file.
        environ: environment to read overrides from (default: os.environ).

    Raises:
        ConfigError: the file is missing or a value is invalid; the message names the key path.
    """
    environ = os.environ if environ is None else environ
    path = Path(dataset)
    if path.suffix not in (".yaml", ".yml"):
        path = datasets_dir() / f"{dataset}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in datasets_dir().glob("*.yaml"))
        raise ConfigError(f"dataset {str(dataset)!r}: no file {path}. Known datasets: {known}.")
    try:
        raw = read_yaml(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level.")
    raw = apply_env_overrides(raw, environ)
    p = str(path)
    unknown = sorted(set(raw) - TOP_LEVEL_KEYS)
    if unknown:
        raise ConfigError(f"{p}: unknown keys {unknown[:5]}. Allowed: {sorted(TOP_LEVEL_KEYS)}.")

    for key in ("name", "date_column", "label", "features", "original_window", "holdout_days"):
        if key not in raw:
            raise ConfigError(f"{p}: missing required key {key!r}.")
    label = raw["label"]
    if not isinstance(label, Mapping) or "column" not in label:
        raise ConfigError(f"{p}: label: expected a mapping with 'column' and 'positive'. Got {label!r}.")
    task = str(raw.get("task") or "binary")
    if task not in TASKS:
        raise ConfigError(f"{p}: task: expected one of {' | '.join(TASKS)}. Got {task!r}.")
    classes = label.get("classes")
    if task == "multiclass":
        if not isinstance(classes, list) or len(classes) < 3 or len(set(map(str, classes))) != len(classes):
            raise ConfigError(
                f"{p}: label.classes: a multiclass task needs its classes, 3 or more distinct values in the order "
                f"of the model's probabilities, e.g. [on_time, late, very_late]. Got {classes!r}."
            )
    elif classes is not None:
        raise ConfigError(f"{p}: label.classes: only for task: multiclass (this task is {task}).")
    if task != "binary" and "positive" in label:
        raise ConfigError(f"{p}: label.positive: only for task: binary (this task is {task}).")
    features = raw["features"]
    if not isinstance(features, Mapping):
        raise ConfigError(f"{p}: features: expected a mapping with 'numeric' and 'categorical'.")
    numeric = _names(features.get("numeric"), "features.numeric", p)
    categorical = _names(features.get("categorical"), "features.categorical", p)
    if not numeric and not categorical:
        raise ConfigError(f"{p}: features: at least one numeric or categorical feature is required.")
    both = sorted(set(numeric) & set(categorical))
    if both:
        raise ConfigError(f"{p}: features: {both} listed as both numeric and categorical.")
    window = raw["original_window"]
    if not isinstance(window, Mapping) or not {"start", "end"} <= set(window):
        raise ConfigError(f"{p}: original_window: expected {{start: DATE, end: DATE}}. Got {window!r}.")
    start = _date(window["start"], f"{p}: original_window.start")
    end = _date(window["end"], f"{p}: original_window.end")
    if end < start:
        raise ConfigError(f"{p}: original_window: end {end} is before start {start}.")
    try:
        holdout = int(raw["holdout_days"])
    except (TypeError, ValueError):
        raise ConfigError(f"{p}: holdout_days: expected an integer. Got {raw['holdout_days']!r}.") from None
    window_days = (end - start).days + 1
    if not 1 <= holdout < window_days:
        raise ConfigError(
            f"{p}: holdout_days: must be at least 1 and shorter than the original window "
            f"({window_days} days). Got {holdout}."
        )
    thresholds = section(raw, "thresholds", Thresholds, p)
    if not 0 < thresholds.drift_share <= 1:
        raise ConfigError(
            f"{p}: thresholds.drift_share: expected a share in (0, 1]. Got {thresholds.drift_share}."
        )
    if not 0 < thresholds.confidence < 1:
        raise ConfigError(
            f"{p}: thresholds.confidence: expected a value in (0, 1). Got {thresholds.confidence}."
        )
    given_days = thresholds.min_new_days
    if given_days is not None and (
        isinstance(given_days, bool) or not isinstance(given_days, int) or given_days < 0
    ):
        raise ConfigError(
            f"{p}: thresholds.min_new_days: expected a whole number of days >= 0 (or leave it out: "
            f"holdout_days). Got {given_days!r}."
        )
    if thresholds.min_new_rows < 0:
        raise ConfigError(f"{p}: thresholds.min_new_rows: expected rows >= 0. Got {thresholds.min_new_rows}.")
    drift = section(raw, "drift", Drift, p)
    if not isinstance(drift.calibrate, bool):
        raise ConfigError(f"{p}: drift.calibrate: expected true or false. Got {drift.calibrate!r}.")
    if not 0 < drift.false_alarm_rate < 0.5:
        raise ConfigError(
            f"{p}: drift.false_alarm_rate: expected a probability in (0, 0.5), e.g. 0.01 (one drift-free day "
            f"in 100 flagged). Got {drift.false_alarm_rate}."
        )
    if not isinstance(drift.columns, Mapping):
        raise ConfigError(f"{p}: drift.columns: expected a mapping of column: {{method, threshold}}.")
    training = section(raw, "training", Training, p)
    if training.window not in ("all", "last_n_days", "time_decay"):
        raise ConfigError(
            f"{p}: training.window: expected all | last_n_days | time_decay. Got {training.window!r}."
        )
    model = training.model
    if model != "hist_gradient_boosting" and (
        not isinstance(model, str)
        or not all(part.strip() for part in model.partition(":")[::2])
        or ":" not in model
    ):
        raise ConfigError(
            f"{p}: training.model: expected 'hist_gradient_boosting' or 'package.module:factory' (a function "
            f"returning a scikit-learn classifier or pipeline; see ml/estimators.py). Got {model!r}."
        )
    validation = section(raw, "validation", Validation, p)
    ranges = {}
    for col, bounds in (validation.ranges or {}).items():
        if not isinstance(bounds, list | tuple) or len(bounds) != 2:
            raise ConfigError(f"{p}: validation.ranges.{col}: expected [min, max]. Got {bounds!r}.")
        ranges[col] = (float(bounds[0]), float(bounds[1]))
    from dataclasses import replace

    validation = replace(validation, ranges=ranges)
    if validation.novelty not in NOVELTY_ACTIONS:
        raise ConfigError(
            f"{p}: validation.novelty: expected one of {' | '.join(NOVELTY_ACTIONS)}. Got {validation.novelty!r}."
        )
    evaluation = section(raw, "evaluation", Evaluation, p)
    segments = _names(evaluation.segments or None, "evaluation.segments", p)
    columns = {str(raw["date_column"]), *numeric, *categorical, *_names(raw.get("drop"), "drop", p)}
    unknown_segments = [c for c in segments if c not in columns]
    if unknown_segments:
        raise ConfigError(
            f"{p}: evaluation.segments: {unknown_segments[:5]} are not columns of the dataset. "
            f"Use features or drop columns, e.g. {sorted(categorical)[:5]}."
        )
    if evaluation.segment_tolerance < 0:
        raise ConfigError(
            f"{p}: evaluation.segment_tolerance: expected an AUC drop >= 0. Got {evaluation.segment_tolerance}."
        )
    if evaluation.min_segment_rows < 1:
        raise ConfigError(
            f"{p}: evaluation.min_segment_rows: expected at least 1. Got {evaluation.min_segment_rows}."
        )
    evaluation = replace(evaluation, segments=segments)
    synthetic = raw.get("synthetic") or {}
    if not isinstance(synthetic, Mapping):
        raise ConfigError(f"{p}: synthetic: expected a mapping. Got {type(synthetic).__name__}.")
    monitoring = _monitoring(raw, p, columns)
    try:
        label_delay = int(raw.get("label_delay_days") or 0)
    except (TypeError, ValueError):
        raise ConfigError(
            f"{p}: label_delay_days: expected a whole number of days >= 0. Got {raw['label_delay_days']!r}."
        ) from None
    if label_delay < 0:
        raise ConfigError(f"{p}: label_delay_days: expected a whole number of days >= 0. Got {label_delay}.")
    serving = section(raw, "serving", Serving, p)
    if not 0 <= serving.capture_percent <= 100:
        raise ConfigError(
            f"{p}: serving.capture_percent: expected a percentage in [0, 100]. Got {serving.capture_percent}."
        )
    for key in ("poll_seconds", "flush_seconds", "settle_seconds"):
        if getattr(serving, key) <= 0:
            raise ConfigError(f"{p}: serving.{key}: expected seconds > 0. Got {getattr(serving, key)}.")
    if task != "binary" and label_delay > 0:
        raise ConfigError(
            f"{p}: label_delay_days: labels arriving after the batch are supported for binary tasks only (the "
            f"delayed-label monitors estimate a binary classifier's quality); this task is {task}. Got {label_delay}."
        )
    if raw.get("source") == "capture" and label_delay < 1:
        raise ConfigError(
            f"{p}: label_delay_days: a dataset with `source: capture` is labelled after it is served: expected "
            f"the number of days its labels take to arrive (>= 1). Got {label_delay}."
        )
    if raw.get("source") == "capture" and serving.settle_seconds < 2 * serving.flush_seconds:
        raise ConfigError(
            f"{p}: serving.settle_seconds: expected at least twice serving.flush_seconds "
            f"({2 * serving.flush_seconds}), or a day could be read before its last buffer is written. "
            f"Got {serving.settle_seconds}."
        )
    name = str(raw["name"])
    home = home_dir()
    return Settings(
        name=name,
        description=str(raw.get("description", "")).strip(),
        dag_id=str(raw.get("dag_id") or f"retraining_pipeline__{name}"),
        start_date=_date(raw.get("start_date", start), f"{p}: start_date"),
        registered_model=str(raw.get("registered_model") or name),
        source=raw.get("source"),
        date_column=str(raw["date_column"]),
        label=str(label["column"]),
        positive=label.get("positive", 1),
        numeric=numeric,
        categorical=categorical,
        drop=_names(raw.get("drop"), "drop", p),
        keys=_names(raw.get("keys"), "keys", p),
        original_start=start,
        original_end=end,
        holdout_days=holdout,
        training=training,
        thresholds=thresholds,
        validation=validation,
        wait=read_wait(raw, p),
        retries=section(raw, "retries", Retries, p),
        reports=read_reports(raw, p),
        promotion=read_promotion(raw, p),
        alerts=read_alerts(raw, p),
        drift_columns=dict(drift.columns),
        drift=drift,
        paths=Paths.from_env(),
        tracking_uri=environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{home / 'mlflow' / 'mlflow.db'}",
        history_url=environ.get("DRIFTWATCH_DB_URL") or f"sqlite:///{home / 'driftwatch.db'}",
        yaml_path=path,
        evaluation=evaluation,
        synthetic=dict(synthetic),
        label_delay_days=label_delay,
        monitoring=monitoring,
        serving=serving,
        task=task,
        classes=tuple(classes or ()),
    )


def list_datasets() -> list[str]:
    return sorted(p.stem for p in datasets_dir().glob("*.yaml"))
