"""A process killed (SIGKILL: no `finally`, no callback) at each crash point of the promotion and of the
training, then retried: one champion that the audit log, the day's row, `driftwatch status` and the MLflow
aliases all name; no version without its record; no lock left; the retry takes a dead holder's lock at once.

The killed process is a real child interpreter that reaches the point armed through DRIFTWATCH_FAULTS
(ml/faults.py) and sends itself SIGKILL; the retry runs in this process. MLflow is a library on a SQLite
file in tmp (no server); the scheduler-driven version of these tests is tests/integration/test_faults.py.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from scipy.special import expit

from ml import alerts, faults, promotion, registry
from ml.config import BUNDLED_DATASETS, load_settings
from ml.day import Day, settings_for
from ml.evaluate import compare
from ml.history import History
from ml.status import status
from ml.tasks import promote_challenger, record, train_challenger

pytestmark = pytest.mark.slow  # real training or real processes: make test runs it, make test-unit does not

D1, D2 = dt.date(2013, 1, 31), dt.date(2013, 2, 10)

WORKER = r"""
import datetime as dt, json, sys
spec = json.loads(sys.argv[1])
from ml import promotion
from ml.config import load_settings
from ml.day import Day
from ml.history import History
from ml.tasks import train_challenger

s = load_settings("flights")
day = dt.date.fromisoformat(spec["day"])
if spec["what"] == "promote":
    promotion.promote(s, History(s.history_url), version=spec["version"], day=day, evaluation=spec["evaluation"],
                      dag_run_id="try-1")
else:
    train_challenger.run(Day.of("flights", day, "try-1"))
