"""The history database: day rows with re-run semantics, JSON fields, the champion timeline, the lock."""

from __future__ import annotations

import datetime as dt
import os
import socket
import stat
import subprocess
import sys
import threading
import time

import pytest
import sqlalchemy as sa

from ml.exceptions import PromotionLockedError
from ml.history import History, locks

DATASET = "flights"
DAY = dt.date(2013, 2, 1)


@pytest.fixture
def history(dw_env) -> History:
    return History(f"sqlite:///{dw_env / 'history.db'}")


def _champion(history: History, day: str, version: int) -> None:
    history.add_alias_event(
        dataset=DATASET,
        model="flights-delay",
        alias="champion",
        logical_date=day,
        before_version=None,
        after_version=version,
        reason="test",
    )


def test_start_day_replaces_the_row_of_a_rerun(history):
    history.start_day(DATASET, DAY, status="accepted", rows=900, champion_version=1)
    history.update_day(DATASET, DAY, drift_share=0.6, decision="retrain", reason="drift")

    history.start_day(DATASET, DAY, status="quarantined", rows=12)

    row = history.get_day(DATASET, DAY)
    assert row["status"] == "quarantined"
    assert row["rows"] == 12
    assert row["champion_version"] is None
    assert row["drift_share"] is None
    assert row["decision"] is None and row["reason"] is None
    assert [r["day"] for r in history.days(DATASET)] == [DAY.isoformat()]


def test_update_day_merges_into_the_existing_row(history):
    history.start_day(DATASET, DAY, status="accepted", rows=900)

    history.update_day(DATASET, DAY, drift_share=0.25)
    history.update_day(DATASET, DAY, decision="skip")

    row = history.get_day(DATASET, DAY)
    assert (row["status"], row["rows"], row["drift_share"], row["decision"]) == (
        "accepted",
        900,
        0.25,
        "skip",
    )


def test_update_day_creates_a_missing_row(history):
    assert history.get_day(DATASET, DAY) is None

    history.update_day(DATASET, DAY, error="wait_for_batch failed")

    row = history.get_day(DATASET, DAY)
    assert row["error"] == "wait_for_batch failed"
    assert row["status"] is None
    assert row["updated_at"] is not None


def test_rows_are_kept_per_dataset_and_day(history):
    history.start_day(DATASET, DAY, status="accepted")
    history.start_day(DATASET, DAY + dt.timedelta(days=1), status="accepted")
    history.start_day("other", DAY, status="quarantined")

    assert [r["day"] for r in history.days(DATASET)] == [
        DAY.isoformat(),
        (DAY + dt.timedelta(days=1)).isoformat(),
    ]
    assert [r["day"] for r in history.days(DATASET, until=DAY)] == [DAY.isoformat()]
    assert history.get_day("other", DAY)["status"] == "quarantined"


def test_json_fields_round_trip(history):
    quality = {"roc_auc": 0.71, "log_loss": 0.48, "accuracy": 0.8, "f1": None}
    evaluation = {
        "promote": False,
        "checks": {"roc_auc_gain_ci_low": {"value": -0.01, "passed": False}},
        "bootstrap_ci": {"low": -0.01, "high": 0.02},
    }
    history.start_day(
        DATASET,
        DAY,
        status="accepted",
        drifted_columns=["temp", "dewp"],
        reports={"validation": "/x/validation.html"},
    )
    history.update_day(DATASET, DAY, quality=quality, evaluation=evaluation)
    history.put_model(
        DATASET,
        3,
        trained_on="2013-02-01",
        train_days=["2013-01-01", "2013-01-02"],
        holdout_days=["2013-01-03"],
        holdout_metrics=quality,
    )

    row = history.get_day(DATASET, DAY)
    model = history.get_model(DATASET, 3)
    assert row["drifted_columns"] == ["temp", "dewp"]
    assert row["reports"] == {"validation": "/x/validation.html"}
    assert row["quality"] == quality
    assert row["evaluation"] == evaluation
    assert model["train_days"] == ["2013-01-01", "2013-01-02"]
    assert model["holdout_days"] == ["2013-01-03"]
    assert model["holdout_metrics"] == quality
    assert [m["version"] for m in history.models(DATASET)] == [3]


