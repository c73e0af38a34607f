"""Drift thresholds calibrated on the champion's own training data, so a drift-free day is flagged with a
probability you choose (`drift.false_alarm_rate`), whatever the batch size. Pure: frames in, thresholds out.

Why: Evidently's default thresholds (0.1 for the normed Wasserstein distance and the Jensen-Shannon distance)
ignore how many rows a batch has. A 60-row day differs from a months-long reference by more than 0.1 from
sampling alone, so every small batch "drifts"; a day of weather at three airports differs by more than 0.1 on
most days although nothing changed. What a drift-free day looks like is in the reference itself: its days.

How, per feature (and the prediction column):
  1. null samples: each of up to `MAX_DAYS` reference days (seeded choice) compared with the reference
     without that day, by the column's method, with Evidently's own stat test (the one the report runs). The
     days are real batches: their size and their within-day likeness (one day's weather) are the stream's.
     With fewer than `MIN_DAYS` days (or no dates), random batch-sized samples of the reference instead.
  2. threshold: the upper prediction bound of the next null score at level 1 - a, from a normal fit (Student
     t, so few days give a wider bound) after a Box-Cox transform fitted to the null scores (distances are
     skewed: a day's weather near the reference's mean scores near 0, a stormy day high), and never below
     the largest null score. On skewed test distributions (half-normal, chi, gamma, log-normal; 10 to 60
     samples) the bound is crossed at 1 to 3 times the intended rate.
  3. a, the per-column rate: a day is flagged when at least drift_share of its features drift, and that may
     happen on at most false_alarm_rate / 2 of drift-free days (the AUC-drop trigger, ml/policy.py, has
     the other half). How often features cross together depends on how they move together: the null
     samples, in the fit's standard units, give their correlation, and 20,000 simulated days (a Gaussian
     copula) give the largest a that keeps the flag rate under target. Weather columns that move as one
     get about the target itself; independent columns much more. Never below Markov's bound
     a = false_alarm_rate / 2 * drift_share (P(share >= s) <= E[share] / s), which holds whatever the
     dependence.

Only distance methods ("larger is more drift") are calibrated; a feature with a threshold in the YAML's
`drift.columns` keeps it, and one given a p-value method without a threshold keeps Evidently's default.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ml.exceptions import ConfigError

if TYPE_CHECKING:
    import pandas as pd

    from ml.config import Settings

OVERRIDE_KEYS = ("method", "threshold")  # what drift.columns may say about a column

DISTANCE_METHODS = ("wasserstein", "jensenshannon", "hellinger", "kl_div", "psi", "ed")
MAX_DAYS = 60  # reference days used as null samples (a seeded choice above this)
MIN_DAYS = 8  # fewer reference days: random batch-sized samples instead
RANDOM_SAMPLES = 60
SIMULATED_DAYS = 20_000  # drift-free days drawn to find the per-column rate (common_rate)
SCORE_FLOOR = 1e-6  # scores at 0 (an identical day) before the log
VERSION = 4  # bump when the calculation changes: cached calibrations are recomputed


def column_rate(false_alarm_rate: float, drift_share: float) -> float:
    """The per-feature false-alarm rate that keeps a day's flag rate (share >= drift_share) under half of
    `false_alarm_rate` (Markov's inequality; no independence assumed)."""
    return false_alarm_rate / 2 * drift_share


def default_method(values: pd.Series, categorical: bool) -> str:
    """Evidently's own choice for a reference above 1,000 rows: the normed Wasserstein distance for a numeric
    column with more than 5 values, else the Jensen-Shannon distance (a distance at any reference size,
    unlike the p-value tests Evidently picks for small references)."""
    if categorical or values.dropna().nunique() <= 5:
        return "jensenshannon"
    return "wasserstein"


def calibrate(
    reference: pd.DataFrame,
    *,
    numeric: Sequence[str],
    categorical: Sequence[str],
    days: pd.Series | None,
    methods: Mapping[str, str],
    false_alarm_rate: float,
    drift_share: float,
    batches: Mapping[str, pd.DataFrame] | None = None,
    batch_rows: int | None = None,
    seed: int = 0,
    outside_share: Sequence[str] = (),
) -> dict[str, Any]:
    """Per-column {method, threshold} for the columns in `numeric` + `categorical`.

    Args:
        reference: the frame the drift step compares with (its model columns, ml.drift._model_columns).
        numeric, categorical: the columns to calibrate, by type (the prediction column is numeric).
        days: the reference rows' day (row-aligned), or None: then random samples are used.
        methods: a column's method when not its default (`drift.columns`); non-distance ones are skipped.
        false_alarm_rate: the chance a drift-free day is flagged, shared with the AUC-drop trigger.
        drift_share: the share of drifted features that flags a day.
        batches: {day: full batch} for reference days whose rows the reference holds only a sample of (a
            reference sampled from a long window): those days are compared whole.
        batch_rows: the size of a random sample when the days cannot be used (default: the median rows of
            a reference day, or a twentieth of the reference without days).
        seed: for the choice of days and the random samples.
        outside_share: calibrated columns that do not count in the drift share (the prediction column): they
            get the same per-column rate.

    Returns:
        {"version", "false_alarm_rate", "column_rate", "markov_rate", "correlation", "samples": str,
        "columns": {column: {method, threshold, null: {n, median, max}}}, "skipped": {column: why}}.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    rate = column_rate(false_alarm_rate, drift_share)
    labels = None if days is None else day_labels(days)
    chosen = [] if labels is None else choose_days(labels, seed)
    if chosen:
        samples = [(labels != d, (batches or {}).get(d), labels == d) for d in chosen]
        described = f"{len(chosen)} reference days, each against the rest of the reference"
    else:
        n = len(reference)
        if batch_rows is None and labels is not None:  # a day's rows in the reference
            batch_rows = int(np.median(np.unique(labels, return_counts=True)[1]))
        size = max(2, min(batch_rows or n // 20, n // 2))
        samples = []
        for _ in range(RANDOM_SAMPLES):
            pick = np.zeros(n, dtype=bool)
            pick[rng.choice(n, size, replace=False)] = True
            samples.append((~pick, None, pick))
        described = f"{RANDOM_SAMPLES} random samples of {size} reference rows (fewer than {MIN_DAYS} days)"

    fits: dict[str, Fit] = {}
    null: dict[str, list[float]] = {}
    methods_used: dict[str, str] = {}
    skipped: dict[str, str] = {}
    for col in [*numeric, *categorical]:
        is_cat = col in categorical
        values = reference[col]
        method = methods.get(col) or default_method(values, is_cat)
        if method not in DISTANCE_METHODS:
            skipped[col] = f"{method} is a p-value test: Evidently's default threshold"
            continue
        test = _stattest(method, is_cat)
        scores = []
        for rest, whole, own in samples:
            ref_part = values[rest].dropna()
            cur_part = (whole[col] if whole is not None and col in whole.columns else values[own]).dropna()
            if ref_part.empty or cur_part.empty:
                scores.append(math.nan)
                continue
            scores.append(_score(test, ref_part, cur_part, is_cat))
        seen = [x for x in scores if math.isfinite(x)]
        if len(seen) < 3:
            skipped[col] = f"only {len(seen)} samples with values: Evidently's default threshold"
            continue
        fits[col], null[col], methods_used[col] = Fit.of(seen), scores, method
    shared = [c for c in fits if c not in outside_share]
    counted = len(shared) + len([c for c in skipped if c not in outside_share])
    level = common_rate(
        {c: fits[c].z(null[c]) for c in shared},
        needed=max(1, math.ceil(drift_share * counted - 1e-9)),
        target=false_alarm_rate / 2,
        floor=rate,
        seed=seed,
    )
    columns = {
        c: {
            "method": methods_used[c],
            "threshold": fits[c].bound(level),
            "null": {"n": fits[c].n, "median": fits[c].median, "max": fits[c].top},
        }
        for c in fits
    }
    return {
        "version": VERSION,
        "false_alarm_rate": false_alarm_rate,
        "column_rate": level,
        "markov_rate": rate,
        "correlation": mean_correlation({c: fits[c].z(null[c]) for c in shared}),
        "samples": described,
        "columns": columns,
        "skipped": skipped,
    }


@dataclass(frozen=True)
class Fit:
    """A column's null scores, fitted: a Box-Cox power (in [0, 1]: 0 the log, for scores spread over orders
    of magnitude; 1 none) after which the scores are taken as normal with `mean` and `sd`."""

    power: float
    mean: float
    sd: float
    n: int
    top: float
    median: float

    @classmethod
    def of(cls, scores: Sequence[float]) -> Fit:
        import numpy as np
        from scipy import stats

        x = np.maximum(np.asarray(scores, dtype="float64"), SCORE_FLOOR)
        if float(np.ptp(x)) <= 0:
            power, y = 1.0, x
        else:
            power = float(min(max(stats.boxcox_normmax(x, method="mle"), 0.0), 1.0))
            y = stats.boxcox(x, lmbda=power)
        return cls(power, float(y.mean()), float(y.std(ddof=1)), len(x), float(x.max()), float(np.median(x)))

    def z(self, scores: Sequence[float]) -> list[float]:
        """The scores in standard units of the fit (NaN stays NaN)."""
        import numpy as np
        from scipy import stats

        x = np.asarray(scores, dtype="float64")
        out = np.full(len(x), np.nan)
        ok = np.isfinite(x)
        if self.sd > 0 and ok.any():
            y = stats.boxcox(np.maximum(x[ok], SCORE_FLOOR), lmbda=self.power)
            out[ok] = (y - self.mean) / self.sd
        return out.tolist()

    def bound(self, rate: float) -> float:
        """The (1 - rate) upper prediction bound of the next score (Student t: few samples give a wider
        one), never below the largest score seen (nudged up: Evidently flags a score equal to its threshold)."""
        from scipy import special, stats

        floor = self.top * (1 + 1e-6) + 1e-9
        if self.n < 3 or self.sd <= 0:
            return floor
        y = self.mean + float(stats.t.ppf(1 - rate, self.n - 1)) * self.sd * math.sqrt(1 + 1 / self.n)
        value = float(special.inv_boxcox(y, self.power))
        return max(value if math.isfinite(value) else floor, floor)


def upper_bound(scores: Sequence[float], rate: float) -> float:
    """`Fit.of(scores).bound(rate)`."""
    return Fit.of(scores).bound(rate)


def common_rate(
    z: Mapping[str, Sequence[float]], *, needed: int, target: float, floor: float, seed: int
) -> float:
    """The largest per-column rate at which at most `target` of drift-free days have `needed` columns or more
    past their thresholds, the columns' dependence taken from the null samples (a Gaussian copula: their
    correlation in standard units, 20,000 simulated days). Never below `floor` (Markov's bound, which holds
    whatever the dependence)."""
    from statistics import NormalDist

    import numpy as np

    if not z:
        return floor
    m = np.asarray([list(v) for v in z.values()], dtype="float64").T  # samples x columns
    m = np.where(np.isfinite(m), m, 0.0)
    if m.shape[1] == 1 or m.shape[0] < 3:
        corr = np.eye(m.shape[1])
    else:
        corr = np.nan_to_num(np.corrcoef(m, rowvar=False), nan=0.0)
        np.fill_diagonal(corr, 1.0)
    values, vectors = np.linalg.eigh(corr)
    root = vectors * np.sqrt(np.clip(values, 0.0, None))
    draws = np.random.default_rng(seed).standard_normal((SIMULATED_DAYS, m.shape[1])) @ root.T

    def flagged(rate: float) -> float:
        return float(((draws > NormalDist().inv_cdf(1 - rate)).sum(axis=1) >= needed).mean())

    lo, hi = math.log(floor), math.log(0.5)
    if flagged(floor) > target:
        return floor
    for _ in range(30):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if flagged(math.exp(mid)) <= target else (lo, mid)
    return float(math.exp(lo))


def mean_correlation(z: Mapping[str, Sequence[float]]) -> float | None:
    """The mean correlation between columns' null scores (how much drift-free days move them together)."""
    import numpy as np

    if len(z) < 2:
        return None
    m = np.asarray([list(v) for v in z.values()], dtype="float64").T
    m = np.where(np.isfinite(m), m, 0.0)
    corr = np.nan_to_num(np.corrcoef(m, rowvar=False), nan=0.0)
    return float(corr[~np.eye(len(corr), dtype=bool)].mean())


