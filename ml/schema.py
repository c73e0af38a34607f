"""The configuration schema, declared once: every section of a dataset YAML as a frozen dataclass whose
defaults are the defaults (the settings, the DAG file's catalog and the DAG's docs all read them), how a
section is read (types checked, unknown keys refused, naming the key path), and the environment overrides
(`DRIFTWATCH__SECTION__KEY=value`). Light to import: the DAG file reads it at parse time.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from ml.exceptions import ConfigError

ENV_PREFIX = "DRIFTWATCH__"
TOP_LEVEL_KEYS = frozenset(
    {
        "name",
        "description",
        "dag_id",
        "start_date",
        "registered_model",
        "source",
        "date_column",
        "label",
        "features",
        "drop",
        "keys",
        "original_window",
        "holdout_days",
        "training",
        "thresholds",
        "validation",
        "wait",
        "retries",
        "reports",
        "drift",
        "evaluation",
        "synthetic",
        "label_delay_days",
        "monitoring",
        "serving",
        "task",
        "promotion",
        "alerts",
    }
)
MONITOR_ACTIONS = ("record", "alert", "retrain")


@dataclass(frozen=True)
class Thresholds:
    drift_share: float = 0.5
    quality_drop: float = 0.05
    cooldown_days: int = 7
    min_new_rows: int = 0  # ... nor before this many new accepted, labelled rows (0: no row minimum)
    # ... nor before this many new accepted days since the last training (None: holdout_days, so the
    # challenger's holdout is all new data); days, not rows, so 60-row and 5,000-row batches both work
    min_new_days: int | None = None
    min_delta: float = 0.0
    logloss_tolerance: float = 0.01
    mae_tolerance: float = 0.02  # regression guardrail: the challenger's MAE may not grow by more (relative)
    min_bootstrap_auc: float = 0.55
    bootstrap_resamples: int = 1000
    confidence: float = 0.95


@dataclass(frozen=True)
class Training:
    window: str = "all"  # all | last_n_days | time_decay
    window_days: int = 90
    half_life_days: float = 60.0
    model: str = "hist_gradient_boosting"
    params: Mapping[str, Any] = field(default_factory=dict)
    seed: int = 42


@dataclass(frozen=True)
class Validation:
    min_rows: int = 1
    max_rows: int = 1_000_000
    min_non_null: Mapping[str, float] = field(default_factory=lambda: {"default": 0.95})
    range_tolerance: float = 0.25
    max_unseen_share: float = 0.05
    ranges: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    # values the champion never saw (outside its training range widened by range_tolerance, or unseen
    # categories beyond max_unseen_share) are plausible novelty, not bad data: record | alert | retrain
    # (recorded, and a drift signal for `decide`) or quarantine (treated like a broken rule)
    novelty: str = "alert"

    def non_null_floor(self, column: str) -> float:
        return float(self.min_non_null.get(column, self.min_non_null.get("default", 0.95)))


@dataclass(frozen=True)
class Drift:
    """How a feature's drift is judged (ml/drift.py, ml/calibration.py)."""

    # true: each feature without a threshold in `columns` gets one calibrated on the champion's own training
    # days, so that a drift-free day is flagged (drift share >= thresholds.drift_share) with probability at
    # most `false_alarm_rate`; and an AUC drop must also be beyond the day's sampling noise at that rate.
    # false: Evidently's default tests and thresholds (0.1), and thresholds.quality_drop alone.
    calibrate: bool = True
    false_alarm_rate: float = 0.01
    columns: Mapping[str, Any] = field(default_factory=dict)  # {column: {method, threshold}} as given


NOVELTY_ACTIONS = ("record", "alert", "retrain", "quarantine")


@dataclass(frozen=True)
class Evaluation:
    """Segment guardrail: no segment value may lose more than `segment_tolerance` AUC to the challenger."""

    segments: tuple[str, ...] = ()  # columns whose values are the segments, e.g. (origin, carrier)
    segment_tolerance: float = 0.02
    min_segment_rows: int = 200  # smaller segments (or single-class ones) are not checked: AUC too noisy


@dataclass(frozen=True)
class BiasMonitor:
    """Bias drift: disparity between segments (positive-prediction rate; accuracy once labels are known)
    compared with the champion's reference. Off when `segments` is empty."""

    segments: tuple[str, ...] = ()
    min_rows: int = 50  # smaller segment values are left out of a day's disparity (too noisy)
    threshold: float = 0.5  # a score at or above it is a positive prediction
    max_positive_rate_gap_change: float = 0.1  # violation: the gap grew by more than this vs the reference
    max_accuracy_gap_change: float = 0.1
    action: str = "record"  # record | alert | retrain