def test_put_model_replaces_the_version(history):
    history.put_model(DATASET, 2, trained_on="2013-02-01", train_rows=10)
    history.put_model(DATASET, 2, trained_on="2013-02-02", train_rows=20)

    assert [(m["version"], m["trained_on"], m["train_rows"]) for m in history.models(DATASET)] == [
        (2, "2013-02-02", 20)
    ]


def test_champion_at_follows_logical_date_not_insertion_order(history):
    _champion(history, "2013-03-01", 3)  # a later day's promotion recorded first (backfill order)
    _champion(history, "2013-02-01", 2)

    assert history.champion_at(DATASET, dt.date(2013, 1, 31)) is None
    assert history.champion_at(DATASET, dt.date(2013, 2, 1)) == 2
    assert history.champion_at(DATASET, dt.date(2013, 2, 15)) == 2
    assert history.champion_at(DATASET, dt.date(2013, 3, 5)) == 3
    assert history.latest_event_date(DATASET) == "2013-03-01"


def test_champion_at_ignores_other_aliases_and_datasets(history):
    _champion(history, "2013-02-01", 2)
    history.add_alias_event(
        dataset=DATASET, model="flights-delay", alias="previous", logical_date="2013-02-10", after_version=1
    )
    history.add_alias_event(
        dataset="other", model="other", alias="champion", logical_date="2013-02-10", after_version=9
    )

    assert history.champion_at(DATASET, dt.date(2013, 2, 20)) == 2


def test_champion_at_takes_the_last_event_of_a_day(history):
    _champion(history, "2013-02-01", 2)
    _champion(history, "2013-02-01", 4)

    assert history.champion_at(DATASET, dt.date(2013, 2, 1)) == 4


def _holders(history: History, name: str) -> list[str]:
    with history.engine.connect() as conn:
        return [r.holder for r in conn.execute(sa.select(locks).where(locks.c.name == name))]


def test_lock_second_holder_waits_until_the_first_releases(history):
    held, release = threading.Event(), threading.Event()
    acquired_by_second: list[float] = []
    errors: list[BaseException] = []

    def first() -> None:
        with history.lock("promote:flights", "first", timeout_s=5):
            held.set()
            release.wait(10)

    def second() -> None:
        try:
            with history.lock("promote:flights", "second", timeout_s=10):
                acquired_by_second.append(time.monotonic())
                assert _holders(history, "promote:flights") == ["second"]
        except BaseException as exc:  # surfaced in the main thread below
            errors.append(exc)

    t1 = threading.Thread(target=first)
    t1.start()
    assert held.wait(10)
    t2 = threading.Thread(target=second)
    t2.start()
    time.sleep(0.6)
    assert acquired_by_second == [], "the second holder got the lock while the first still held it"
    assert _holders(history, "promote:flights") == ["first"]
    released_at = time.monotonic()
    release.set()
    t1.join(10)
    t2.join(10)

    assert errors == []
    assert len(acquired_by_second) == 1 and acquired_by_second[0] >= released_at
    assert _holders(history, "promote:flights") == []


def test_lock_times_out_with_promotion_locked_error(history):
    with history.lock("promote:flights", "first"):
        started = time.monotonic()
        with pytest.raises(PromotionLockedError, match="lock 'promote:flights' is held by another process"):
            with history.lock("promote:flights", "second", timeout_s=0.5):
                pytest.fail("acquired a lock that is held")
        assert time.monotonic() - started >= 0.5
        assert _holders(history, "promote:flights") == ["first"]


def test_lock_of_another_name_is_independent(history):
    with history.lock("promote:flights", "first"):
        with history.lock("promote:other", "second", timeout_s=0.5):
            assert _holders(history, "promote:other") == ["second"]