print("NOT KILLED")
"""


def _killed_at(point: str, tmp_path: Path, **spec) -> str:
    """Run the step in a child process with `point` armed; assert it died of SIGKILL there."""
    folder = tmp_path / "faults"
    faults.arm(folder, point)
    proc = subprocess.run(
        [sys.executable, "-c", WORKER, json.dumps(spec, default=str)],
        env={**os.environ, faults.ENV: str(folder)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == -signal.SIGKILL, (
        f"expected SIGKILL at {point}; rc {proc.returncode}\n{proc.stderr[-3000:]}"
    )
    assert faults.fired(folder, point)
    return proc.stderr


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path_factory.mktemp('crash') / 'mlflow.db'}"
    MlflowClient(tracking_uri=uri, registry_uri=uri).search_registered_models()  # MLflow's migrations, once
    return uri


@pytest.fixture(scope="module")
def evaluations() -> dict[str, dict]:
    s = load_settings(BUNDLED_DATASETS / "flights.yaml", environ={})
    s = s.with_overrides(thresholds=dataclasses.replace(s.thresholds, bootstrap_resamples=100))
    rng = np.random.default_rng(0)
    x = rng.normal(size=1000)
    y = (rng.random(1000) < expit(2 * x)).astype(int)
    weak = expit(2.0 * (x + rng.normal(scale=1.5, size=1000)) / np.sqrt(1 + 4 * 1.5**2))
    return {"bootstrap": compare(s, y, None, expit(2 * x)), "better": compare(s, y, weak, expit(2 * x))}


@pytest.fixture
def s(dw_env, monkeypatch, store):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    monkeypatch.setenv("DRIFTWATCH__REGISTERED_MODEL", f"flights-{uuid.uuid4().hex[:12]}")
    return load_settings("flights")


def _alias(s, alias: str) -> int | None:
    aliases = registry.client(s).get_registered_model(s.registered_model).aliases
    return int(aliases[alias]) if alias in aliases else None


def _events(h: History, s, alias: str) -> list[tuple]:
    return [
        (e["logical_date"], e["before_version"], e["after_version"]) for e in h.alias_events(s.name, alias)
    ]


# ---------------------------------------------------------------------------------------------- promotion
@pytest.fixture
def champion_v1(s, evaluations, tmp_path):
    """v1 champion since D1, v2 registered and evaluated for D2 (the day's row accepted, retrain decided)."""
    c = registry.client(s)
    c.create_registered_model(s.registered_model)
    v1, v2 = (
        int(c.create_model_version(s.registered_model, str(tmp_path / "m"), run_id=None).version)
        for _ in range(2)
    )
    h = History(s.history_url)
    promotion.promote(
        s, h, version=v1, day=D1, evaluation=copy.deepcopy(evaluations["bootstrap"]), dag_run_id="d1"
    )
    h.start_day(s.name, D2, status="accepted", decision="retrain", candidate_version=v2)
    better = copy.deepcopy(evaluations["better"])
    better.update(challenger_version=v2, champion_version=v1)
    h.update_day(s.name, D2, evaluation=better)
    return h, v1, v2, better


def _promote(s, version: int, evaluation: dict, run_id: str) -> dict:
    """The promote_challenger task, as evaluate_challenger hands it the evaluation (a file)."""
    path = s.report_dir(D2) / "evaluation.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(evaluation))
    return promote_challenger.run(
        Day.of("flights", D2, run_id), {"version": version}, {"evaluation": str(path)}
    )


def _assert_one_champion(s, h: History, v1: int, v2: int, better: dict) -> None:
    assert _events(h, s, "champion") == [(D1.isoformat(), None, v1), (D2.isoformat(), v1, v2)]
    assert _events(h, s, "previous") == [(D2.isoformat(), None, v1)]
    assert (_alias(s, "champion"), _alias(s, "previous")) == (v2, v1)
    row = h.get_day(s.name, D2)
    assert (row["promotion"], row["candidate_version"]) == ("promoted", v2)
    assert h.champion_at(s.name, D2) == v2
    st = status(s)
    assert (st["champion"]["version"], st["champion"]["alias_version"], st["champion"]["alias_drift"]) == (
        v2,
        v2,
        [],
    )
    assert h.locks() == [] and st["locks"] == []
    tags = registry.client(s).get_model_version(s.registered_model, str(v2)).tags
    assert (tags["driftwatch.decision"], tags["driftwatch.promoted_on"]) == ("promoted", D2.isoformat())
    assert tags["driftwatch.replaced_version"] == str(v1)


@pytest.mark.parametrize(
    "point",
    ["promote.after_lock", "promote.after_audit", "promote.after_tags", "promote.after_champion_alias"],
)
def test_a_promotion_killed_at_each_point_converges_on_retry(s, champion_v1, tmp_path, point):
    h, v1, v2, better = champion_v1
    _killed_at(point, tmp_path, what="promote", day=D2.isoformat(), version=v2, evaluation=better)
    assert [lock["holder"] for lock in h.locks()] == [f"promote:try-1:v{v2}"], (
        "the killed holder left its lock"
    )
    committed = point != "promote.after_lock"
    assert h.champion_at(s.name, D2) == (v2 if committed else v1)  # the commit point is the audit transaction

    started = time.monotonic()
    out = _promote(s, v2, better, "try-2")
    seconds = time.monotonic() - started

    assert seconds < 10, f"the retry waited {seconds:.1f} s for a lock whose holder was dead"
    assert out["promoted"] and out["previous"] == v1 and out["recorded_before"] is committed
    _assert_one_champion(s, h, v1, v2, better)


def test_a_promotion_killed_after_its_commit_and_never_retried_is_repaired_by_the_days_record(
    s, champion_v1, tmp_path
):
    h, v1, v2, better = champion_v1
    _killed_at(
        "promote.after_audit", tmp_path, what="promote", day=D2.isoformat(), version=v2, evaluation=better
    )
    record.on_failure(Day.of("flights", D2, "try-1"), "promote_challenger", "the task process was killed")
    assert status(s)["champion"]["alias_drift"] == [
        {"alias": "champion", "audit": v2, "mlflow": v1, "since": D2.isoformat(), "reason": better["reason"]},
        {
            "alias": "previous",
            "audit": v1,
            "mlflow": None,
            "since": D2.isoformat(),
            "reason": f"replaced by version {v2}",
        },
    ]
    assert h.get_day(s.name, D2)["promotion"] == "promoted", (
        "a committed promotion must not be recorded as failed"
    )

    with pytest.raises(Exception, match="promote_challenger failed"):  # the run still fails: a step failed
        record.run(Day.of("flights", D2, "try-1"), failed_tasks={"promote_challenger": "failed"})

    _assert_one_champion(s, h, v1, v2, better)
    sent = [a for a in alerts.sent(s) if a["kind"] == "registry"]
    assert len(sent) == 1 and "did not mirror the audit log" in sent[0]["message"]


def test_record_after_a_retry_that_succeeded_reports_success_not_the_stale_error(s, champion_v1, tmp_path):
    h, v1, v2, better = champion_v1
    record.on_failure(Day.of("flights", D2, "try-1"), "promote_challenger", "PromotionLockedError: lock held")
    _promote(s, v2, better, "cleared-and-rerun")

    summary = record.run(Day.of("flights", D2, "try-1"), failed_tasks={})

    assert summary["promotion"] == "promoted" and summary["champion_after"] == v2
    assert h.get_day(s.name, D2)["error"] is None


def test_an_alias_moved_by_hand_is_detected_and_repaired(s, champion_v1):
    h, v1, v2, better = champion_v1
    _promote(s, v2, better, "run")
    registry.client(s).set_registered_model_alias(
        s.registered_model, "champion", str(v1)
    )  # outside driftwatch

    assert [d["alias"] for d in status(s)["champion"]["alias_drift"]] == ["champion"]
    repaired = promotion.repair(s, h)

    assert [(d["alias"], d["audit"], d["mlflow"]) for d in repaired] == [("champion", v2, v1)]
    _assert_one_champion(s, h, v1, v2, better)
    assert promotion.repair(s, h) == []


# ---------------------------------------------------------------------------------------------- training
@pytest.fixture
def small_window(dw_env, monkeypatch, add_partitions):
    """flights with a 5-day original window (train Jan 1-3, holdout Jan 4-5): a bootstrap trains in seconds.
    Its own MLflow store (dw_env's): the training experiment is per dataset, not per registered model."""
    monkeypatch.setenv("DRIFTWATCH__REGISTERED_MODEL", f"flights-{uuid.uuid4().hex[:12]}")
    monkeypatch.setenv("DRIFTWATCH__ORIGINAL_WINDOW__END", "2013-01-05")
    monkeypatch.setenv("DRIFTWATCH__HOLDOUT_DAYS", "2")
    settings_for.cache_clear()
    s = load_settings("flights")
    add_partitions(s, [dt.date(2013, 1, d) for d in range(1, 6)])
    h = History(s.history_url)
    h.start_day(
        s.name, dt.date(2013, 1, 5), status="accepted", decision="bootstrap", reason="bootstrap: test"
    )
    return s, h


def _versions(s) -> list[int]:
    return sorted(
        int(m.version) for m in registry.client(s).search_model_versions(f"name = '{s.registered_model}'")
    )


def _training_runs(s) -> list:
    return registry.client(s).search_runs([registry.experiment_id(s, "training")])


@pytest.mark.parametrize("point", ["train.after_run_start", "train.before_register", "train.after_register"])
def test_a_training_killed_at_each_point_leaves_no_orphan(small_window, tmp_path, point):
    s, h = small_window
    day = dt.date(2013, 1, 5)
    _killed_at(point, tmp_path, what="train", day=day.isoformat())

    out = train_challenger.run(Day.of("flights", day, "try-2"))

    versions = _versions(s)
    assert versions == [out["version"]], f"one version for the day, got {versions}"
    model = h.get_model(s.name, out["version"])
    assert model is not None and model["trained_on"] == day.isoformat()
    assert h.get_day(s.name, day)["candidate_version"] == out["version"]
    mv = registry.client(s).get_model_version(s.registered_model, str(out["version"]))
    assert mv.run_id == model["run_id"] and mv.tags["driftwatch.logical_date"] == day.isoformat()
    assert "Awaiting evaluation" in (mv.description or "")
    runs = {r.info.run_id: r for r in _training_runs(s)}
    assert runs[model["run_id"]].info.status == "FINISHED"
    assert not [r for r in runs.values() if r.info.status == "RUNNING"], "a run left RUNNING for ever"
    if point == "train.after_run_start":  # the killed try's run is ended FAILED, a new one trained
        (failed,) = [r for r in runs.values() if r.info.status == "FAILED"]
        assert "killed" in failed.data.tags["driftwatch.failed_reason"]
        assert out["reused"] is False and len(runs) == 2
    else:  # the killed try's complete run is registered or adopted, not trained again
        assert out.get("adopted") is True and len(runs) == 1
    assert (
        registry.artifact(s, h, out["version"], "reference.parquet").shape[0] > 0
    )  # its artifacts are usable
