"""The watch of a new champion through the daily flow, in process on real flights (no services): a worse
challenger is promoted on purpose (a one-split model, the gate's minimum gain and guardrails opened by the
run's params and overrides), the replaced champion scores the next days in shadow, and `watch_champion`
rolls the new one back once the labelled rows show it worse beyond the noise: audited, the MLflow alias
moved, no retrain that day, an alert, the old champion serving the next day; a re-run of the day changes
nothing. The pure verdicts: tests/unit/test_watch.py."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from ml import data as lake
from ml import runner
from ml.day import RunParams

pytestmark = pytest.mark.slow  # real training: make test runs it, make test-unit does not

WINDOW = [dt.date(2013, 1, 1) + dt.timedelta(days=i) for i in range(10)]
PROMOTED = dt.date(2013, 1, 11)
AFTER = [PROMOTED + dt.timedelta(days=i) for i in range(1, 5)]
WEAK = {"max_iter": 1, "max_depth": 1, "learning_rate": 0.01}


@pytest.fixture(scope="module")
def watched(tmp_path_factory, flights_partitions):
    from tests.conftest import _clear_caches, isolate

    mp = pytest.MonkeyPatch()
    home = tmp_path_factory.mktemp("watch") / "driftwatch"
    isolate(mp, home)
    mp.setenv("DRIFTWATCH__ORIGINAL_WINDOW__END", "2013-01-10")
    mp.setenv("DRIFTWATCH__THRESHOLDS__BOOTSTRAP_RESAMPLES", "200")
    mp.setenv("DRIFTWATCH__THRESHOLDS__LOGLOSS_TOLERANCE", "10")
    mp.setenv("DRIFTWATCH__EVALUATION__SEGMENT_TOLERANCE", "1")
    mp.setenv("DRIFTWATCH__MONITORING__ATTRIBUTION__ROWS", "300")
    from ml.config import load_settings
    from ml.history import History

    s = load_settings("flights")
    import shutil

    for day in WINDOW + [PROMOTED, *AFTER]:
        src = flights_partitions / f"date={day.isoformat()}"
        shutil.copytree(src, s.partition_dir(day))
    for day in WINDOW:
        runner.run_day_or_raise(s.name, day)
    runner.run_day_or_raise(
        s.name, PROMOTED, params=RunParams(force_retrain=True, min_delta=-1.0, model_params=WEAK)
    )
    outs = {day: runner.run_day_or_raise(s.name, day) for day in AFTER}
    yield s, History(s.history_url), outs
    mp.undo()
    _clear_caches()


def test_the_worse_champion_was_promoted_then_watched(watched):
    s, h, outs = watched
    assert h.champion_at(s.name, PROMOTED) == 2  # the weak one, promoted on purpose
    first = outs[AFTER[0]].output("watch_champion")
    assert first["watching"] and (first["champion"], first["replaced"]) == (2, 1)
    # the replaced champion scored the watched day in shadow, the same rows as the champion
    shadow = lake.read_predictions(s, AFTER[0], lake.SHADOW_FILE)
    served = lake.read_predictions(s, AFTER[0])
    assert shadow is not None and served is not None and len(shadow) == len(served)
    assert set(shadow["champion_version"]) == {1} and set(served["champion_version"]) == {2}


def test_it_is_rolled_back_once_the_rows_show_it_worse(watched):
    s, h, outs = watched
    verdicts = {d: outs[d].output("watch_champion") for d in AFTER}
    rolled = [d for d in AFTER if verdicts[d]["rolled_back"]]
    assert len(rolled) == 1, {d.isoformat(): v["reason"] for d, v in verdicts.items()}
    day = rolled[0]
    assert "below 0" in verdicts[day]["reason"] or "worse" in verdicts[day]["reason"]
    # the day's history row keeps the judgement; no challenger is trained on the rollback day
    row = h.get_day(s.name, day)
    assert row["watch_verdict"] == "roll_back" and row["watch"]["rows"] >= s.promotion.watch_min_rows
    assert row["decision"] == "skip" and "rolled back" in row["reason"]
    # one audited rollback: champion back to 1 from the next day on, the MLflow alias with it
    events = [e for e in h.alias_events(s.name, "champion") if e.get("actor") == "driftwatch-watch"]
    assert [(e["before_version"], e["after_version"], e["logical_date"]) for e in events] == [
        (2, 1, day.isoformat())
    ]
    assert h.champion_at(s.name, day - dt.timedelta(days=1)) == 2
    assert h.champion_at(s.name, day) == 1
    from ml.promotion import champion_alias

    assert champion_alias(s) == 1
    # the next day is served by the restored champion, with nothing left to watch
    later = [d for d in AFTER if d > day]
    for d in later:
        assert outs[d].output("score_batch")["champion_version"] == 1
        assert outs[d].output("watch_champion")["watching"] is False
    alerts = [json.loads(line) for line in s.paths.alerts.read_text().splitlines()]
    assert [a["rolled_back"] for a in alerts if a["kind"] == "rollback"] == [2]
    from ml.status import format_status, status

    st = status(s, registry=False)
    assert st["rollbacks"] == 1 and st["champion"]["version"] == 1
    assert "rolled back by the watch 1" in format_status(st)


def test_a_rerun_of_the_rollback_day_changes_nothing(watched):
    s, h, outs = watched
    day = next(d for d in AFTER if outs[d].output("watch_champion")["rolled_back"])
    events = len(h.alias_events(s.name))
    again = runner.run_day_or_raise(s.name, day).output("watch_champion")
    assert again["rolled_back"] and again["verdict"] == "roll_back"
    assert len(h.alias_events(s.name)) == events
    assert h.champion_at(s.name, day) == 1


def test_a_retry_after_a_kill_between_audit_and_tags_completes_the_tags(watched):
    """The rollback recorded its audit rows, then the try was killed before it tagged the version: the retry
    finds the rows, does not roll back again, and sets the rolled-back tags."""
    s, h, outs = watched
    from ml import registry
    from ml.promotion import ROLLED_BACK_TAGS

    day = next(d for d in AFTER if outs[d].output("watch_champion")["rolled_back"])
    c = registry.client(s)
    for key in ROLLED_BACK_TAGS:
        c.delete_model_version_tag(s.registered_model, "2", key)
    events = len(h.alias_events(s.name))
    runner.run_day_or_raise(s.name, day)
    tags = c.get_model_version(s.registered_model, "2").tags
    assert tags[ROLLED_BACK_TAGS[0]] == "true" and tags[ROLLED_BACK_TAGS[2]] == day.isoformat()
    assert "worse" in tags[ROLLED_BACK_TAGS[1]] or "below 0" in tags[ROLLED_BACK_TAGS[1]]
    assert len(h.alias_events(s.name)) == events and h.champion_at(s.name, day) == 1
