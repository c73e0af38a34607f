"""The drift numbers of every day of 2013 against one fixed reference: what `tests/golden/drift_2013.json`
pins, so that a change of how the drift step computes them (issue 19) cannot change a decision.

Reference: the flights of January 2013; each day of February to December is compared with it, the way
`detect_drift` compares a batch with the champion's reference: every feature, prediction drift on scores,
Evidently's default method and threshold per column (`drift.calibrate: false`, as flights.yaml). Every 7th
day is also compared with per-column overrides that exercise the other methods and a threshold, and with
calibrated thresholds. The scores are a fixed formula of the features (no model: nothing in the golden
depends on a trained model's floating-point noise).

    .venv/bin/python tests/golden/drift_days.py          # rewrites tests/golden/drift_2013.json
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

GOLDEN = Path(__file__).with_name("drift_2013.json")
REFERENCE = ("2013-01-01", "2013-01-31")
OVERRIDES = {
    "distance": {"method": "psi"},
    "hour": {"method": "ks", "threshold": 0.01},
    "carrier": {"method": "chisquare"},
    "temp": {"method": "jensenshannon", "threshold": 0.2},
    "dest": {"method": "hellinger"},
}
EVERY = 7  # days also checked with OVERRIDES and with calibrated thresholds


def scores(frame: Any) -> Any:
    """A deterministic 'champion score' in (0, 1) from the features."""
    import numpy as np

    z = (
        0.02 * frame["hour"].astype("float64").fillna(12)
        + 3.0 * frame["precip"].astype("float64").fillna(0)
        - 0.05 * frame["visib"].astype("float64").fillna(10)
        + 0.0003 * frame["distance"].astype("float64")
        - 0.4
    )
    return (1 / (1 + np.exp(-z.to_numpy()))).round(12)


def _settings(overrides: dict[str, Any] | None) -> Any:
    import dataclasses

    from ml.config import BUNDLED_DATASETS, load_settings

    s = load_settings(BUNDLED_DATASETS / "flights.yaml", environ={})
    # on top of flights.yaml's own thresholds (its weather columns)
    return dataclasses.replace(s, drift_columns={**s.drift_columns, **overrides}) if overrides else s


def _compact(result: dict[str, Any]) -> dict[str, Any]:
    pred = result.get("prediction_drift") or {}
    return {
        "drift_share": result["drift_share"],
        "drifted_columns": result["drifted_columns"],
        "columns": {
            c: [v["method"], v["score"], v["threshold"], v["drifted"]]
            for c, v in sorted(result["columns"].items())
        },
        "prediction": [pred.get("method"), pred.get("score"), pred.get("threshold"), pred.get("drifted")],
    }


def days(frame: Any, every: int = 1) -> Iterator[tuple[dt.date, Any]]:
    by_day = dict(tuple(frame.groupby("date", sort=True)))
    for i, key in enumerate(k for k in sorted(by_day) if k > REFERENCE[1]):
        if i % every == 0:
            yield dt.date.fromisoformat(str(key)[:10]), by_day[key].reset_index(drop=True)


def compute(frame: Any, folder: Path, every: int = 1) -> dict[str, Any]:
    """{"plain": {day: numbers}, "overrides": {...}, "calibrated": {...}} for the days of 2013 after the
    reference month (every `every`-th day; overrides and calibrated on every EVERY-th of those)."""
    from ml import calibration as cal
    from ml import drift

    reference = frame[(frame["date"] >= REFERENCE[0]) & (frame["date"] <= REFERENCE[1])].reset_index(
        drop=True
    )
    ref_scores = scores(reference)
    plain, overridden = _settings(None), _settings(OVERRIDES)
    ref_frame = drift._model_columns(plain, reference, ref_scores)
    calibrated = cal.calibrate(
        ref_frame,
        numeric=[*plain.numeric, drift.PREDICTION_COLUMN],
        categorical=list(plain.categorical),
        days=reference[plain.date_column],
        methods={},
        false_alarm_rate=0.01,
        drift_share=plain.thresholds.drift_share,
        batches={},
        seed=0,
        outside_share=[drift.PREDICTION_COLUMN],
    )
    out: dict[str, dict[str, Any]] = {"plain": {}, "overrides": {}, "calibrated": {}}
    for i, (day, current) in enumerate(days(frame, every)):
        common = {
            "current": current,
            "reference": reference,
            "current_scores": scores(current),
            "reference_scores": ref_scores,
            "champion_holdout": {"roc_auc": 0.7},
            "report_path": folder / day.isoformat() / "drift.html",
        }
        out["plain"][day.isoformat()] = _compact(drift.detect_drift(plain, day, **common))
        if i % EVERY == 0:
            out["overrides"][day.isoformat()] = _compact(drift.detect_drift(overridden, day, **common))
            out["calibrated"][day.isoformat()] = _compact(
                drift.detect_drift(plain, day, calibration=calibrated, **common)
            )
    return out


def main() -> None:
    import tempfile

    from ml.datasets.nycflights13 import load_frame

    frame, _ = load_frame()
    with tempfile.TemporaryDirectory() as folder:
        got = compute(frame, Path(folder))
    GOLDEN.write_text(json.dumps(got, indent=0, sort_keys=True) + "\n")
    print(f"wrote {GOLDEN}: {len(got['plain'])} days")


if __name__ == "__main__":
    main()
