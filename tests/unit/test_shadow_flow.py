"""A challenger in shadow through the daily flow, in process on real flights (no services), with
`promotion.mode: shadow`: a challenger that passes the offline gate gets the alias `shadow`, not
`champion`; it scores the next days' batches beside the champion; no other challenger trains meanwhile; once
`min_shadow_rows` labelled rows are in, the paired bootstrap on those live rows decides. A weak challenger
(one split) let through the offline gate on purpose is rejected on the live rows; with the live bar lowered
as well it is promoted, the champion from the next day, and watched. The pure verdicts:
tests/unit/test_shadow_judge.py."""

from __future__ import annotations

import datetime as dt
import json
import shutil

import pytest

from ml import data as lake
from ml import live, runner
from ml.day import RunParams

pytestmark = pytest.mark.slow  # real training: make test runs it, make test-unit does not

WINDOW = [dt.date(2013, 1, 1) + dt.timedelta(days=i) for i in range(10)]
STARTED = dt.date(2013, 1, 11)  # a weak challenger goes to shadow, and is rejected on the live rows
AFTER = [STARTED + dt.timedelta(days=i) for i in range(1, 4)]
STARTED2 = dt.date(2013, 1, 15)  # another, with the live bar lowered too: promoted from shadow
AFTER2 = [STARTED2 + dt.timedelta(days=i) for i in range(1, 4)]
WEAK = {"max_iter": 1, "max_depth": 1, "learning_rate": 0.01}
FORCED = RunParams(force_retrain=True, min_delta=-1.0, model_params=WEAK)


@pytest.fixture(scope="module")
def shadowed(tmp_path_factory, flights_partitions):
    from tests.conftest import _clear_caches, isolate

    mp = pytest.MonkeyPatch()
    isolate(mp, tmp_path_factory.mktemp("shadow") / "driftwatch")
    for key, value in {
        "DRIFTWATCH__ORIGINAL_WINDOW__END": "2013-01-10",
        "DRIFTWATCH__THRESHOLDS__BOOTSTRAP_RESAMPLES": "200",
        "DRIFTWATCH__THRESHOLDS__LOGLOSS_TOLERANCE": "10",
        "DRIFTWATCH__EVALUATION__SEGMENT_TOLERANCE": "1",
        "DRIFTWATCH__MONITORING__ATTRIBUTION__ROWS": "300",
        "DRIFTWATCH__PROMOTION__MODE": "shadow",
        "DRIFTWATCH__PROMOTION__MIN_SHADOW_ROWS": "1500",
        # manual approval as well: in one process nobody is asked, approve_challenger approves automatically
        "DRIFTWATCH__PROMOTION__APPROVAL": "manual",
    }.items():
        mp.setenv(key, value)
    from ml.config import load_settings
    from ml.history import History

    s = load_settings("flights")
    for day in WINDOW + [STARTED, *AFTER, STARTED2, *AFTER2]:
        shutil.copytree(flights_partitions / f"date={day.isoformat()}", s.partition_dir(day))
    for day in WINDOW:
        runner.run_day_or_raise(s.name, day)
    started = runner.run_day_or_raise(s.name, STARTED, params=FORCED)
    outs = {day: runner.run_day_or_raise(s.name, day) for day in AFTER}
    mp.setenv("DRIFTWATCH__THRESHOLDS__MIN_DELTA", "-1")  # the live bar as low as the offline one
    _clear_caches()
    started2 = runner.run_day_or_raise(s.name, STARTED2, params=FORCED)
    outs2 = {day: runner.run_day_or_raise(s.name, day) for day in AFTER2}
    yield s, History(s.history_url), started, outs, started2, outs2
    mp.undo()
    _clear_caches()


@pytest.fixture(scope="module")
def rejected(shadowed):
    return shadowed[:4]


@pytest.fixture(scope="module")
def promoted(shadowed):
    s, h, _, _, started2, outs2 = shadowed
    return s, h, started2, outs2


def _verdicts(outs):
    return {d: (o.output("watch_champion")["shadow"] or {}) for d, o in outs.items()}


def test_a_challenger_that_passed_the_gate_goes_to_shadow_not_champion(rejected):
    s, h, started, outs = rejected
    promoted = started.output("promote_challenger")
    assert promoted["shadow"] is True and promoted["promoted"] is False and promoted["version"] == 2
    from ml.registry import client

    assert h.champion_at(s.name, STARTED) == 1
    row = h.get_day(s.name, STARTED)
    assert row["promotion"] == "shadow" and "in shadow" in row["promotion_reason"]
    assert started.states["approve_challenger"] == "success"
    assert row["approval"]["approved"] and row["approval"]["by"].startswith("auto (an in-process run")
    [event] = h.alias_events(s.name, "shadow")[:1]
    assert (event["before_version"], event["after_version"], event["logical_date"]) == (
        None,
        2,
        STARTED.isoformat(),
    )
    tags = client(s).get_model_version(s.registered_model, "2").tags
    assert tags["driftwatch.decision"] in ("shadow", "rejected")  # rejected by the end of the test
    assert tags["driftwatch.shadow.since"] == STARTED.isoformat()
    assert tags["driftwatch.shadow.champion"] == "1"