def test_stale_lock_is_taken_over(history):
    with history.engine.begin() as conn:
        conn.execute(
            locks.insert().values(
                name="promote:flights",
                holder="dead-worker",
                acquired_at=dt.datetime.now(dt.UTC) - dt.timedelta(hours=1),
            )
        )

    with history.lock("promote:flights", "alive", timeout_s=1, stale_s=900):
        assert _holders(history, "promote:flights") == ["alive"]
    assert _holders(history, "promote:flights") == []


def test_recent_lock_is_not_taken_over(history):
    with history.engine.begin() as conn:
        conn.execute(
            locks.insert().values(
                name="promote:flights",
                holder="busy-worker",
                acquired_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=60),
            )
        )

    with pytest.raises(PromotionLockedError, match="held by another process"):
        with history.lock("promote:flights", "alive", timeout_s=0.3, stale_s=900):
            pass
    assert _holders(history, "promote:flights") == ["busy-worker"]


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_lock_of_a_killed_holder_on_this_host_is_taken_over_at_once(history):
    with history.engine.begin() as conn:
        conn.execute(
            locks.insert().values(
                name="promote:flights",
                holder="killed-task",
                acquired_at=dt.datetime.now(dt.UTC),
                heartbeat_at=dt.datetime.now(dt.UTC),
                host=socket.gethostname(),
                pid=_dead_pid(),
                pid_started="1",
            )
        )
    started = time.monotonic()

    with history.lock("promote:flights", "retry", timeout_s=30, stale_s=900):
        assert _holders(history, "promote:flights") == ["retry"]

    assert time.monotonic() - started < 2
    assert _holders(history, "promote:flights") == []


def test_lock_whose_pid_now_belongs_to_another_process_is_taken_over(history):
    with history.engine.begin() as conn:
        conn.execute(
            locks.insert().values(
                name="promote:flights",
                holder="killed-long-ago",
                acquired_at=dt.datetime.now(dt.UTC),
                heartbeat_at=dt.datetime.now(dt.UTC),
                host=socket.gethostname(),
                pid=os.getpid(),
                pid_started="1",
            )
        )

    with history.lock("promote:flights", "retry", timeout_s=2, stale_s=900):
        assert _holders(history, "promote:flights") == ["retry"]


def test_lock_of_a_live_process_is_waited_for_and_named_in_the_error(history):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        from ml.liveness import process_started

        with history.engine.begin() as conn:
            conn.execute(
                locks.insert().values(
                    name="promote:flights",
                    holder="busy-task",
                    acquired_at=dt.datetime.now(dt.UTC),
                    heartbeat_at=dt.datetime.now(dt.UTC),
                    host=socket.gethostname(),
                    pid=sleeper.pid,
                    pid_started=process_started(sleeper.pid),
                )
            )
        with pytest.raises(PromotionLockedError, match=rf"'busy-task' \(pid {sleeper.pid} on "):
            with history.lock("promote:flights", "retry", timeout_s=0.5, stale_s=900):
                pass
    finally:
        sleeper.kill()
        sleeper.wait()
    with history.lock("promote:flights", "after", timeout_s=2, stale_s=900):  # and once it is gone: at once
        assert _holders(history, "promote:flights") == ["after"]


def test_lock_of_another_host_is_taken_over_when_its_heartbeat_stops(history):
    with history.engine.begin() as conn:
        conn.execute(
            locks.insert().values(
                name="promote:flights",
                holder="lost-worker",
                acquired_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5),
                heartbeat_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5),
                host="another-host",
                pid=1,
            )
        )

    with pytest.raises(PromotionLockedError):
        with history.lock("promote:flights", "retry", timeout_s=0.3, stale_s=60):
            pass
    with history.lock("promote:flights", "retry", timeout_s=2, stale_s=3):
        assert _holders(history, "promote:flights") == ["retry"]


def test_a_held_lock_keeps_its_heartbeat_so_it_is_not_taken_over(history):
    stale_s = 0.6
    with history.lock("promote:flights", "long-holder", stale_s=stale_s):
        with history.engine.begin() as conn:  # seen from another host: only the heartbeat tells it is alive
            conn.execute(locks.update().where(locks.c.name == "promote:flights").values(host="another-host"))
        time.sleep(stale_s * 3)
        with pytest.raises(PromotionLockedError):
            with history.lock("promote:flights", "waiter", timeout_s=0.5, stale_s=stale_s):
                pass
        assert _holders(history, "promote:flights") == ["long-holder"]
    assert _holders(history, "promote:flights") == []