def day_labels(days: pd.Series) -> Any:
    """The reference rows' days as 'YYYY-MM-DD' strings (a numpy array)."""
    return days.astype(str).str[:10].to_numpy()


def choose_days(labels: Any, seed: int) -> list[str]:
    """The reference days used as null samples: all of them up to MAX_DAYS, else a seeded choice; none
    when there are fewer than MIN_DAYS."""
    import numpy as np

    unique = sorted(set(labels.tolist()))
    if len(unique) < MIN_DAYS:
        return []
    if len(unique) <= MAX_DAYS:
        return unique
    return sorted(str(d) for d in np.random.default_rng(seed).choice(unique, MAX_DAYS, replace=False))


def _stattest(method: str, categorical: bool) -> Any:
    from evidently.legacy.calculations.stattests.registry import get_registered_stattest
    from evidently.legacy.core import ColumnType

    return get_registered_stattest(method, ColumnType.Categorical if categorical else ColumnType.Numerical)


def _score(test: Any, reference: pd.Series, current: pd.Series, categorical: bool) -> float:
    from evidently.legacy.core import ColumnType

    kind = ColumnType.Categorical if categorical else ColumnType.Numerical
    result = test(reference, current, kind, None)
    return float(result.drift_score)


def column_overrides(settings: Settings, *, with_prediction: bool) -> dict[str, dict[str, Any]]:
    """`settings.drift_columns`, checked: known column, known keys, a method Evidently has for its type."""
    from evidently.legacy.calculations.stattests.registry import get_registered_stattest
    from evidently.legacy.core import ColumnType

    key = f"{settings.yaml_path}: drift.columns"
    allowed_columns = [*settings.features, "prediction"]
    out: dict[str, dict[str, Any]] = {}
    for col, spec in (settings.drift_columns or {}).items():
        if col not in allowed_columns:
            raise ConfigError(
                f"{key}.{col}: not a feature of {settings.name}. Allowed: {repr(allowed_columns[:8])} "
                f"(or {'prediction'!r} for the champion's scores)."
            )
        if not isinstance(spec, Mapping):
            raise ConfigError(
                f"{key}.{col}: expected a mapping with 'method' and/or 'threshold'. Got {spec!r}."
            )
        unknown = sorted(set(spec) - set(OVERRIDE_KEYS))
        if unknown:
            raise ConfigError(f"{key}.{col}: unknown keys {unknown[:5]}. Allowed: {list(OVERRIDE_KEYS)}.")
        checked: dict[str, Any] = {}
        if spec.get("method") is not None:
            kind = ColumnType.Categorical if col in settings.categorical else ColumnType.Numerical
            try:
                get_registered_stattest(str(spec["method"]), kind)
            except ValueError as exc:
                raise ConfigError(f"{key}.{col}.method: {exc}") from None
            checked["method"] = str(spec["method"])
        if spec.get("threshold") is not None:
            try:
                checked["threshold"] = float(spec["threshold"])
            except (TypeError, ValueError):
                raise ConfigError(
                    f"{key}.{col}.threshold: expected a number. Got {spec['threshold']!r}."
                ) from None
        if col != "prediction" or with_prediction:
            out[col] = checked
    return out


def method_names() -> dict[str, str]:
    """Evidently stat-test display name -> id (e.g. 'Jensen-Shannon distance' -> 'jensenshannon')."""
    from evidently.legacy.calculations import stattests
    from evidently.legacy.calculations.stattests.registry import StatTest

    tests = (getattr(stattests, name) for name in dir(stattests))
    return {t.display_name: t.name for t in tests if isinstance(t, StatTest)}
