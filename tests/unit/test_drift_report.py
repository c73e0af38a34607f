"""Drift reports rendered on demand (ml/drift_report.py): retention, its setting, the CLI, and the API
server's Evidently warm-up. Rendering itself runs on real replays (test_replay.py) and in the real API server
(tests/integration/test_ui.py)."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from ml import drift_report
from ml.exceptions import ConfigError

DAY = dt.date(2013, 3, 1)


def _files(settings, days):
    for day in days:
        folder = settings.report_dir(day)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "drift.html").write_text("<html>report</html>")
        (folder / "drift.json").write_text("{}")


def test_prune_deletes_rendered_reports_older_than_the_setting_and_keeps_the_numbers(settings):
    days = [DAY - dt.timedelta(days=n) for n in range(6)]
    _files(settings, days)
    (settings.paths.reports / settings.name / "history.html").write_text("not a day")
    short = dataclasses.replace(settings, reports=dataclasses.replace(settings.reports, keep_rendered_days=2))
    gone = drift_report.prune(short, DAY, keep=[days[4]])
    assert sorted(gone) == sorted(drift_report.path(settings, d) for d in (days[3], days[5]))
    for day in days:
        assert drift_report.path(settings, day).exists() == (day not in (days[3], days[5]))
        assert (settings.report_dir(day) / "drift.json").exists()
    forever = dataclasses.replace(
        settings, reports=dataclasses.replace(settings.reports, keep_rendered_days=0)
    )
    assert drift_report.prune(forever, DAY + dt.timedelta(days=400)) == []


def test_the_setting_is_checked(dw_env, tmp_path):
    from ml.config import BUNDLED_DATASETS, load_settings

    text = (BUNDLED_DATASETS / "flights.yaml").read_text()
    assert load_settings(BUNDLED_DATASETS / "flights.yaml").reports.keep_rendered_days == 30
    bad = tmp_path / "flights.yaml"
    bad.write_text(text + "\nreports: {keep_rendered_days: -1}\n")
    with pytest.raises(ConfigError, match=r"reports.keep_rendered_days: expected 0 \(keep for ever\)"):
        load_settings(bad)
    bad.write_text(text + "\nreports: {keep_days: 3}\n")
    with pytest.raises(ConfigError, match=r"reports: unknown keys \['keep_days'\]"):
        load_settings(bad)


def test_a_day_without_numbers_cannot_be_rendered(settings, capsys):
    from ml.cli import main
    from ml.history import History

    with pytest.raises(FileNotFoundError, match="no drift result"):
        drift_report.render_day(settings, History(settings.history_url), DAY)
    assert main(["report", DAY.isoformat(), "--dataset", "flights"]) == 2
    assert "no drift result (drift.json) to render" in capsys.readouterr().err


def test_evidently_is_warmed_in_the_api_server_only(monkeypatch):
    from ml import ui, warmup

    calls = []
    monkeypatch.setattr(warmup, "evidently_report", lambda: calls.append(1))
    assert ui._warm_in_api_server(["airflow", "scheduler"]) is None
    monkeypatch.setenv("DRIFTWATCH_UI_WARM", "0")
    assert ui._warm_in_api_server(["airflow", "api-server"]) is None
    monkeypatch.delenv("DRIFTWATCH_UI_WARM")
    ui._warm_in_api_server(["airflow", "api-server"]).join(10)
    assert calls == [1]