def test_the_history_database_is_private(tmp_path):
    path = tmp_path / "new" / "history.db"
    History(f"sqlite:///{path}")

    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_database_from_before_the_monitors_gets_their_columns(tmp_path):
    """A history DB created by an earlier release (no monitor columns) is upgraded in place, rows kept."""
    import datetime as dt

    import sqlalchemy as sa

    from ml.history import History

    url = f"sqlite:///{tmp_path / 'old.db'}"
    old = sa.create_engine(url)
    with old.begin() as conn:
        conn.execute(
            sa.text(
                "CREATE TABLE dw_days (dataset VARCHAR(100) NOT NULL, day VARCHAR(10) NOT NULL, "
                "status VARCHAR(20), rows INTEGER, PRIMARY KEY (dataset, day))"
            )
        )
        conn.execute(
            sa.text(
                "INSERT INTO dw_days (dataset, day, status, rows) VALUES ('f', '2013-02-01', 'accepted', 900)"
            )
        )
    old.dispose()
    h = History(url)
    h.update_day(
        "f", dt.date(2013, 2, 1), attribution_ndcg=0.93, bias={"violation": False}, bias_violation=False
    )
    row = h.get_day("f", dt.date(2013, 2, 1))
    assert (row["status"], row["rows"], row["attribution_ndcg"], row["bias"]) == (
        "accepted",
        900,
        0.93,
        {"violation": False},
    )
    assert row["estimated_quality"] is None and row["labels_known_on"] is None


def test_add_reports_keeps_every_step_s_report_when_they_write_at_once(history):
    history.start_day(DATASET, DAY, status="accepted", reports={"validation": "v.html"})
    errors: list[BaseException] = []

    def step(name: str) -> None:
        try:
            for i in range(25):
                history.add_reports(DATASET, DAY, **{f"{name}{i}": f"{name}{i}.html"})
        except BaseException as exc:  # surfaced in the main thread below
            errors.append(exc)

    threads = [threading.Thread(target=step, args=(name,)) for name in ("monitor", "drift")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    reports = history.get_day(DATASET, DAY)["reports"]
    assert len(reports) == 51 and reports["validation"] == "v.html"  # none lost to the other writer
    assert reports["monitor24"] == "monitor24.html" and reports["drift0"] == "drift0.html"
    assert history.get_day(DATASET, DAY)["status"] == "accepted"  # other fields untouched


def test_add_reports_replaces_a_key_and_creates_a_missing_row(history):
    history.add_reports(DATASET, DAY, drift="a.html")
    history.add_reports(DATASET, DAY, drift="b.html", monitor="m.html")
    assert history.get_day(DATASET, DAY)["reports"] == {"drift": "b.html", "monitor": "m.html"}


def test_a_new_database_opened_by_two_processes_at_once(tmp_path):
    """Another process creates a table between create_all's check and its CREATE (two tasks of a day opening a
    new history side by side): the history still opens, with every table."""
    import sqlite3

    from ml.history import engine

    path = tmp_path / "race.db"

    def the_other_process_creates_it_first(target, connection, **_):
        with sqlite3.connect(path) as other:
            other.execute(
                "CREATE TABLE IF NOT EXISTS dw_locks (name VARCHAR(200) PRIMARY KEY, "
                "holder VARCHAR(200) NOT NULL, acquired_at DATETIME NOT NULL)"
            )

    sa.event.listen(locks, "before_create", the_other_process_creates_it_first)
    try:
        History(f"sqlite:///{path}")
    finally:
        sa.event.remove(locks, "before_create", the_other_process_creates_it_first)
        engine.cache_clear()
    assert {"dw_locks", "dw_days", "dw_models"} <= set(
        sa.inspect(sa.create_engine(f"sqlite:///{path}")).get_table_names()
    )
