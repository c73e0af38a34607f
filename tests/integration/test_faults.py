"""Crashes and out-of-order runs under the real scheduler: the task process killed (SIGKILL) at the
registration, the audit write and the alias move, retried by Airflow; a manual run during a backfill.

Goal for each: one champion that the audit log, the history, `driftwatch status` and the MLflow aliases all
name; no version without its record; no lock left; the run green after the retry. The kills come from
ml/faults.py (DRIFTWATCH_FAULTS in the stack's environment, a file per armed point, consumed once); the
crash points are unit-tested one by one in tests/unit/test_crash_points.py.

A dataset of its own (`flights_faults`, flights Jan 2013, original window Jan 1-4) whose thresholds retrain
and promote every day after the bootstrap, with a 1-second retry delay.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time

import pytest
import yaml
from stack_fixtures import use_stack_env

from ml import faults
from ml.config import BUNDLED_DATASETS

pytestmark = pytest.mark.integration

NAME = "flights_faults"
DAG_ID = f"retraining_pipeline__{NAME}"
MODEL = "flights-faults"
DAYS = [dt.date(2013, 1, d) for d in range(1, 10)]


def _yaml(folder) -> None:
    raw = yaml.safe_load((BUNDLED_DATASETS / "flights.yaml").read_text())
    raw.update(
        name=NAME,
        dag_id=DAG_ID,
        registered_model=MODEL,
        holdout_days=2,
        original_window={"start": "2013-01-01", "end": "2013-01-04"},
        wait={"timeout_minutes": 5, "poke_seconds": 2, "earlier_days_timeout_minutes": 15},
        retries={"count": 1, "delay_seconds": 1},
    )
    # every monitored day retrains (an AUC "drop" >= -1) and every challenger is promoted
    raw["thresholds"].update(
        quality_drop=-1.0,
        cooldown_days=0,
        min_new_rows=0,
        min_new_days=0,
        min_delta=-1.0,
        logloss_tolerance=1.0,
        min_bootstrap_auc=0.5,
        bootstrap_resamples=200,
    )
    raw["evaluation"]["segment_tolerance"] = 1.0
    raw["monitoring"]["attribution"]["rows"] = 300
    (folder / f"{NAME}.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))


@pytest.fixture(scope="module")
def faulty(stack_factory, flights_frame, tmp_path_factory):
    folder = tmp_path_factory.mktemp("faults-datasets")
    armed = tmp_path_factory.mktemp("faults-armed")
    _yaml(folder)
    stack = stack_factory("faults", extra_env={"DRIFTWATCH_DATASETS": str(folder), faults.ENV: str(armed)})
    mp = use_stack_env(stack, folder)
    from ml.config import load_settings
    from ml.day import settings_for

    settings_for.cache_clear()
    s = load_settings(NAME)
    for day in DAYS:
        frame = flights_frame[flights_frame["date"] == day.isoformat()][s.columns].reset_index(drop=True)
        part = stack.lake / NAME / f"date={day.isoformat()}"
        part.mkdir(parents=True, exist_ok=True)
        frame.to_parquet(part / "part-0.parquet", index=False)
    stack.wait_for_dag(DAG_ID, timeout=180)
    try:
        yield stack, s, armed
    finally:
        mp.undo()
        settings_for.cache_clear()


def _run(stack, day: dt.date) -> dict:
    (run,) = [r for r in stack.runs(DAG_ID) if r["logical_date"].startswith(day.isoformat())]
    return run


def _tries(stack, day: dt.date) -> dict[str, int]:
    return {
        ti["task_id"]: ti["try_number"] for ti in stack.task_instances(DAG_ID, _run(stack, day)["dag_run_id"])
    }


def _one_champion_everywhere(s) -> dict:
    """The invariants: audit = history = status = MLflow aliases; every version recorded; no lock, no RUNNING run."""
    from ml import registry
    from ml.history import History
    from ml.status import status

    h = History(s.history_url)
    st = status(s)
    champion = st["champion"]
    assert champion["alias_drift"] == [] and champion["version"] == champion["alias_version"], champion
    last = h.latest_alias(s.name, "champion")
    assert last["after_version"] == champion["version"]
    row = h.get_day(s.name, dt.date.fromisoformat(last["logical_date"]))
    assert (row["promotion"], row["candidate_version"]) == ("promoted", champion["version"]), row
    assert h.locks() == [] and st["locks"] == []
    c = registry.client(s)
    versions = sorted(int(m.version) for m in c.search_model_versions(f"name = '{s.registered_model}'"))
    assert versions == sorted(m["version"] for m in h.models(s.name)), "a version without its record"
    runs = c.search_runs([registry.experiment_id(s, "training")])
    assert not [r.info.run_id for r in runs if r.info.status == "RUNNING"], "a training run RUNNING for ever"
    for m in h.models(s.name):
        assert c.get_model_version(s.registered_model, str(m["version"])).tags.get("driftwatch.decision") in (
            "promoted",
            "rejected",
        ), f"version {m['version']} carries no decision"
    return {"champion": champion["version"], "versions": versions}


def test_killed_at_registration_and_after_the_audit_write_the_retries_converge(faulty):
    stack, s, armed = faulty
    faults.arm(armed, "train.after_register", NAME)
    faults.arm(armed, "promote.after_audit", NAME)

    result = stack.backfill(DAG_ID, DAYS[0], DAYS[3], timeout=900)

    assert result["failed"] == 0 and result["success"] == 4, (result, stack.failure_report())
    assert faults.fired(armed, "train.after_register", NAME) and faults.fired(
        armed, "promote.after_audit", NAME
    )
    tries = _tries(stack, DAYS[3])
    assert (tries["train_challenger"], tries["promote_challenger"]) == (2, 2), tries
    log = stack.task_log(DAG_ID, _run(stack, DAYS[3])["dag_run_id"], "train_challenger")
    assert "adopting version 1" in log and "the previous try failed or was killed" in log
    killed = stack.task_log(DAG_ID, _run(stack, DAYS[3])["dag_run_id"], "train_challenger", try_number=1)
    assert "fault injection: train.after_register" in killed
    created = [json.loads(line) for line in killed.splitlines() if "Created version" in line]
    assert created and {line["level"] for line in created} == {"info"}, (
        f"MLflow's news logged as errors: {created}"
    )
    log = stack.task_log(DAG_ID, _run(stack, DAYS[3])["dag_run_id"], "promote_challenger")
    assert "taken over from" in log and "no longer exists" in log, log[-3000:]
    assert _one_champion_everywhere(s) == {"champion": 1, "versions": [1]}


def test_killed_between_the_two_alias_moves_the_retry_converges(faulty):
    stack, s, armed = faulty
    faults.arm(armed, "promote.after_champion_alias", NAME)

    result = stack.backfill(DAG_ID, DAYS[4], DAYS[4], timeout=600)

    assert result["failed"] == 0, (result, stack.failure_report())
    assert faults.fired(armed, "promote.after_champion_alias", NAME)
    assert _tries(stack, DAYS[4])["promote_challenger"] == 2
    assert _one_champion_everywhere(s) == {"champion": 2, "versions": [1, 2]}
    from ml import registry

    assert registry.client(s).get_registered_model(MODEL).aliases == {"champion": "2", "previous": "1"}


def test_a_manual_run_during_a_backfill_waits_for_the_earlier_days(faulty):
    stack, s, armed = faulty
    done: dict = {}
    backfill = threading.Thread(
        target=lambda: done.update(stack.backfill(DAG_ID, DAYS[5], DAYS[7], timeout=900))
    )
    backfill.start()
    deadline = time.monotonic() + 120
    while not [
        r for r in stack.runs(DAG_ID) if r["run_type"] == "backfill" and r["logical_date"] >= "2013-01-06"
    ]:
        assert time.monotonic() < deadline, "the backfill created no runs"
        time.sleep(0.5)
    stack.trigger(DAG_ID, DAYS[8], wait=False)  # Jan 9, after the backfill's range, while it runs
    backfill.join(timeout=900)
    manual = _run(stack, DAYS[8])
    while manual["state"] not in ("success", "failed"):
        assert time.monotonic() < deadline + 900, "the manual run did not finish"
        time.sleep(1)
        manual = _run(stack, DAYS[8])

    assert done.get("failed") == 0 and manual["state"] == "success", (done, manual, stack.failure_report())
    tis = {ti["task_id"]: ti for ti in stack.task_instances(DAG_ID, manual["dag_run_id"])}
    last_backfilled = {
        ti["task_id"]: ti for ti in stack.task_instances(DAG_ID, _run(stack, DAYS[7])["dag_run_id"])
    }
    assert tis["validate_batch"]["start_date"] >= last_backfilled["record"]["end_date"], (
        "the manual run did model work before the backfill's earlier days finished"
    )
    log = stack.task_log(DAG_ID, manual["dag_run_id"], "wait_for_earlier_days")
    assert "waiting for the runs of earlier dates" in log
    from ml.history import History

    h = History(s.history_url)
    for row in h.days(s.name):
        day = dt.date.fromisoformat(row["day"])
        if row.get("champion_version") is not None:
            served = h.champion_at(s.name, day - dt.timedelta(days=1))
            assert row["champion_version"] == served, (
                f"{day} was scored by v{row['champion_version']}, "
                f"but champion --at {day - dt.timedelta(days=1)} says v{served}"
            )
    _one_champion_everywhere(s)