@dataclass(frozen=True)
class AttributionMonitor:
    """Feature-attribution drift: nDCG of the champion's feature ranking on the day vs on its reference."""

    enabled: bool = True
    rows: int = 2000  # rows sampled (seeded) from each side
    repeats: int = 3  # permutations per feature
    min_ndcg: float = 0.9  # Model Monitor's limit
    top_k: int = 0  # features compared (0: all)
    action: str = "record"  # record | alert | retrain


@dataclass(frozen=True)
class Estimation:
    """Performance without labels: CBPE from the champion's calibrated probabilities."""

    enabled: bool = True
    use_for_decisions: bool = False  # with label_delay_days > 0 the AUC-drop trigger uses the estimate


@dataclass(frozen=True)
class Monitoring:
    bias: BiasMonitor = field(default_factory=BiasMonitor)
    attribution: AttributionMonitor = field(default_factory=AttributionMonitor)
    estimation: Estimation = field(default_factory=Estimation)


@dataclass(frozen=True)
class Wait:
    timeout_minutes: float = 60.0  # for the day's batch to arrive in the lake
    poke_seconds: float = 30.0
    # for earlier runs of the dataset to finish (a backfill ahead of a manual run): days are processed in order
    earlier_days_timeout_minutes: float = 720.0
    # an Airflow Deadline Alert: a "late" alert when a run is not done this many hours after its logical day
    # ended and the day's batch is not in the lake (None: off); a backfill never alerts late
    late_after_hours: float | None = None


@dataclass(frozen=True)
class Serving:
    """The model server (`driftwatch serve`) and its data capture (ml/capture.py)."""

    alias: str = "champion"  # the registry alias served; the server follows it without a restart
    poll_seconds: float = 2.0  # how often the server asks the registry where the alias points
    capture_percent: float = (
        100.0  # share of requests captured (by inference id, so a retry is captured alike)
    )
    flush_seconds: float = (
        5.0  # buffered captures are written as one file per interval (kill -9 loses <= one)
    )
    # a captured day is complete once the wall clock is past it and no capture file of it is newer than this
    settle_seconds: float = 30.0
    max_body_bytes: int = 5_000_000  # larger requests get 413
    max_rows: int = 10_000  # rows per request
    # the dataset whose lake partitions `driftwatch traffic` sends as requests (default: this dataset's own)
    traffic_from: str | None = None


@dataclass(frozen=True)
class Promotion:
    """How a challenger that passed the offline gate becomes the champion, and how a new one is watched.

    `approval: manual` puts the `approve_challenger` task (Airflow's HITL ApprovalOperator) before the alias
    moves: a person approves or rejects on the Required Actions page, seeing the evidence; no answer within
    `approval_timeout_hours` rejects. Backfills and in-process runs (replay, run-day) are approved
    automatically, and the day's row says so (`approval`).

    `mode: direct` moves `champion` at once. `mode: shadow` (ml/shadow.py) gives it the alias `shadow`: it
    scores the same rows as the champion (the model server scores every request with it too, unanswered,
    captured beside) until `min_shadow_rows` labelled rows or `shadow_days` days are in; then the paired
    bootstrap of its gain on those live rows decides as the offline gate does (lower bound above
    `thresholds.min_delta`): promoted, or rejected. No other challenger trains meanwhile.

    After a promotion (ml/tasks/watch_champion.py, ml/watch.py): for `watch_days` the champion it replaced
    keeps scoring each batch in shadow; the new one is rolled back (audited, alerted) when it does worse on
    the same labelled rows: early, when the paired-bootstrap CI of its gain (`thresholds.confidence`) lies
    below 0 on at least `watch_min_rows` rows; at the end, when its mean daily primary metric over the
    window is worse than the old one's by more than `watch_tolerance`. `watch_days: 0` turns it off."""

    mode: str = "direct"
    approval: str = "auto"
    approval_timeout_hours: float = 24.0
    shadow_days: int = 7
    min_shadow_rows: int = 5000
    watch_days: int = 7
    watch_min_rows: int = 1000
    watch_tolerance: float = 0.0


@dataclass(frozen=True)
class Alerts:
    """Where this dataset's alerts go (ml/alerts.py): file:///path, http(s)://webhook, mailto:a@b.c, or
    apprise:CONN_ID (an Airflow connection of type apprise: Slack, Teams, ntfy, e-mail... through Airflow's
    Apprise provider). None: the environment's DRIFTWATCH_ALERT_TARGET, else <home>/alerts.log."""

    target: str | None = None


@dataclass(frozen=True)
class Retries:
    """Airflow retries of each task (a killed or failed try is retried once by default; every step is safe to
    retry: see ml/faults.py)."""

    count: int = 1
    delay_seconds: float = 20.0


