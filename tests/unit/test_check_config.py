"""`driftwatch check-config`: a dry run that says, before the first backfill, what the defaults would do with
a new dataset: quarantines, novelty, drift flags (calibrated, and Evidently's 0.1 for comparison), and the
settings that depend on the batch size. Nothing is written."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from ml.cli import main
from ml.config import load_settings
from ml.datasets import synthetic

NAME = "synthetic_abrupt"


@pytest.fixture
def small_batches(dw_env, monkeypatch):
    """The bundled synthetic stream cut to 35 days of 50 rows (no drift), written to the lake."""
    for key, value in {
        "SYNTHETIC__DAYS": "35",
        "SYNTHETIC__ROWS_PER_DAY": "50",
        "SYNTHETIC__DRIFT": "{kind: none}",
    }.items():
        monkeypatch.setenv(f"DRIFTWATCH__{key}", value)
    s = load_settings(NAME)
    synthetic.prepare(s, progress=False)
    return s


def test_a_yaml_made_for_large_batches_is_told_what_its_small_batches_would_do(small_batches, capsys):
    s = small_batches

    assert main(["check-config", NAME, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)

    # synthetic_abrupt.yaml asks for >= 100 rows a day and 3,000 new rows: wrong for 50-row days
    assert report["days_checked"] == 35 - 21 and report["quarantined"] == 14
    assert any("'rows'" in r or "table" in r for r, _ in report["quarantine_reasons"])
    warnings = " ".join(report["warnings"])
    assert "validation.min_rows 100 is above half the median batch (50 rows)" in warnings
    assert "thresholds.min_new_rows 3000 takes about 60 days of 50 rows" in warnings
    assert not (s.paths.home / "driftwatch.db").exists()  # a dry run writes nothing
    assert not s.paths.reports.exists()


def test_with_the_defaults_small_batches_pass_and_are_rarely_flagged(small_batches, capsys, monkeypatch):
    monkeypatch.setenv("DRIFTWATCH__VALIDATION__MIN_ROWS", "1")
    monkeypatch.setenv("DRIFTWATCH__THRESHOLDS__MIN_NEW_ROWS", "0")

    assert main(["check-config", NAME]) == 0
    out = capsys.readouterr().out

    assert "quarantined        0 of 14" in out
    assert "21 reference days, each against the rest of the reference" in out
    report = json.loads((main(["check-config", NAME, "--json"]), capsys.readouterr().out)[1])
    assert report["flagged"] <= 1  # drift-free days
    assert report["flagged_evidently_defaults"] >= 12  # 0.1 is under a 50-row day's noise
    assert all(t["threshold"] > 0.1 for t in report["thresholds"].values())
    assert report["settings"]["thresholds.min_new_days"] == load_settings(NAME).holdout_days


def test_a_dataset_without_its_original_window_says_what_to_do(dw_env, capsys):
    assert main(["check-config", NAME]) == 2
    err = capsys.readouterr().err
    assert "no partition in the original window 2024-01-01..2024-01-21" in err
    assert f"driftwatch prepare {NAME}" in err


def test_days_after_the_window_are_the_ones_checked(small_batches):
    from ml import check_config

    report = check_config.check(small_batches, days=5)

    assert [d["day"] for d in report["days"]] == [
        (dt.date(2024, 1, 22) + dt.timedelta(days=i)).isoformat() for i in range(5)
    ]
