"""The model monitors as tasks of the daily flow, on real flight partitions, in process (no services):
bias drift, feature-attribution drift, performance estimated without labels, delayed labels.

flights with a 10-day original window (Jan 1-10): the first champion is trained on Jan 10, Jan 11.. are
monitored. Each test replays the days with the platform's own decisions (`ml.replay`, policy drift), which
runs the flow the DAG runs (ml.runner).
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys

import pytest

from ml import replay
from ml.config import REPO_ROOT

pytestmark = pytest.mark.slow  # real training or real processes: make test runs it, make test-unit does not

DAYS = [dt.date(2013, 1, 1) + dt.timedelta(days=i) for i in range(16)]
FIRST_MONITORED = dt.date(2013, 1, 11)


def _setup(monkeypatch, add_partitions, **env):
    monkeypatch.setenv("DRIFTWATCH__ORIGINAL_WINDOW__END", "2013-01-10")
    monkeypatch.setenv("DRIFTWATCH__THRESHOLDS__BOOTSTRAP_RESAMPLES", "200")
    monkeypatch.setenv("DRIFTWATCH__MONITORING__ATTRIBUTION__ROWS", "500")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    from ml.config import load_settings
    from ml.day import settings_for

    settings_for.cache_clear()
    s = load_settings("flights")
    add_partitions(s, DAYS)
    return s


def _rows(s):
    from ml.history import History

    return {r["day"]: r for r in History(s.history_url).days(s.name)}


@pytest.fixture
def same_day_labels(dw_env, monkeypatch, add_partitions):
    s = _setup(monkeypatch, add_partitions)
    result = replay.replay("flights", replay.parse_policy("drift"), DAYS, progress=False)
    return s, result, _rows(s)


@pytest.fixture
def delayed_labels(dw_env, monkeypatch, add_partitions):
    s = _setup(
        monkeypatch,
        add_partitions,
        DRIFTWATCH__LABEL_DELAY_DAYS="3",
        DRIFTWATCH__THRESHOLDS__COOLDOWN_DAYS="0",
        DRIFTWATCH__THRESHOLDS__MIN_NEW_ROWS="0",
        DRIFTWATCH__THRESHOLDS__MIN_NEW_DAYS="0",
        DRIFTWATCH__THRESHOLDS__QUALITY_DROP="-0.05",
    )  # any estimate triggers a retrain
    assert s.label_delay_days == 3
    result = replay.replay("flights", replay.parse_policy("drift"), DAYS, progress=False)
    return s, result, _rows(s)


def test_every_monitored_day_carries_the_three_monitors(same_day_labels):
    s, _, rows = same_day_labels
    for day in DAYS:
        row = rows[day.isoformat()]
        if day < FIRST_MONITORED:
            assert row["estimated_quality"] is None and row["attribution_ndcg"] is None
            continue
        est, real = row["estimated_quality"], row["quality"]
        assert 0.5 < est["roc_auc"] < 0.9 and 0.5 < est["accuracy"] < 1.0, est
        assert real["roc_auc"] is not None and row["labels_known_on"] == day.isoformat()
        assert 0.0 <= row["attribution_ndcg"] <= 1.0
        assert row["attribution_violation"] == (row["attribution_ndcg"] < s.monitoring.attribution.min_ndcg)
        bias = row["bias"]
        assert set(bias["columns"]) == {"origin", "carrier"}
        origin = bias["segments"]["origin"]["segments"]
        assert set(origin) == {"EWR", "JFK", "LGA"}  # ~300 flights each a day: above min_rows
        assert all(v["accuracy"] is not None for v in origin.values())  # labels came with the batch
        assert row["bias_violation"] == bias["violation"]
        report = s.report_dir(day) / "model_monitor.html"
        text = report.read_text()
        assert "Model monitor" in text and f"{row['attribution_ndcg']:.2f}" in text
        assert row["reports"]["monitor"] == str(report)


def test_the_estimate_tracks_the_realized_auc_when_the_concept_holds(same_day_labels):
    _, _, rows = same_day_labels
    pairs = [
        (r["estimated_quality"]["roc_auc"], r["quality"]["roc_auc"])
        for d, r in rows.items()
        if d >= FIRST_MONITORED.isoformat()
    ]
    error = sum(abs(e - r) for e, r in pairs) / len(pairs)
    assert error < 0.06, pairs  # a day's realized AUC on ~900 flights is itself +-0.02


def test_history_json_carries_the_monitors(same_day_labels):
    out = subprocess.run(
        [sys.executable, "-m", "ml.cli", "history", "--json"],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        check=True,
    )
    rows = {r["day"]: r for r in json.loads(out.stdout)}
    day = rows[FIRST_MONITORED.isoformat()]
    for key in (
        "estimated_quality",
        "quality",
        "bias",
        "bias_violation",
        "attribution_ndcg",
        "attribution_violation",
        "labels_known_on",
    ):
        assert day[key] is not None, key
    assert day["bias"]["columns"]["origin"]["positive_rate_gap"] is not None


def test_delayed_labels_are_not_read_before_they_arrive(delayed_labels):
    s, result, rows = delayed_labels
    for day in DAYS:
        if day < FIRST_MONITORED:
            continue
        row = rows[day.isoformat()]
        arrival = day + dt.timedelta(days=3)
        if arrival <= DAYS[-1]:  # its labels arrived within the replay: realized beside the estimate
            assert row["labels_known_on"] == arrival.isoformat(), row["day"]
            assert row["quality"]["roc_auc"] is not None and row["estimated_quality"]["roc_auc"] is not None
            carrier = row["bias"]["segments"]["carrier"]["segments"]
            assert any(v["accuracy"] is not None for v in carrier.values())
        else:  # not yet: the estimate only
            assert row["quality"] is None and row["labels_known_on"] is None, row["day"]
            assert row["estimated_quality"]["roc_auc"] is not None
            carrier = row["bias"]["segments"]["carrier"]["segments"]
            assert all(v["accuracy"] is None for v in carrier.values())


def test_delayed_labels_decide_from_the_estimate_and_train_only_on_labelled_days(delayed_labels):
    s, result, rows = delayed_labels
    from ml.history import History

    monitored = [r for d, r in sorted(rows.items()) if d >= FIRST_MONITORED.isoformat()]
    estimated_triggers = 0
    for row in monitored:
        drop = row["estimated_quality_drop"]
        assert drop is not None, row["day"]
        if drop >= -0.05:  # quality_drop -0.05: the estimate is a trigger, named in the reason
            assert "estimated AUC drop (CBPE" in row["reason"], row["reason"]
            estimated_triggers += row["decision"] == "retrain"
    assert estimated_triggers, [(r["day"], r["estimated_quality_drop"], r["reason"]) for r in monitored]
    for model in History(s.history_url).models(s.name):
        trained_on = dt.date.fromisoformat(model["trained_on"])
        used = [dt.date.fromisoformat(x) for x in model["train_days"] + model["holdout_days"]]
        late = [d for d in used if d > s.original_end and (trained_on - d).days < 3]
        assert not late, f"v{model['version']} on {trained_on} used days whose labels had not arrived: {late}"


def test_a_bias_violation_can_trigger_a_retrain(dw_env, monkeypatch, add_partitions):
    s = _setup(
        monkeypatch,
        add_partitions,
        DRIFTWATCH__MONITORING__BIAS__MAX_POSITIVE_RATE_GAP_CHANGE="0",
        DRIFTWATCH__MONITORING__BIAS__MAX_ACCURACY_GAP_CHANGE="0",
        DRIFTWATCH__MONITORING__BIAS__ACTION="retrain",
        DRIFTWATCH__THRESHOLDS__COOLDOWN_DAYS="0",
        DRIFTWATCH__THRESHOLDS__MIN_NEW_ROWS="0",
        DRIFTWATCH__THRESHOLDS__MIN_NEW_DAYS="0",
        DRIFTWATCH__THRESHOLDS__QUALITY_DROP="1.0",
        DRIFTWATCH__THRESHOLDS__DRIFT_SHARE="1.0",
    )
    replay.replay("flights", replay.parse_policy("drift"), DAYS[:13], progress=False)
    rows = _rows(s)
    flagged = [r for d, r in sorted(rows.items()) if r.get("bias_violation")]
    assert flagged, "with no tolerance, a wider gap than the reference's on some day is a violation"
    first = flagged[0]
    assert first["decision"] == "retrain" and "bias drift (" in first["reason"], first["reason"]
    calm = [
        r
        for d, r in sorted(rows.items())
        if d >= FIRST_MONITORED.isoformat() and r["bias_violation"] is False
    ]
    for r in calm:  # nothing else can trigger (drift share 1.0, AUC drop 1.0)
        assert r["decision"] == "skip", (r["day"], r["reason"])


def test_one_monitoring_run_a_day_carries_both_monitors(same_day_labels):
    s, _, _ = same_day_labels
    from ml.registry import client, experiment_id

    c = client(s)
    runs = c.search_runs([experiment_id(s, "monitoring")], max_results=1000)
    days = sorted(r.data.tags["driftwatch.logical_date"] for r in runs)
    assert days == [d.isoformat() for d in DAYS if d >= FIRST_MONITORED]  # one run a monitored day
    run = next(r for r in runs if r.data.tags["driftwatch.logical_date"] == FIRST_MONITORED.isoformat())
    # detect_drift's and monitor_model's metrics, logged by each step into the same run
    assert {
        "drift_share",
        "batch_roc_auc",
        "estimated_roc_auc",
        "estimated_accuracy",
        "attribution_ndcg",
        "bias_origin_positive_rate_gap",
        "bias_carrier_accuracy_gap",
    } <= set(run.data.metrics)
    assert {a.path for a in c.list_artifacts(run.info.run_id)} == {"drift", "monitor"}
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert [a.path for a in c.list_artifacts(run.info.run_id, "monitor")] == ["monitor/model_monitor.html"]


_CREATE_RUNS = """
import datetime as dt, pathlib, sys, time
from ml.day import settings_for
from ml.history import History
from ml.registry import client, experiment_id, monitoring_run

