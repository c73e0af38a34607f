"""The decisions of the demo range are the golden file's, day by day (tests/golden_decisions.py says how to
rewrite it when a change is meant to change decisions).

The real replay (ml.replay: the pipeline's steps in order, real Great Expectations, Evidently, MLflow on
SQLite) of 2013-01-01..03-31 on partitions written by `driftwatch prepare`: ~5 min on 2 cores.
"""

from __future__ import annotations

import json
import os

import pytest
from golden_decisions import END, START, decisions, golden_path, replay

pytestmark = pytest.mark.integration


def test_the_demo_range_decides_as_the_golden_file(tmp_path, monkeypatch):
    from ml.config import load_settings
    from ml.datasets.nycflights13 import prepare

    lake = tmp_path / "lake"
    # the bundled flights YAML, nothing of a stack another test started (they set these for their tasks)
    for var in [v for v in os.environ if v.startswith(("DRIFTWATCH", "MLFLOW_TRACKING"))]:
        monkeypatch.delenv(var)
    monkeypatch.setenv("DRIFTWATCH_LAKE", str(lake))
    monkeypatch.setenv("DRIFTWATCH_HOME", str(tmp_path / "home"))
    prepare(load_settings("flights"))
    want = json.loads(golden_path().read_text())

    got = decisions(replay(tmp_path / "replays", START, END, source_lake=lake))

    assert got["summary"] == want["summary"]
    changed = {
        day: {"golden": want["days"][day], "now": got["days"].get(day)}
        for day in want["days"]
        if want["days"][day] != got["days"].get(day)
    }
    assert not changed, f"{len(changed)} days decided differently: {json.dumps(changed, indent=1)[:4000]}"
    assert set(got["days"]) == set(want["days"])
