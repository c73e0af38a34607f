"""`driftwatch` on the command line: exit codes, what it prints, and that it answers without MLflow.

Commands run in-process through `ml.cli.main` (capsys), inside the isolated `dw_env`; only the console
script itself and the "MLflow is down" case run as subprocesses, the latter so a hang ends in a timeout
instead of blocking the suite.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ml.history import History

DATASET = "flights"
DAY = dt.date(2013, 2, 5)
# the fields `driftwatch history` documents for each day (README / `--help`)
HISTORY_FIELDS = [
    "day",
    "status",
    "rows",
    "drift_share",
    "drifted_columns",
    "decision",
    "reason",
    "candidate_version",
    "promotion",
]
STATUS_TIMEOUT_S = 60  # an unreachable MLflow must not keep `status` from answering


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """`driftwatch ARGV` in this process: (exit code, stdout, stderr)."""
    from ml.cli import main

    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def closed_port() -> int:
    """A local port nothing listens on (connections are refused at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def add_champion(history: History, day: str, version: int, before: int | None = None) -> None:
    history.add_alias_event(
        dataset=DATASET,
        model="flights-delay",
        alias="champion",
        logical_date=day,
        before_version=before,
        after_version=version,
        reason="test",
        dag_run_id="t",
    )


@pytest.fixture
def history(settings) -> History:
    return History(settings.history_url)


@pytest.fixture
def good_file(flights_partitions: Path) -> Path:
    """The real 2013-02-05 partition file (read only: `validate` writes nothing)."""
    return flights_partitions / f"date={DAY.isoformat()}" / "part-0.parquet"


@pytest.fixture
def real_day(good_file: Path) -> pd.DataFrame:
    return pd.read_parquet(good_file)


# ---------------------------------------------------------------------------------------------- the script


def test_console_script_runs():
    script = Path(sys.executable).with_name("driftwatch")
    done = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=120)

    assert done.returncode == 0, done.stderr
    for command in ("validate", "history", "status", "champion"):
        assert command in done.stdout


# ---------------------------------------------------------------------------------------------- validate


def test_validate_good_file(settings, capsys, good_file):
    code, out, err = run(capsys, "validate", str(good_file))

    assert code == 0, out + err
    assert out.startswith(f"{good_file}: OK - ") and "expectations passed" in out
    assert err == ""
    # no champion yet: it says which checks it could not run, and why
    assert "not checked: unseen categories of ['carrier', 'origin', 'dest']: no champion yet" in out
    assert "not checked: that ['wind_gust'] still have values: no champion yet" in out


def test_validate_partition_folder(settings, capsys, good_file):
    code, out, _ = run(capsys, "validate", str(good_file.parent), "--json")

    assert code == 0
    result = json.loads(out)
    assert (result["success"], result["day"], result["rows"]) == (True, DAY.isoformat(), 877)
    assert result["files"] == [str(good_file)]


def test_validate_missing_column(settings, capsys, real_day, tmp_path):
    path = tmp_path / "incoming.parquet"  # no date= folder: the day comes from the data
    real_day.drop(columns=["visib"]).to_parquet(path, index=False)

    code, out, _ = run(capsys, "validate", str(path))

    assert code == 1
    assert out.startswith(f"{path}: FAILED (1 problems)")
    assert "'visib'" in out


@pytest.mark.parametrize("content", [b"", b"random", None], ids=["empty", "random-bytes", "no-such-file"])
def test_validate_unreadable_input_exits_2(settings, capsys, tmp_path, content):
    path = tmp_path / "date=2013-02-05" / "part-0.parquet"
    if content is not None:
        path.parent.mkdir()
        path.write_bytes(content if content != b"random" else np.random.default_rng(3).bytes(2048))

    code, out, err = run(capsys, "validate", str(path))

    assert code == 2
    assert err.startswith("error: ") and str(path) in err
    assert "Traceback" not in err and out == ""