s = settings_for("flights"); h = History(s.history_url)
client(s).search_experiments(); experiment_id(s, "monitoring")  # warm: both start from the same line
ready, go = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
for i in range(4):
    day = dt.date(2013, 2, 1) + dt.timedelta(days=i)
    (ready / f"{sys.argv[3]}-{i}").touch()
    while not (go / str(i)).exists():
        time.sleep(0.002)
    print(day, monitoring_run(s, h, day, 1), flush=True)
"""


def test_two_steps_creating_the_day_s_run_at_once_get_the_same_run(dw_env, settings, tmp_path):
    import time

    from ml.registry import experiment_id

    experiment_id(settings, "monitoring")  # the store exists before the day's first task, as in the DAG
    ready, go = tmp_path / "ready", tmp_path / "go"
    ready.mkdir()
    go.mkdir()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _CREATE_RUNS, str(ready), str(go), name],
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        for name in ("monitor", "detect")
    ]
    for i in range(4):
        deadline = time.monotonic() + 120
        while not all((ready / f"{n}-{i}").exists() for n in ("monitor", "detect")):
            assert time.monotonic() < deadline, "the processes did not start"
            time.sleep(0.01)
        (go / str(i)).touch()
    outs = [p.communicate(timeout=120)[0].split("\n") for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert outs[0] == outs[1] and len(set(outs[0]) - {""}) == 4  # the same run for each day, one per day
