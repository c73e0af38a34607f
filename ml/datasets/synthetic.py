"""Adapter: a synthetic labelled stream with drift of a known kind and onset -> daily parquet partitions.

Configured by the dataset YAML like any other dataset (`source: synthetic` and a `synthetic:` section), so
a stream can be added with a YAML file and `driftwatch prepare <name>` alone:

    synthetic:
      start: 2024-01-01          # first day of the stream (the original window should start here)
      days: 120                  # number of daily partitions
      rows_per_day: 1000
      seed: 7
      day_effect: 0.0            # rows of a day alike (one day's weather): each numeric feature's mean moves
                                 # by a daily draw of this many standard deviations (0: independent rows)
      features:                  # numeric: normal {mean, std} or uniform {low, high}; categorical {values, p}
        x1: {dist: normal, mean: 0, std: 1}
        x5: {dist: uniform, low: 0, high: 10}
        segment: {dist: categorical, values: [a, b, c], p: [0.5, 0.3, 0.2]}
      label:                     # P(label = 1) = sigmoid(intercept + sum(coef * x) + effects[segment])
        intercept: -1.0
        coef: {x1: 1.2, x5: 0.15}
        effects: {segment: {a: 0.0, b: 0.5, c: -0.5}}
      drift:
        kind: covariate          # none | covariate (features move, the label rule stays) | concept (the reverse)
        speed: abrupt            # abrupt | gradual (linear over ramp_days from the onset)
        onset: 2024-02-15
        ramp_days: 20
        shift: {x1: 1.5}         # covariate: added to a numeric feature at full drift
        probs: {segment: [0.2, 0.3, 0.5]}   # covariate: a categorical feature's probabilities at full drift
        coef: {x1: -1.2}         # concept: label coefficients at full drift (the others keep their value)

Every day is generated from its own seed (`seed` and the day's index), so a partition does not depend on
which other days were generated, and the same YAML always gives the same bytes of data.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ml.config import Settings
from ml.data import write_partition_file
from ml.exceptions import ConfigError

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

DISTRIBUTIONS = ("normal", "uniform", "categorical")
KINDS = ("none", "covariate", "concept")
SPEEDS = ("abrupt", "gradual")
ROW_ID = "row_id"  # optional identifier column: listed under `drop` (and `keys`) when the YAML wants it


@dataclass(frozen=True)
class Feature:
    name: str
    dist: str
    params: Mapping[str, Any]


@dataclass(frozen=True)
class Drift:
    kind: str = "none"
    speed: str = "abrupt"
    onset: dt.date | None = None
    ramp_days: int = 1
    shift: Mapping[str, float] = field(default_factory=dict)
    probs: Mapping[str, tuple[float, ...]] = field(default_factory=dict)
    coef: Mapping[str, float] = field(default_factory=dict)
    intercept: float | None = None


@dataclass(frozen=True)
class Stream:
    start: dt.date
    days: int
    rows_per_day: int
    seed: int
    features: tuple[Feature, ...]
    intercept: float
    coef: Mapping[str, float]
    effects: Mapping[str, Mapping[str, float]]
    drift: Drift
    day_effect: float = 0.0

    @property
    def end(self) -> dt.date:
        return self.start + dt.timedelta(days=self.days - 1)

    def feature(self, name: str) -> Feature:
        return next(f for f in self.features if f.name == name)


@dataclass(frozen=True)
class PrepareSummary:
    days_written: int
    days_skipped: int
    rows_out: int
    lake: Path


def _mapping(value: Any, key: str, path: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{path}: {key}: expected a mapping. Got {value!r}.")
    return value


def _number(value: Any, key: str, path: str) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{path}: {key}: expected a number. Got {value!r}.") from None
    if not math.isfinite(out):
        raise ConfigError(f"{path}: {key}: expected a finite number. Got {value!r}.")
    return out


def _probabilities(value: Any, n: int, key: str, path: str) -> tuple[float, ...]:
    if not isinstance(value, list | tuple) or len(value) != n:
        raise ConfigError(f"{path}: {key}: expected {n} probabilities, one per value. Got {value!r}.")
    p = tuple(_number(x, key, path) for x in value)
    if any(x < 0 for x in p) or abs(sum(p) - 1) > 1e-6:
        raise ConfigError(
            f"{path}: {key}: probabilities must be >= 0 and sum to 1. Got {list(p)} (sum {sum(p):g})."
        )
    return p


def _feature(name: str, raw: Any, path: str) -> Feature:
    key = f"synthetic.features.{name}"
    raw = _mapping(raw, key, path)
    dist = raw.get("dist")
    if dist not in DISTRIBUTIONS:
        raise ConfigError(f"{path}: {key}.dist: expected one of {list(DISTRIBUTIONS)}. Got {dist!r}.")
    if dist == "normal":
        params: dict[str, Any] = {
            "mean": _number(raw.get("mean", 0), f"{key}.mean", path),
            "std": _number(raw.get("std", 1), f"{key}.std", path),
        }
        if params["std"] <= 0:
            raise ConfigError(f"{path}: {key}.std: expected a positive number. Got {params['std']}.")
    elif dist == "uniform":
        params = {
            "low": _number(raw.get("low", 0), f"{key}.low", path),
            "high": _number(raw.get("high", 1), f"{key}.high", path),
        }
        if params["high"] <= params["low"]:
            raise ConfigError(
                f"{path}: {key}: high must be above low. Got {params['low']}..{params['high']}."
            )
    else:
        values = raw.get("values")
        if not isinstance(values, list) or len(values) < 2:
            raise ConfigError(
                f"{path}: {key}.values: expected a list of at least 2 categories. Got {values!r}."
            )
        values = [str(v) for v in values]
        p = raw.get("p")
        probs = (
            _probabilities(p, len(values), f"{key}.p", path)
            if p is not None
            else (1 / len(values),) * len(values)
        )
        params = {"values": tuple(values), "p": probs}
    return Feature(name=name, dist=str(dist), params=params)


def stream_spec(settings: Settings) -> Stream:
    """The validated `synthetic:` section of a dataset.

    Raises:
        ConfigError: a key is missing or invalid, or the features do not match the YAML's `features`;
            the message names the key path.
    """
    path = str(settings.yaml_path)
    raw = _mapping(settings.synthetic, "synthetic", path)
    if not raw:
        raise ConfigError(f"{path}: source is 'synthetic' but there is no synthetic: section.")
    known = {"start", "days", "rows_per_day", "seed", "features", "label", "drift", "day_effect"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"{path}: synthetic: unknown keys {unknown[:5]}. Allowed: {sorted(known)}.")
    from ml.config import _date

    start = _date(raw.get("start", settings.original_start), f"{path}: synthetic.start")
    days = int(_number(raw.get("days", 120), "synthetic.days", path))
    rows = int(_number(raw.get("rows_per_day", 1000), "synthetic.rows_per_day", path))
    day_effect = _number(raw.get("day_effect", 0.0), "synthetic.day_effect", path)
    if day_effect < 0:
        raise ConfigError(
            f"{path}: synthetic.day_effect: expected standard deviations >= 0. Got {day_effect}."
        )
    if days < 1 or rows < 1:
        raise ConfigError(
            f"{path}: synthetic.days and synthetic.rows_per_day must be at least 1. Got {days}, {rows}."
        )
    features = tuple(
        _feature(n, v, path) for n, v in _mapping(raw.get("features"), "synthetic.features", path).items()
    )
    names = {f.name for f in features}
    declared = set(settings.features)
    if names != declared:
        raise ConfigError(
            f"{path}: synthetic.features {sorted(names)} must be the YAML's features {sorted(declared)} "
            f"(missing: {sorted(declared - names)[:5]}, extra: {sorted(names - declared)[:5]})."
        )
    for f in features:
        if (f.dist == "categorical") != (f.name in settings.categorical):
            raise ConfigError(
                f"{path}: synthetic.features.{f.name}: a {f.dist} feature must be listed under features."
                f"{'categorical' if f.dist == 'categorical' else 'numeric'}."
            )
    numeric = {f.name for f in features if f.dist != "categorical"}
    categorical = {f.name: f for f in features if f.dist == "categorical"}

    label = _mapping(raw.get("label"), "synthetic.label", path)
    coef = {
        k: _number(v, f"synthetic.label.coef.{k}", path)
        for k, v in _mapping(label.get("coef"), "synthetic.label.coef", path).items()
    }
    bad = sorted(set(coef) - numeric)
    if bad:
        raise ConfigError(
            f"{path}: synthetic.label.coef: {bad[:5]} are not numeric features. Numeric: {sorted(numeric)}."
        )
    effects: dict[str, dict[str, float]] = {}
    for col, table in _mapping(label.get("effects"), "synthetic.label.effects", path).items():
        if col not in categorical:
            raise ConfigError(
                f"{path}: synthetic.label.effects.{col}: not a categorical feature. Categorical: {sorted(categorical)}."
            )
        table = _mapping(table, f"synthetic.label.effects.{col}", path)
        unknown_values = sorted(set(map(str, table)) - set(categorical[col].params["values"]))
        if unknown_values:
            raise ConfigError(
                f"{path}: synthetic.label.effects.{col}: unknown categories {unknown_values[:5]}."
            )
        effects[col] = {
            str(k): _number(v, f"synthetic.label.effects.{col}.{k}", path) for k, v in table.items()
        }

    d = _mapping(raw.get("drift"), "synthetic.drift", path)
    unknown = sorted(set(d) - {"kind", "speed", "onset", "ramp_days", "shift", "probs", "coef", "intercept"})
    if unknown:
        raise ConfigError(f"{path}: synthetic.drift: unknown keys {unknown[:5]}.")
    kind = d.get("kind", "none")
    if kind not in KINDS:
        raise ConfigError(f"{path}: synthetic.drift.kind: expected one of {list(KINDS)}. Got {kind!r}.")
    speed = d.get("speed", "abrupt")
    if speed not in SPEEDS:
        raise ConfigError(f"{path}: synthetic.drift.speed: expected one of {list(SPEEDS)}. Got {speed!r}.")
    onset = None
    if kind != "none":
        if "onset" not in d:
            raise ConfigError(
                f"{path}: synthetic.drift.onset: required for drift kind {kind!r} (a date YYYY-MM-DD)."
            )
        onset = _date(d["onset"], f"{path}: synthetic.drift.onset")
        if not start < onset <= start + dt.timedelta(days=days - 1):
            raise ConfigError(
                f"{path}: synthetic.drift.onset: {onset} is outside the stream {start}..{start + dt.timedelta(days=days - 1)}."
            )
    ramp = int(_number(d.get("ramp_days", 1), "synthetic.drift.ramp_days", path))
    if ramp < 1:
        raise ConfigError(f"{path}: synthetic.drift.ramp_days: expected at least 1. Got {ramp}.")
    shift = {
        k: _number(v, f"synthetic.drift.shift.{k}", path)
        for k, v in _mapping(d.get("shift"), "synthetic.drift.shift", path).items()
    }
    bad = sorted(set(shift) - numeric)
    if bad:
        raise ConfigError(
            f"{path}: synthetic.drift.shift: {bad[:5]} are not numeric features. Numeric: {sorted(numeric)}."
        )
    probs = {}
    for col, p in _mapping(d.get("probs"), "synthetic.drift.probs", path).items():
        if col not in categorical:
            raise ConfigError(
                f"{path}: synthetic.drift.probs.{col}: not a categorical feature. Categorical: {sorted(categorical)}."
            )
        probs[col] = _probabilities(
            p, len(categorical[col].params["values"]), f"synthetic.drift.probs.{col}", path
        )
    new_coef = {
        k: _number(v, f"synthetic.drift.coef.{k}", path)
        for k, v in _mapping(d.get("coef"), "synthetic.drift.coef", path).items()
    }
    bad = sorted(set(new_coef) - numeric)
    if bad:
        raise ConfigError(
            f"{path}: synthetic.drift.coef: {bad[:5]} are not numeric features. Numeric: {sorted(numeric)}."
        )
    intercept = d.get("intercept")
    drift = Drift(
        kind=kind,
        speed=speed,
        onset=onset,
        ramp_days=ramp,
        shift=shift,
        probs=probs,
        coef=new_coef,
        intercept=None if intercept is None else _number(intercept, "synthetic.drift.intercept", path),
    )
    if kind == "covariate" and not (shift or probs):
        raise ConfigError(
            f"{path}: synthetic.drift: a covariate drift needs shift (numeric) or probs (categorical)."
        )
    if kind == "concept" and not (new_coef or drift.intercept is not None):
        raise ConfigError(
            f"{path}: synthetic.drift: a concept drift needs coef or intercept (the label rule after it)."
        )
    return Stream(
        start=start,
        days=days,
        rows_per_day=rows,
        day_effect=day_effect,
        seed=int(_number(raw.get("seed", 0), "synthetic.seed", path)),
        features=features,
        intercept=_number(label.get("intercept", 0), "synthetic.label.intercept", path),
        coef=coef,
        effects=effects,
        drift=drift,
    )


def drift_weight(stream: Stream, day: dt.date) -> float:
    """How far the drift has gone on `day`: 0 before the onset, 1 at full drift (abrupt: from the onset;
    gradual: linearly over `ramp_days`, reaching 1 on the onset + ramp_days - 1)."""
    d = stream.drift
    if d.kind == "none" or d.onset is None or day < d.onset:
        return 0.0
    if d.speed == "abrupt" or d.ramp_days <= 1:
        return 1.0
    return min(1.0, ((day - d.onset).days + 1) / d.ramp_days)


def generate_day(settings: Settings, stream: Stream, day: dt.date) -> pd.DataFrame:
    """The partition of one day: the YAML's columns, `rows_per_day` rows, seeded by the day's index."""
    import numpy as np
    import pandas as pd

    index = (day - stream.start).days
    if not 0 <= index < stream.days:
        raise ValueError(f"{settings.name}: {day} is outside the stream {stream.start}..{stream.end}.")
    rng = np.random.default_rng([stream.seed, index])
    w = drift_weight(stream, day)
    covariate = stream.drift.kind == "covariate"
    n = stream.rows_per_day
    data: dict[str, Any] = {}
    for f in stream.features:
        p = f.params
        if f.dist == "normal":
            values = rng.normal(p["mean"], p["std"], n)
        elif f.dist == "uniform":
            values = rng.uniform(p["low"], p["high"], n)
        else:
            probs = np.asarray(p["p"])
            if covariate and f.name in stream.drift.probs:
                probs = (1 - w) * probs + w * np.asarray(stream.drift.probs[f.name])
            values = rng.choice(np.asarray(p["values"], dtype=object), size=n, p=probs / probs.sum())
        if f.dist != "categorical" and covariate:
            values = values + w * stream.drift.shift.get(f.name, 0.0)
        if f.dist != "categorical" and stream.day_effect:
            # its own generator: the rows of a stream without a day effect stay byte for byte the same
            spread = p["std"] if f.dist == "normal" else (p["high"] - p["low"]) / math.sqrt(12)
            effect = np.random.default_rng([stream.seed, index, 1 + stream.features.index(f)])
            values = values + effect.normal(0.0, stream.day_effect * spread)
        data[f.name] = values
    concept = stream.drift.kind == "concept"
    intercept = stream.intercept
    if concept and stream.drift.intercept is not None:
        intercept = (1 - w) * intercept + w * stream.drift.intercept
    logit = np.full(n, intercept)
    for name in {*stream.coef, *(stream.drift.coef if concept else {})}:
        base = stream.coef.get(name, 0.0)
        coef = (1 - w) * base + w * stream.drift.coef.get(name, base) if concept else base
        logit += coef * data[name]
    for col, table in stream.effects.items():
        logit += np.array([table.get(v, 0.0) for v in data[col]])
    label = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype("int64")
    frame = pd.DataFrame(data)
    frame[settings.label] = np.where(label == 1, settings.positive, _negative(settings.positive))
    frame[settings.date_column] = day.isoformat()
    frame[ROW_ID] = np.arange(n, dtype="int64")
    missing = [c for c in settings.columns if c not in frame.columns]
    if missing:
        raise ConfigError(
            f"{settings.yaml_path}: columns {missing[:5]} are not produced by the synthetic adapter "
            f"(it writes the features, the label, the date column and {ROW_ID!r})."
        )
    return frame[settings.columns]


def _negative(positive: Any) -> Any:
    if isinstance(positive, bool):
        return not positive
    if isinstance(positive, int | float):
        return 0 if positive != 0 else 1
    return f"not_{positive}"


def prepare(settings: Settings, *, force: bool = False, progress: bool = True) -> PrepareSummary:
    """Write one partition per day of the stream under the dataset's lake folder. Idempotent: existing days
    are kept unless `force`; each day is written to a temporary file and renamed."""
    from tqdm import tqdm

    stream = stream_spec(settings)
    written = skipped = rows = 0
    days = [stream.start + dt.timedelta(days=i) for i in range(stream.days)]
    for day in tqdm(days, desc=f"prepare {settings.name}", disable=not progress):
        partition = settings.partition_dir(day)
        target = partition / "part-0.parquet"
        if target.exists() and not force:
            skipped += 1
            continue
        frame = generate_day(settings, stream, day)
        write_partition_file(frame, target, settings.date_column)
        written += 1
        rows += len(frame)
    summary = PrepareSummary(
        days_written=written, days_skipped=skipped, rows_out=rows, lake=settings.lake_dir
    )
    log.info("prepared %s: %s", settings.name, summary)
    return summary