def test_validate_uses_the_champion_reference_unless_told_not_to(
    settings, capsys, history, flights_frame, real_day, tmp_path, monkeypatch
):
    add_champion(history, "2013-01-31", 1)
    reference = flights_frame[
        (flights_frame["date"] >= "2013-01-01") & (flights_frame["date"] <= "2013-01-24")
    ]
    cache = settings.paths.models / DATASET / "v1" / "reference.parquet"
    cache.parent.mkdir(parents=True)
    reference[settings.columns].to_parquet(cache, index=False)
    path = tmp_path / "date=2013-02-05" / "part-0.parquet"
    path.parent.mkdir()
    real_day.assign(dest="QQQ").to_parquet(path, index=False)  # unseen only against the reference

    code, out, err = run(capsys, "validate", str(path))
    # a destination the champion never saw is novelty: reported, not a failure (validation.novelty)
    assert code == 0 and "novelty (not quarantined)" in out and "'dest'" in out and err == ""

    code, out, err = run(capsys, "validate", str(path), "--no-reference")
    assert code == 0 and "OK" in out and "novelty" not in out and err == ""

    monkeypatch.setenv("DRIFTWATCH__VALIDATION__NOVELTY", "quarantine")
    code, out, err = run(capsys, "validate", str(path))
    assert code == 1 and "'dest'" in out and err == ""


def test_validate_without_a_reachable_reference_checks_the_yaml_rules(settings, capsys, history, good_file):
    add_champion(history, "2013-01-31", 1)  # no model record, no cached reference

    code, out, err = run(capsys, "validate", str(good_file))

    assert code == 0 and "OK" in out
    assert err.startswith("warning: champion reference unavailable") and "YAML rules only" in err


# ---------------------------------------------------------------------------------------------- history


@pytest.fixture
def three_days(history: History) -> History:
    d1, d2, d3 = dt.date(2013, 2, 1), dt.date(2013, 2, 2), dt.date(2013, 2, 3)
    history.start_day(DATASET, d1, status="accepted", rows=900, champion_version=1)
    history.update_day(
        DATASET,
        d1,
        drift_share=0.1,
        drifted_columns=["temp"],
        decision="skip",
        reason="no retrain: drift share 0.10 < 0.5",
        quality={"roc_auc": 0.66, "log_loss": 0.5},
    )
    history.start_day(DATASET, d2, status="accepted", rows=880, champion_version=1)
    history.update_day(
        DATASET,
        d2,
        drift_share=0.62,
        drifted_columns=["temp", "dewp"],
        dataset_drift=True,
        decision="retrain",
        reason="retrain: drift share 0.62 >= 0.5; 4000 new rows",
        candidate_version=2,
        promotion="rejected",
        promotion_reason="no gain",
    )
    history.start_day(DATASET, d3, status="invalid", rows=0)
    history.update_day(DATASET, d3, status="quarantined", decision="quarantine", reason="batch quarantined")
    # re-running day 1 starts its row again: still one row for it
    history.start_day(DATASET, d1, status="accepted", rows=901, champion_version=1)
    return history


def test_history_json_has_one_row_per_day(settings, capsys, three_days):
    code, out, _ = run(capsys, "history", "--json")

    assert code == 0
    rows = json.loads(out)
    assert [r["day"] for r in rows] == ["2013-02-01", "2013-02-02", "2013-02-03"]
    for row in rows:
        assert set(HISTORY_FIELDS) <= row.keys()
        assert list(row) == list(rows[0])  # every row has the same fields, in the same order
    first, second, third = rows
    assert (first["status"], first["rows"], first["drift_share"], first["decision"]) == (
        "accepted",
        901,
        None,
        None,
    )
    assert second["drifted_columns"] == ["temp", "dewp"] and second["drift_share"] == 0.62
    assert (second["decision"], second["candidate_version"], second["promotion"]) == (
        "retrain",
        2,
        "rejected",
    )
    assert second["reason"].startswith("retrain: drift share 0.62")
    assert (third["status"], third["decision"]) == ("quarantined", "quarantine")


