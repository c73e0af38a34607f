"""The benchmark scripts' own bookkeeping: make bench hands its drift replay to bench_monitors."""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
from dataclasses import asdict
from pathlib import Path

import pytest

from ml import replay_jobs
from ml.config import REPO_ROOT, load_settings


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _replay_dir(tmp_path: Path, **change) -> Path:
    s = load_settings("flights")
    result = {
        "dataset": "flights",
        "policy": "drift",
        "from": "2013-01-01",
        "to": "2013-03-31",
        "thresholds": asdict(s.thresholds),
        "days": [],
        "wall_s": 1.0,
    }
    result.update(change)
    work = tmp_path / "drift"
    work.mkdir(exist_ok=True)
    (work / replay_jobs.RESULT_FILE).write_text(json.dumps(result))
    return work


def _job() -> replay_jobs.Job:
    return replay_jobs.Job(
        "labels-same-day",
        "flights",
        "drift",
        dt.date(2013, 1, 1),
        dt.date(2013, 3, 31),
        overrides={"label_delay_days": 0},
    )


def test_same_day_replay_is_reused_only_when_it_is_the_same_run(tmp_path):
    bench_monitors = _script("bench_monitors")
    s = load_settings("flights")
    args = argparse.Namespace(same_day=str(_replay_dir(tmp_path)))
    assert bench_monitors._reuse(args, s, _job())["policy"] == "drift"

    for change, word in (
        ({"to": "2013-12-31"}, "2013-12-31"),
        ({"policy": "daily"}, "daily"),
        ({"thresholds": {**asdict(s.thresholds), "cooldown_days": 7}}, "other thresholds"),
    ):
        args = argparse.Namespace(same_day=str(_replay_dir(tmp_path, **change)))
        with pytest.raises(SystemExit, match=word):
            bench_monitors._reuse(args, s, _job())

    with pytest.raises(SystemExit, match="no result.json"):
        bench_monitors._reuse(argparse.Namespace(same_day=str(tmp_path / "missing")), s, _job())


def test_clean_keeps_only_the_drift_replays_model_references(tmp_path):
    bench_replay = _script("bench_replay")
    for name in ("drift", "daily"):
        version = tmp_path / name / "home" / "models" / "flights" / "v3"
        version.mkdir(parents=True)
        (version / "monitor_reference.json").write_text("{}")
        (version / "model.joblib").write_text("x")
        (tmp_path / name / "home" / "reports").mkdir()
        (tmp_path / name / "home" / "driftwatch.db").write_text("x")
        (tmp_path / name / "lake").mkdir()
        (tmp_path / name / replay_jobs.RESULT_FILE).write_text("{}")

    bench_replay._clean(tmp_path)

    kept = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert kept == [
        "daily/result.json",
        "drift/home/models/flights/v3/monitor_reference.json",
        "drift/result.json",
    ]


def test_serving_bench_figures_percentiles_and_lost_records():
    bench = _script("bench_serving")
    assert bench.percentile([], 50) is None
    assert bench.percentile([5.0], 99) == 5.0
    assert bench.percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert bench.percentile(list(range(101)), 99) == 99.0

    ok = [bench.Result(0.0, 0.010 * (i + 1), 200, 1, [f"id{i}"]) for i in range(4)]
    failed = [bench.Result(0.0, 0.5), bench.Result(1.0, 1.0)]  # no answer; never sent (overload)
    f = bench.summarize(ok + failed, rows=100, cpu_s=0.2)
    assert (f["sent"], f["ok"], f["failed"], f["unsent"]) == (6, 4, 2, 1)
    assert f["p50"] == pytest.approx(25.0) and f["p99"] == pytest.approx(39.7)
    assert f["rps"] == pytest.approx(4.0) and f["rows_per_s"] == pytest.approx(400.0)  # 4 answers in 1 s
    assert f["cpu_ms"] == pytest.approx(50.0)
    assert bench.cells(f)["fail"] == "2 / 6 (1)"

    # answered ids missing from the capture, or captured with another version than the answer named
    assert bench.lost(ok + failed, {"id0": 1, "id1": 2, "id2": 1}) == (4, 1, 1)
