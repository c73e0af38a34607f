"""The drift decisions of every day of 2013 equal the golden file written before the drift step was made
cheaper (issue 19): drift share, drifted columns, and each column's method, score, threshold and flag, with
Evidently's defaults, with per-column overrides and with calibrated thresholds (tests/golden/drift_days.py)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "golden"))
import drift_days  # noqa: E402

pytestmark = pytest.mark.slow


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def test_every_day_of_2013_drifts_as_the_golden_file_says(flights_frame, tmp_path):
    golden = json.loads(drift_days.GOLDEN.read_text())
    got = drift_days.compute(flights_frame, tmp_path)
    assert set(got) == set(golden)
    differences = []
    for kind, by_day in golden.items():
        assert set(got[kind]) == set(by_day), kind
        for day, want in by_day.items():
            have = got[kind][day]
            if (
                have["drifted_columns"] != want["drifted_columns"]
                or have["drift_share"] != want["drift_share"]
            ):
                differences.append(
                    f"{kind} {day}: drifted {have['drifted_columns']} != {want['drifted_columns']}"
                )
            for column, values in [*want["columns"].items(), ("prediction", want["prediction"])]:
                now = have["prediction"] if column == "prediction" else have["columns"][column]
                if not all(_same(x, y) for x, y in zip(now, values, strict=True)):
                    differences.append(f"{kind} {day} {column}: {now} != {values}")
    assert not differences, "\n".join(differences[:20])
    assert len(golden["plain"]) >= 330 and len(golden["overrides"]) >= 45
    # the golden file is not trivial: drift days and quiet days, each override method used
    shares = [v["drift_share"] for v in golden["plain"].values()]
    assert min(shares) < 0.5 <= max(shares)
    methods = {v["columns"][c][0] for v in golden["overrides"].values() for c in drift_days.OVERRIDES}
    assert methods == {"psi", "ks", "chisquare", "jensenshannon", "hellinger"}