def test_history_csv_has_a_header_and_one_line_per_day(settings, capsys, three_days):
    code, out, _ = run(capsys, "history", "--csv")

    assert code == 0
    lines = out.splitlines()
    header = lines[0].split(",")
    assert set(HISTORY_FIELDS) <= set(header)
    assert len(lines) == 1 + 3
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["day"] for r in rows] == ["2013-02-01", "2013-02-02", "2013-02-03"]
    assert json.loads(rows[1]["drifted_columns"]) == ["temp", "dewp"]
    assert rows[1]["reason"] == "retrain: drift share 0.62 >= 0.5; 4000 new rows"


def test_history_table(settings, capsys, three_days):
    code, out, _ = run(capsys, "history")

    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == [
        "day",
        "status",
        "rows",
        "drift",
        "auc",
        "est",
        "ndcg",
        "bias",
        "decision",
        "cand",
        "promotion",
        "reason",
    ]
    assert len(lines) == 1 + 3
    assert lines[2].split()[:7] == ["2013-02-02", "accepted", "880", "0.62", "retrain", "2", "rejected"]
    assert lines[3].split()[:4] == ["2013-02-03", "quarantined", "0", "quarantine"]


def test_history_of_a_new_dataset_is_empty(settings, capsys):
    code, out, _ = run(capsys, "history", "--json")
    assert (code, json.loads(out)) == (0, [])


# ---------------------------------------------------------------------------------------------- champion


@pytest.fixture
def timeline(history: History) -> History:
    add_champion(history, "2013-01-31", 1)
    add_champion(history, "2013-02-20", 3, before=2)  # recorded first, but later in logical time
    add_champion(history, "2013-02-14", 2, before=1)
    return history


@pytest.mark.parametrize(
    ("at", "version"),
    [("2013-01-31", 1), ("2013-02-01", 1), ("2013-02-14", 2), ("2013-02-19", 2), ("2013-03-01", 3)],
)
def test_champion_at_a_date(settings, capsys, timeline, at, version):
    code, out, _ = run(capsys, "champion", "--at", at)
    assert (code, out.strip()) == (0, str(version))


def test_champion_now_and_as_json(settings, capsys, timeline):
    assert run(capsys, "champion")[:2] == (0, "3\n")
    code, out, _ = run(capsys, "champion", "--at", "2013-02-01", "--json")
    assert (code, json.loads(out)) == (0, {"dataset": DATASET, "at": "2013-02-01", "version": 1})


@pytest.mark.parametrize("with_events", [True, False], ids=["before-the-first", "never"])
def test_no_champion_exits_1(settings, capsys, history, with_events):
    if with_events:
        add_champion(history, "2013-01-31", 1)

    code, out, _ = run(capsys, "champion", "--at", "2013-01-15")

    assert code == 1
    assert "no champion" in out and "2013-01-15" in out


# ---------------------------------------------------------------------------------------------- status


@pytest.fixture
def operated(history: History) -> History:
    """A champion known to the history DB only (no MLflow model), and a few processed days."""
    add_champion(history, "2013-01-31", 1)
    history.put_model(
        DATASET,
        1,
        trained_on="2013-01-31",
        run_id="r",
        experiment_id="e",
        train_days=["2013-01-01"],
        holdout_days=["2013-01-31"],
        train_rows=20000,
        data_digest="x",
        holdout_metrics={"roc_auc": 0.65, "log_loss": 0.55, "accuracy": 0.7, "rows": 5000},
    )
    history.start_day(DATASET, dt.date(2013, 1, 31), status="accepted", rows=900)
    history.update_day(DATASET, dt.date(2013, 1, 31), decision="bootstrap", promotion="promoted")
    history.start_day(DATASET, dt.date(2013, 2, 1), status="accepted", rows=880)
    history.update_day(DATASET, dt.date(2013, 2, 1), dataset_drift=True, decision="skip")
    history.start_day(DATASET, dt.date(2013, 2, 2), status="quarantined", decision="quarantine")
    history.start_day(DATASET, dt.date(2013, 2, 3), status="accepted", error="detect_drift failed: boom")
    return history