def test_the_shadow_scores_the_same_rows_and_no_challenger_trains_meanwhile(rejected):
    s, h, started, outs = rejected
    first = AFTER[0]
    theirs = lake.read_predictions(s, first, live.CHALLENGER_FILE)
    served = lake.read_predictions(s, first)
    assert theirs is not None and served is not None and len(theirs) == len(served)
    assert set(theirs["champion_version"]) == {2} and set(served["champion_version"]) == {1}
    assert (theirs["score"] != served["score"]).any()
    v = _verdicts(outs)[first]
    assert v["verdict"] == "shadowing" and v["rows"] < 1500, v
    row = h.get_day(s.name, first)
    assert row["shadow_verdict"] == "shadowing" and row["decision"] == "skip"
    assert "is in shadow" in row["reason"]
    assert outs[first].states.get("train_challenger") != "success"


def test_a_worse_shadow_is_rejected_on_the_live_rows(rejected):
    s, h, started, outs = rejected
    verdicts = _verdicts(outs)
    ended = [d for d in AFTER if verdicts[d].get("verdict") in ("promote", "reject")]
    assert len(ended) == 1, {d.isoformat(): v.get("reason") for d, v in verdicts.items()}
    day = ended[0]
    v = verdicts[day]
    assert v["verdict"] == "reject" and v["rows"] >= 1500 and v["ci"]["low"] <= 0, v
    assert "rejected" in v["reason"]
    # the champion never moved; the shadow alias is gone, the audit says why
    assert all(h.champion_at(s.name, d) == 1 for d in AFTER)
    [last] = [e for e in h.alias_events(s.name, "shadow") if e["before_version"] == 2]
    assert (last["after_version"], last["logical_date"], last["actor"]) == (
        None,
        day.isoformat(),
        "driftwatch-shadow",
    )
    assert last["reason"].startswith("shadow rejected: ")
    from ml.promotion import _alias_version, alias_drift
    from ml.registry import client

    c = client(s)
    assert _alias_version(c, s, "shadow") is None and alias_drift(s, h) == []
    tags = c.get_model_version(s.registered_model, "2").tags
    assert tags["driftwatch.shadow.verdict"] == "rejected" and tags["driftwatch.decision"] == "rejected"
    assert float(tags["live.rows"]) >= 1500 and float(tags["live.ci_low"]) <= 0
    # the live log-loss guardrail is measured and kept as evidence
    assert (
        v["guardrail"]["name"] == "log_loss" and v["guardrail"]["tolerance"] == s.thresholds.logloss_tolerance
    )
    assert float(tags["live.log_loss_change"]) == pytest.approx(v["guardrail"]["change"])
    assert h.get_day(s.name, day)["shadow_verdict"] == "reject"
    alerts = [json.loads(line) for line in s.paths.alerts.read_text().splitlines()]
    shadow = [(a["verdict"], a["version"]) for a in alerts if a["kind"] == "shadow" and a["version"] == 2]
    assert shadow == [("started", 2), ("reject", 2)]
    # after it, the days go on without a shadow
    for d in AFTER:
        if d > day:
            assert outs[d].output("watch_champion")["shadow"] is None


def test_a_rerun_of_the_deciding_day_changes_nothing(rejected):
    s, h, started, outs = rejected
    day = next(d for d in AFTER if _verdicts(outs)[d].get("verdict") == "reject")
    later = [r["day"] for r in h.days(s.name) if r["day"] > day.isoformat()]
    events = len(h.alias_events(s.name))
    alerts = s.paths.alerts.read_text()
    again = runner.run_day_or_raise(s.name, day).output("watch_champion")["shadow"]
    assert later and "not acted on" in again["reason"] and again["acted"] is False  # the days after ran
    assert len(h.alias_events(s.name)) == events and s.paths.alerts.read_text() == alerts


def test_a_better_shadow_is_promoted_from_the_next_day_and_watched(promoted):
    s, h, started, outs = promoted
    verdicts = _verdicts(outs)
    day = next(d for d in AFTER2 if verdicts[d].get("verdict") == "promote")
    assert verdicts[day]["ci"]["low"] > -1
    assert h.champion_at(s.name, day - dt.timedelta(days=1)) == 1 and h.champion_at(s.name, day) == 3
    row = h.get_day(s.name, day)
    assert row["promotion"] == "promoted" and row["decision"] == "skip" and "promoted today" in row["reason"]
    [event] = [e for e in h.alias_events(s.name, "champion") if e["after_version"] == 3]
    assert event["logical_date"] == day.isoformat() and event["before_version"] == 1
    assert event["reason"].startswith("shadow: ")
    from ml.promotion import _alias_version, alias_drift
    from ml.registry import client

    c = client(s)
    assert _alias_version(c, s, "champion") == 3 and _alias_version(c, s, "shadow") is None
    assert alias_drift(s, h) == []
    tags = c.get_model_version(s.registered_model, "3").tags
    assert (
        tags["driftwatch.shadow.verdict"] == "promoted" and tags["driftwatch.promoted_on"] == day.isoformat()
    )
    for d in AFTER2:
        if d > day:  # the next day is served by it and watched against the one it replaced
            assert outs[d].output("score_batch")["champion_version"] == 3
            w = outs[d].output("watch_champion")
            assert w["watching"] and (w["champion"], w["replaced"]) == (3, 1)
    alerts = [json.loads(line) for line in s.paths.alerts.read_text().splitlines()]
    assert [a["version"] for a in alerts if a["kind"] == "promotion"] == [1, 3]  # the first champion, then it