@dataclass(frozen=True)
class Reports:
    """What the daily report store keeps (ml/drift_report.py)."""

    # a day's full Evidently drift report (~5 MB) is rendered when someone opens it or the day triggers a
    # retrain; rendered reports of days older than this are deleted by the drift step (0: kept for ever).
    # The day's drift.json stays, and a deleted report is rendered again when opened.
    keep_rendered_days: int = 30


def section(raw: Mapping[str, Any], key: str, cls: type, path: str) -> Any:
    value = raw.get(key) or {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{path}: {key}: expected a mapping. Got {type(value).__name__}.")
    fields = dataclasses.fields(cls)
    known = {f.name for f in fields}
    unknown = sorted(set(value) - known)
    if unknown:
        raise ConfigError(f"{path}: {key}: unknown keys {unknown[:5]}. Allowed: {sorted(known)}.")
    kwargs: dict[str, Any] = {}
    for spec in fields:
        name = spec.name
        if name not in value:
            continue
        v = value[name]
        default = spec.default
        if isinstance(default, bool) or default is None or isinstance(default, Mapping):
            kwargs[name] = v
        elif isinstance(default, int) and not isinstance(default, bool):
            try:
                kwargs[name] = int(v)
            except (TypeError, ValueError):
                raise ConfigError(f"{path}: {key}.{name}: expected an integer. Got {v!r}.") from None
        elif isinstance(default, float):
            try:
                kwargs[name] = float(v)
            except (TypeError, ValueError):
                raise ConfigError(f"{path}: {key}.{name}: expected a number. Got {v!r}.") from None
        else:
            kwargs[name] = v
    return cls(**kwargs)


def read_reports(raw: Mapping[str, Any], p: str) -> Reports:
    reports: Reports = section(raw, "reports", Reports, p)
    if reports.keep_rendered_days < 0:
        raise ConfigError(
            f"{p}: reports.keep_rendered_days: expected 0 (keep for ever) or a number of days. "
            f"Got {reports.keep_rendered_days}."
        )
    return reports


def read_promotion(raw: Mapping[str, Any], p: str) -> Promotion:
    promotion: Promotion = section(raw, "promotion", Promotion, p)
    if promotion.watch_days < 0 or promotion.watch_min_rows < 1 or promotion.watch_tolerance < 0:
        raise ConfigError(
            f"{p}: promotion: expected watch_days >= 0 (0: no watch), watch_min_rows >= 1 and "
            f"watch_tolerance >= 0. Got {promotion.watch_days}, {promotion.watch_min_rows} and "
            f"{promotion.watch_tolerance}."
        )
    if promotion.approval not in ("auto", "manual") or promotion.approval_timeout_hours <= 0:
        raise ConfigError(
            f"{p}: promotion: expected approval auto or manual and approval_timeout_hours > 0. Got "
            f"{promotion.approval!r} and {promotion.approval_timeout_hours}."
        )
    if promotion.mode not in ("direct", "shadow"):
        raise ConfigError(f"{p}: promotion.mode: expected direct or shadow. Got {promotion.mode!r}.")
    if promotion.shadow_days < 1 or promotion.min_shadow_rows < 1:
        raise ConfigError(
            f"{p}: promotion: expected shadow_days >= 1 and min_shadow_rows >= 1. Got "
            f"{promotion.shadow_days} and {promotion.min_shadow_rows}."
        )
    return promotion


def read_alerts(raw: Mapping[str, Any], p: str) -> Alerts:
    alerts: Alerts = section(raw, "alerts", Alerts, p)
    if alerts.target is not None:
        from ml.alerts import parse_target

        parse_target(str(alerts.target), f"{p}: alerts.target")
    return alerts


def read_wait(raw: Mapping[str, Any], p: str) -> Wait:
    wait: Wait = section(raw, "wait", Wait, p)
    late = wait.late_after_hours
    if late is not None and (isinstance(late, bool) or not isinstance(late, (int, float)) or late < 0):
        raise ConfigError(
            f"{p}: wait.late_after_hours: expected a number of hours >= 0, or null. Got {late!r}."
        )
    return wait


def apply_env_overrides(raw: dict[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    for var, value in environ.items():
        if not var.startswith(ENV_PREFIX):
            continue
        parts = [p.lower() for p in var[len(ENV_PREFIX) :].split("__") if p]
        node = raw
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{var}: {'.'.join(parts)} does not name a mapping key.")
        node[parts[-1]] = yaml.safe_load(value)
    return raw


_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def read_yaml(text: str) -> Any:
    """yaml.safe_load with libyaml when available (same results: both resolve the YAML 1.1 safe tags)."""
    return yaml.load(text, Loader=_YAML_LOADER)  # noqa: S506 - a SafeLoader