def assert_status_from_history(st: dict) -> None:
    assert st["dataset"] == DATASET and st["registered_model"] == "flights-delay"
    champion = st["champion"]
    assert (champion["version"], champion["trained_on"], champion["promoted_on"]) == (
        1,
        "2013-01-31",
        "2013-01-31",
    )
    assert champion["holdout_metrics"]["roc_auc"] == 0.65
    counts = {
        k: st[k]
        for k in (
            "last_processed",
            "days_run",
            "accepted",
            "quarantined",
            "drift_days",
            "retrains",
            "promotions",
            "failures",
        )
    }
    assert counts == {
        "last_processed": "2013-02-03",
        "days_run": 4,
        "accepted": 3,
        "quarantined": 1,
        "drift_days": 1,
        "retrains": 0,  # the bootstrap is the first champion, not a retrain (as the replay counts)
        "promotions": 0,
        "failures": 1,
    }
    assert st["bootstrap"] == "2013-01-31"


def test_status_answers_quickly_when_mlflow_is_down(settings, operated):
    """MLflow's HTTP client retries a refused connection with back-off for minutes by default."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_HTTP_REQUEST_")}
    env["MLFLOW_TRACKING_URI"] = f"http://127.0.0.1:{closed_port()}"
    script = Path(sys.executable).with_name("driftwatch")
    started = time.monotonic()
    try:
        done = subprocess.run(
            [str(script), "status", "--json"],
            capture_output=True,
            text=True,
            env=env,
            timeout=STATUS_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"`driftwatch status` did not answer within {STATUS_TIMEOUT_S} s with MLflow unreachable")

    assert done.returncode == 0, done.stderr
    assert_status_from_history(json.loads(done.stdout))
    assert time.monotonic() - started < STATUS_TIMEOUT_S


def test_status_reports_mlflow_down_instead_of_no_alias(settings, capsys, operated, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{closed_port()}")
    # keep this test about the answer, not the retry delay (see the test above)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")

    code, out, _ = run(capsys, "status", "--json")

    assert code == 0
    st = json.loads(out)
    assert_status_from_history(st)
    assert st["champion"]["alias_version"] is None
    assert "alias_error" in st["champion"], "an unreachable MLflow was reported as 'no alias'"


def test_status_with_a_local_mlflow_store(settings, capsys, operated):
    assert settings.tracking_uri.startswith("sqlite:///")  # dw_env: a fresh store under tmp_path

    code, out, _ = run(capsys, "status", "--json")

    assert code == 0
    st = json.loads(out)
    assert_status_from_history(st)
    assert st["champion"]["alias_version"] is None  # the model was never registered in MLflow
    assert "alias_error" not in st["champion"]

    code, out, _ = run(capsys, "status")
    assert code == 0
    assert "champion           version 1 (trained 2013-01-31, promoted 2013-01-31)" in out
    assert "AUC 0.6500" in out and "quarantined 1" in out


def test_status_without_a_champion(settings, capsys):
    code, out, _ = run(capsys, "status", "--json")
    assert code == 0 and json.loads(out)["champion"] is None
    assert run(capsys, "status", "--require-champion")[0] == 1


# ---------------------------------------------------------------------------------------------- bad config


@pytest.mark.parametrize(
    "argv", [["status"], ["status", "--json"], ["history"], ["champion"]], ids=lambda a: " ".join(a)
)
def test_bad_config_is_a_clean_message(dw_env, capsys, monkeypatch, argv):
    monkeypatch.setenv("DRIFTWATCH__THRESHOLDS__DRIFT_SHARE", "7")

    code, out, err = run(capsys, *argv)

    assert code == 1
    assert err.startswith("error: ") and "thresholds.drift_share" in err and "Got 7" in err
    assert "Traceback" not in err and out == ""
