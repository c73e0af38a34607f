"""The replay harness: policy schedules, the metrics, and short real replays through the daily flow."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import pytest

from ml import replay, replay_jobs, replay_report
from ml.exceptions import ConfigError

D = dt.date(2013, 3, 1)


def _day(i: int, **fields) -> dict:
    row = {
        "day": (D + dt.timedelta(days=i)).isoformat(),
        "status": "accepted",
        "champion": 1,
        "auc": None,
        "accuracy": None,
        "drift_share": None,
        "quality_drop": None,
        "decision": "skip",
        "trained": False,
        "bootstrap": False,
        "version": None,
        "promoted": False,
        "rejected": False,
        "failed": False,
        "train_cpu_s": 0.0,
        "reason": None,
    }
    row.update(fields)
    return row


# ---- policies (their decisions: tests/unit/test_policy.py) ---------------------------------------------
@pytest.mark.parametrize(
    ("name", "every", "reads_signals", "label"),
    [
        ("never", None, False, "never retrain"),
        ("daily", 1, False, "every day"),
        ("every-1", 1, False, "every day"),
        ("every-7", 7, False, "every 7 days"),
        ("every-30", 30, False, "every 30 days"),
        ("drift", None, True, "drift-triggered"),
    ],
)
def test_policies_parse(name, every, reads_signals, label):
    p = replay.parse_policy(name)
    assert (getattr(p, "every", None), p.reads_signals, p.label) == (every, reads_signals, label)


@pytest.mark.parametrize("name", ["weekly", "every-0", "every-x", ""])
def test_unknown_policy_is_rejected_with_the_choices(name):
    with pytest.raises(ConfigError, match=r"unknown policy .*Use one of \['never', 'daily'"):
        replay.parse_policy(name)


def test_costliest_policies_run_first():
    names = ["never", "every-30", "drift", "every-7", "daily"]
    ordered = sorted(names, key=lambda n: replay.cost_rank(replay.parse_policy(n)))
    assert ordered == ["daily", "drift", "every-7", "every-30", "never"]


# ---- metrics --------------------------------------------------------------------------------------------
def test_summary_means_counts_and_periods():
    rows = [
        _day(
            0,
            champion=None,
            decision="bootstrap",
            trained=True,
            bootstrap=True,
            promoted=True,
            train_cpu_s=7.0,
        ),
        _day(1, auc=0.70, accuracy=0.80),
        _day(2, auc=None, accuracy=0.90),  # one-class day: no AUC, and left out of both means
        _day(3, auc=0.60, accuracy=0.70, trained=True, promoted=True, train_cpu_s=2.0, decision="retrain"),
        _day(4, status="quarantined", champion=2),
        _day(5, auc=0.80, accuracy=0.60, trained=True, rejected=True, train_cpu_s=3.0, decision="retrain"),
    ]
    result = {
        "policy": "every-2",
        "label": "every 2 days",
        "days": rows,
        "promotions": [{"day": rows[3]["day"], "worse": True}, {"day": rows[5]["day"], "worse": False}],
    }
    m = replay.summarize(result)
    assert m["days_scored"] == 3
    assert m["mean_auc"] == pytest.approx((0.70 + 0.60 + 0.80) / 3)
    assert m["mean_accuracy"] == pytest.approx((0.80 + 0.70 + 0.60) / 3)
    assert (m["retrains"], m["promotions"], m["rejected"], m["quarantined"]) == (2, 1, 1, 1)
    assert m["train_cpu_s"] == pytest.approx(5.0)  # the bootstrap is not a retrain
    assert m["worse_next_days"] == 1
    assert (m["rolled_back"], m["worse_kept"]) == (0, 1)
    # the watch rolled the worse promotion back two days later: no longer left in place
    watched = {
        **result,
        "days": [*rows[:5], {**rows[5], "rolled_back": 3}],
        "promotions": [{**result["promotions"][0], "rolled_back": True}, result["promotions"][1]],
    }
    m = replay.summarize(watched)
    assert (m["worse_next_days"], m["rolled_back"], m["worse_kept"]) == (1, 1, 0)
    later = replay.summarize(result, start=D + dt.timedelta(days=4))
    assert (later["days_scored"], later["retrains"], later["mean_auc"], later["worse_next_days"]) == (
        1,
        1,
        0.80,
        0,
    )
    early = replay.summarize(result, end=D + dt.timedelta(days=2))
    assert (early["days_scored"], early["retrains"]) == (1, 0)
    # another policy quarantined day 5 under its champion: both are compared on days 1 and 3 only
    other = {**result, "days": [*rows[:5], _day(5, status="quarantined", champion=3)]}
    same = replay.common_days([result, other])
    assert same == {rows[1]["day"], rows[3]["day"]}
    m = replay.summarize(result, scored_on=same)
    assert (m["days_scored"], m["mean_auc"]) == (2, pytest.approx((0.70 + 0.60) / 2))
    assert "| every 2 days | 2 | 1 | 0.6500 |" in replay_report.format_table([m])


def test_next_days_effect_compares_on_the_same_days():
    worse = replay.next_days_effect("2013-03-01", 3, 4, [0.70, 0.72], [0.69, 0.70])
    assert worse["worse"] and worse["delta"] == pytest.approx(-0.015) and worse["days"] == 2
    better = replay.next_days_effect("2013-03-01", 3, 4, [0.70], [0.71])
    assert better["worse"] is False
    assert replay.next_days_effect("2013-03-01", 3, 4, [], [])["worse"] is None
    with pytest.raises(ValueError, match="2 AUCs of the old champion, 1 of the new"):
        replay.next_days_effect("2013-03-01", 3, 4, [0.7, 0.7], [0.7])


def test_detection_delay_and_false_alarms():
    t = {"drift_share": 0.5, "quality_drop": 0.05}
    rows = [_day(i, drift_share=0.1, quality_drop=0.0) for i in range(10)]
    rows[2].update(drift_share=0.6)  # a false alarm before the onset
    rows[3].update(status="quarantined")  # not a batch that was monitored
    rows[7].update(quality_drop=0.08, decision="retrain")  # flagged 2 batches after the onset (day 5)
    rows[8].update(drift_share=0.9)
    result = {"thresholds": t, "days": rows}
    out = replay.detection(result, D + dt.timedelta(days=5))
    assert out["drift_free_batches"] == 4  # days 0, 1, 2, 4
    assert out["false_alarms"] == 1 and out["false_alarm_days"] == [rows[2]["day"]]
    assert out["false_alarms_per_100"] == pytest.approx(25.0)
    assert (out["delay"], out["detected_on"], out["retrain_delay"]) == (2, rows[7]["day"], 2)
    clean = replay.detection(result, None)
    assert clean["drift_free_batches"] == 9 and clean["false_alarms"] == 3 and clean["delay"] is None
    quiet = replay.detection({"thresholds": t, "days": [_day(i, drift_share=0.0) for i in range(4)]}, D)
    assert quiet["delay"] is None and quiet["batches_after_onset"] == 4


def test_choose_thresholds_best_auc_within_the_retrain_budget():
    ref = {"retrains": 90}
    cands = [
        {"thresholds": {"q": 1}, "mean_auc": 0.700, "retrains": 20},  # over budget (9)
        {"thresholds": {"q": 2}, "mean_auc": 0.690, "retrains": 9},
        {"thresholds": {"q": 3}, "mean_auc": 0.6898, "retrains": 5},  # within the tie band, fewer retrains
        {"thresholds": {"q": 4}, "mean_auc": 0.680, "retrains": 2},
    ]
    assert replay.choose_thresholds(cands, reference=ref)["thresholds"] == {"q": 3}
    assert replay.choose_thresholds(cands, reference=ref, budget_share=0.5)["thresholds"] == {"q": 1}
    assert replay.choose_thresholds(cands[:1], reference={"retrains": 10})["thresholds"] == {"q": 1}
    with pytest.raises(ValueError, match="no candidates"):
        replay.choose_thresholds([], reference=ref)


def test_replace_section_keeps_the_rest_of_the_document():
    doc = "# Benchmarks\n\n## Drift check\n\ntext\n"
    once = replay_report.replace_section(doc, "replay", "table 1")
    assert (
        once.startswith(doc.rstrip("\n"))
        and "<!-- bench:replay:start -->\ntable 1\n<!-- bench:replay:end -->" in once
    )
    twice = replay_report.replace_section(once + "\n## After\n", "replay", "table 2")
    assert "table 1" not in twice and "table 2" in twice and twice.endswith("## After\n")
    assert twice.count("bench:replay:start") == 1


def test_link_lake_gives_a_replay_its_own_partitions(tmp_path):
    source = tmp_path / "src"
    for day in ("2013-01-01", "2013-01-02"):
        (source / f"date={day}").mkdir(parents=True)
        (source / f"date={day}" / "part-0.parquet").write_bytes(b"PAR1")
        (source / f"date={day}" / "_predictions.parquet").write_bytes(b"scores")
    target = tmp_path / "lake"
    days = [dt.date(2013, 1, 1), dt.date(2013, 1, 2), dt.date(2013, 1, 3)]
    assert replay_jobs.link_lake(source, target, days) == 2
    copied = target / "date=2013-01-01" / "part-0.parquet"
    assert (
        copied.read_bytes() == b"PAR1" and not (target / "date=2013-01-01" / "_predictions.parquet").exists()
    )
    # moving the replay's file (a quarantine) leaves the source where it was
    copied.rename(tmp_path / "moved.parquet")
    assert (source / "date=2013-01-01" / "part-0.parquet").is_file()


def test_isolated_env_points_every_store_at_the_replay_home(tmp_path, monkeypatch):
    monkeypatch.setenv("DRIFTWATCH_DB_URL", "postgresql://prod/driftwatch")
    monkeypatch.setenv("DRIFTWATCH_ALERT_TARGET", "https://hooks.example.com/x")
    env = replay_jobs.isolated_env(tmp_path / "h", tmp_path / "l", {"thresholds.drift_share": 0.4})
    assert env["DRIFTWATCH_DB_URL"] == f"sqlite:///{tmp_path / 'h' / 'driftwatch.db'}"
    assert env["MLFLOW_TRACKING_URI"].startswith(f"sqlite:///{tmp_path / 'h'}")
    assert "DRIFTWATCH_ALERT_TARGET" not in env and env["DRIFTWATCH_LAKE"] == str(tmp_path / "l")
    assert env["DRIFTWATCH__THRESHOLDS__DRIFT_SHARE"] == "0.4"


# ---- real replays ---------------------------------------------------------------------------------------
@pytest.fixture
def short_window(dw_env, monkeypatch, settings, add_partitions):
    """flights with a 10-day original window (Jan 1-10), and the real partitions of Jan 1-16."""
    monkeypatch.setenv("DRIFTWATCH__ORIGINAL_WINDOW__END", "2013-01-10")
    monkeypatch.setenv("DRIFTWATCH__THRESHOLDS__BOOTSTRAP_RESAMPLES", "200")
    from ml.config import load_settings
    from ml.day import settings_for

    settings_for.cache_clear()
    s = load_settings("flights")
    days = [dt.date(2013, 1, 1) + dt.timedelta(days=i) for i in range(16)]
    add_partitions(s, days)
    return s, days


@pytest.mark.slow
def test_scheduled_replay_on_real_partitions(short_window):
    from ml.data import model_frame, read_batch
    from ml.evaluate import auc
    from ml.history import History
    from ml.registry import load_model
    from ml.train import predict_proba

    s, days = short_window
    result = replay.replay("flights", replay.parse_policy("every-3"), days)
    rows = {r["day"]: r for r in result["days"]}
    assert all(rows[d.isoformat()]["decision"] == "collect" for d in days[:9])
    assert rows["2013-01-10"]["bootstrap"] and rows["2013-01-10"]["promoted"]
    trained = [r["day"] for r in result["days"] if r["trained"] and not r["bootstrap"]]
    assert trained == ["2013-01-13", "2013-01-16"]
    for day in trained:
        assert rows[day]["promoted"] != rows[day]["rejected"] and rows[day]["train_cpu_s"] > 0
        assert "every 3 days: scheduled retrain" in rows[day]["reason"]
    h = History(s.history_url)
    for d in days[10:]:
        row = rows[d.isoformat()]
        # the champion in force after D-1 scored day D, and its AUC is that model's on the day's labels
        assert row["champion"] == h.champion_at(s.name, d - dt.timedelta(days=1)) is not None
        frame = read_batch(s, d)
        expected = auc(
            model_frame(s, frame)[1].to_numpy(), predict_proba(load_model(s, row["champion"]), s, frame)
        )
        assert row["auc"] == pytest.approx(expected, abs=1e-9)
    summary = replay.summarize(result)
    assert summary["days_scored"] == 6 and summary["retrains"] == 2
    assert len(result["promotions"]) == summary["promotions"]
    for p in result["promotions"]:
        promoted_on = dt.date.fromisoformat(p["day"])
        assert p["days"] == len([d for d in days if promoted_on < d <= promoted_on + dt.timedelta(days=7)])
        assert (p["worse"] is None) == (p["days"] == 0)


@pytest.mark.slow
def test_drift_replay_uses_the_platforms_decision(short_window):
    from ml.history import History

    s, days = short_window
    result = replay.replay("flights", replay.parse_policy("drift"), days[:12])
    h = History(s.history_url)
    for r in result["days"][10:]:
        stored = h.get_day(s.name, dt.date.fromisoformat(r["day"]))
        assert r["drift_share"] is not None and r["drift_share"] == stored["drift_share"]
        assert r["decision"] == stored["decision"] in ("skip", "retrain")
        assert r["trained"] == (r["decision"] == "retrain")
    assert not any(r["trained"] for r in result["days"][10:])  # in the cooldown after the bootstrap
    _drift_reports_render_when_wanted(s, h, result)


@pytest.mark.slow
def test_a_retrain_logs_the_rendered_drift_report_as_its_evidence(short_window, monkeypatch):
    from ml.config import load_settings
    from ml.day import settings_for
    from ml.history import History

    _, days = short_window
    for key, value in (
        ("COOLDOWN_DAYS", "0"),
        ("MIN_NEW_DAYS", "0"),
        ("MIN_NEW_ROWS", "0"),
        ("QUALITY_DROP", "-10"),
    ):
        monkeypatch.setenv(f"DRIFTWATCH__THRESHOLDS__{key}", value)
    settings_for.cache_clear()
    s = load_settings("flights")
    result = replay.replay("flights", replay.parse_policy("drift"), days[:12])
    assert [r["trained"] for r in result["days"][10:]] == [True, True], [
        r.get("reason") for r in result["days"][10:]
    ]
    _drift_reports_render_when_wanted(s, History(s.history_url), result)


def _drift_reports_render_when_wanted(s, h, result):
    """The drift step keeps numbers; the report is rendered on a retrain day (the challenger's evidence) and
    on demand, with the numbers the day was decided on, once; old rendered reports are pruned."""
    import dataclasses

    from mlflow import MlflowClient

    from ml import drift_report

    monitored = [r for r in result["days"][10:] if r["drift_share"] is not None]
    for r in monitored:
        day = dt.date.fromisoformat(r["day"])
        summary = drift_report.summary(s, day)
        assert summary["drift_share"] == r["drift_share"] and summary["html_path"] is None
        html = drift_report.path(s, day)
        assert html.is_file() == r["trained"], r  # rendered as evidence on a retrain day only
        if r["trained"]:
            run = h.get_model(s.name, h.get_day(s.name, day)["candidate_version"])["run_id"]
            logged = [f.path for f in MlflowClient().list_artifacts(run, "trigger")]
            assert "trigger/drift.html" in logged and "trigger/drift.json" in logged
    day = dt.date.fromisoformat(monitored[-1]["day"])
    html = drift_report.render_day(s, h, day)
    first = html.stat().st_mtime_ns
    assert "drawDashboard" in html.read_text() and html.stat().st_size > 1e6
    assert drift_report.render_day(s, h, day).stat().st_mtime_ns == first  # served, not rendered again
    short = dataclasses.replace(s, reports=dataclasses.replace(s.reports, keep_rendered_days=3))
    earlier = [drift_report.path(s, dt.date.fromisoformat(r["day"])) for r in monitored[:-1]]
    exist = [p for p in earlier if p.is_file()]
    assert sorted(drift_report.prune(short, day + dt.timedelta(days=3))) == exist, (earlier, monitored)
    assert html.exists()  # 3 days old: kept
    assert drift_report.prune(short, day + dt.timedelta(days=4), keep=[day]) == [] and html.exists()
    assert drift_report.prune(short, day + dt.timedelta(days=4)) == [html] and not html.exists()
    assert drift_report.summary(s, day) is not None  # the numbers stay


@pytest.mark.slow
def test_run_jobs_isolates_each_replay_in_its_own_process(tmp_path, dw_env, monkeypatch):
    """A synthetic stream replayed in a subprocess: its own home and lake, the source lake untouched."""
    import yaml

    from ml.config import BUNDLED_DATASETS, load_settings
    from ml.datasets import synthetic

    raw = yaml.safe_load((BUNDLED_DATASETS / "synthetic_abrupt.yaml").read_text())
    raw["name"], raw["original_window"] = "tiny", {"start": "2024-01-01", "end": "2024-01-06"}
    raw["holdout_days"] = 2
    raw["synthetic"].update(days=9, rows_per_day=300, drift={"kind": "none"})
    raw["thresholds"]["min_new_rows"] = 100
    datasets = tmp_path / "datasets"
    datasets.mkdir()
    (datasets / "tiny.yaml").write_text(yaml.safe_dump(raw))
    monkeypatch.setenv("DRIFTWATCH_DATASETS", str(datasets))
    s = load_settings("tiny")
    synthetic.prepare(s, progress=False)
    before = sorted(p.name for p in s.lake_dir.rglob("*"))
    job = replay_jobs.Job(
        "tiny-daily", "tiny", "daily", dt.date(2024, 1, 1), dt.date(2024, 1, 9), datasets=datasets
    )
    results = replay_jobs.run_jobs([job], tmp_path / "runs", echo=lambda m: None)
    out = results["tiny-daily"]
    assert [r["day"] for r in out["days"] if r["trained"] and not r["bootstrap"]] == [
        "2024-01-07",
        "2024-01-08",
        "2024-01-09",
    ]
    assert out["settings"]["home"] == str((tmp_path / "runs" / "tiny-daily" / "home").resolve())
    assert (tmp_path / "runs" / "tiny-daily" / "home" / "driftwatch.db").is_file()
    assert sorted(p.name for p in s.lake_dir.rglob("*")) == before  # no scores, nothing moved in the source
    assert out["process_wall_s"] >= out["wall_s"] > 0
    assert all(r["wall_s"] > 0 for r in out["days"])
    json.dumps(out)

    # a replay that starts inside the original window still finds the window's earlier days, like a
    # backfill of that range does: the first champion is trained on the whole window
    late = replay_jobs.run_jobs(
        [
            replay_jobs.Job(
                "tiny-late", "tiny", "never", dt.date(2024, 1, 4), dt.date(2024, 1, 8), datasets=datasets
            )
        ],
        tmp_path / "runs",
        echo=lambda m: None,
    )["tiny-late"]
    boot = [r for r in late["days"] if r["bootstrap"]]
    assert [(r["day"], r["failed"], r["promoted"]) for r in boot] == [("2024-01-06", False, True)]
    assert [r["day"] for r in late["days"]] == [f"2024-01-0{i}" for i in range(4, 9)]
    from ml.history import History

    (first,) = History(f"sqlite:///{tmp_path / 'runs' / 'tiny-late' / 'home' / 'driftwatch.db'}").models(
        "tiny"
    )
    assert first["train_days"] + first["holdout_days"] == [f"2024-01-0{i}" for i in range(1, 7)]


def test_run_jobs_refuses_a_range_without_partitions(tmp_path, dw_env):
    job = replay_jobs.Job("bad", "flights", "every-7", dt.date(2013, 1, 1), dt.date(2013, 1, 2))
    with pytest.raises(FileNotFoundError, match="no partitions of flights"):
        replay_jobs.run_jobs([job], tmp_path / "runs", echo=lambda m: None)
    assert not os.path.exists(Path(tmp_path / "runs" / "bad" / replay_jobs.RESULT_FILE))


def test_a_failed_replay_says_what_failed(tmp_path):
    log = tmp_path / "replay.log"
    log.write_text(
        "2026-12-06 INFO ml.runner: 1949-02-01 detect_drift\n"
        "Traceback (most recent call last):\n"
        '  File "x.py", line 1, in <module>\n'
        "mlflow.exceptions.MlflowException: Invalid value -658627200000 for parameter 'metrics[0].timestamp'\n"
        "2026-12-06 INFO ml.replay: stopped\n"
    )
    assert replay_jobs.last_error(log) == (
        "mlflow.exceptions.MlflowException: Invalid value -658627200000 for parameter 'metrics[0].timestamp'"
    )
    assert replay_jobs.last_error(tmp_path / "missing.log") is None
