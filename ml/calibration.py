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
  2. threshold: the upper prediction bound of the next null score at level 1 - a, from a log-normal fit of
     the null scores (Student t, so few days give a wider bound), and never below the largest null score.
  3. a = false_alarm_rate / 2 * drift_share. A day is flagged when at least drift_share of its features
     drift; by Markov's inequality P(share >= s) <= E[share] / s = a / s, whatever the correlation between
     features: the drift share takes at most half the false-alarm rate (the AUC-drop trigger, ml/policy.py,
     the other half).

Only distance methods ("larger is more drift") are calibrated; a feature with a threshold in the YAML's
`drift.columns` keeps it, and one given a p-value method without a threshold keeps Evidently's default.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

DISTANCE_METHODS = ("wasserstein", "jensenshannon", "hellinger", "kl_div", "psi", "ed")
MAX_DAYS = 60  # reference days used as null samples (a seeded choice above this)
MIN_DAYS = 8  # fewer reference days: random batch-sized samples instead
RANDOM_SAMPLES = 60
SCORE_FLOOR = 1e-6  # scores at 0 (an identical day) before the log
VERSION = 1  # bump when the calculation changes: cached calibrations are recomputed


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

    Returns:
        {"version", "false_alarm_rate", "column_rate", "samples": str, "columns": {column: {method,
        threshold, null: {n, median, max}}}, "skipped": {column: why}}.
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

    columns: dict[str, Any] = {}
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
                continue
            scores.append(_score(test, ref_part, cur_part, is_cat))
        if len(scores) < 3:
            skipped[col] = f"only {len(scores)} samples with values: Evidently's default threshold"
            continue
        columns[col] = {
            "method": method,
            "threshold": upper_bound(scores, rate),
            "null": {
                "n": len(scores),
                "median": float(np.median(scores)),
                "max": float(max(scores)),
            },
        }
    return {
        "version": VERSION,
        "false_alarm_rate": false_alarm_rate,
        "column_rate": rate,
        "samples": described,
        "columns": columns,
        "skipped": skipped,
    }


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


def upper_bound(scores: Sequence[float], rate: float) -> float:
    """The (1 - rate) upper prediction bound of the next score, from a log-normal fit; at least the largest
    score seen (nudged up, as Evidently flags a score equal to the threshold)."""
    from scipy import stats

    logs = [math.log(max(float(x), SCORE_FLOOR)) for x in scores]
    n = len(logs)
    mean = sum(logs) / n
    sd = math.sqrt(sum((x - mean) ** 2 for x in logs) / (n - 1)) if n > 1 else 0.0
    bound = math.exp(mean + float(stats.t.ppf(1 - rate, n - 1)) * sd * math.sqrt(1 + 1 / n))
    top = max(float(x) for x in scores)
    return float(max(bound, top * (1 + 1e-6) + 1e-9))


def _stattest(method: str, categorical: bool) -> Any:
    from evidently.legacy.calculations.stattests.registry import get_registered_stattest
    from evidently.legacy.core import ColumnType

    return get_registered_stattest(method, ColumnType.Categorical if categorical else ColumnType.Numerical)


def _score(test: Any, reference: pd.Series, current: pd.Series, categorical: bool) -> float:
    from evidently.legacy.core import ColumnType

    kind = ColumnType.Categorical if categorical else ColumnType.Numerical
    result = test(reference, current, kind, None)
    return float(result.drift_score)
