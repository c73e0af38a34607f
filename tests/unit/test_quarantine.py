"""The ground rule, per bad input: a bad batch is quarantined, never deleted, never trained on, and the
champion stays as it was.

Each case breaks the real 2013-02-05 partition one way, then drives the pipeline's own step functions
(the `validate_batch` and `quarantine_batch` tasks) as the DAG would, without Airflow and without MLflow: the
champion (version 1) exists only in the history database, and its reference sample is the local cache file
`ml.registry.artifact` reads before it would ask MLflow. Message wording is pinned in test_validation.py;
here only the outcome is: where the bytes went, what the history says, who serves, what may be trained on.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ml import data as lake
from ml.day import Day, settings_for
from ml.exceptions import BatchMissingError
from ml.history import History
from ml.tasks import quarantine_batch, validate_batch, wait_for_batch
from ml.train import usable_days

DATASET = "flights"
DAY = dt.date(2013, 2, 5)
NEXT_DAY = DAY + dt.timedelta(days=1)
CHAMPION_DATE = "2013-01-31"
TRAIN_DAYS = lake.daterange(dt.date(2013, 1, 1), dt.date(2013, 1, 24))
HOLDOUT_DAYS = lake.daterange(dt.date(2013, 1, 25), dt.date(2013, 1, 31))
FILE_NAME = "part-0.parquet"


# ---------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def real_day(flights_partitions: Path) -> pd.DataFrame:
    """The real partition of 2013-02-05, exactly as `driftwatch prepare` wrote it."""
    return pd.read_parquet(flights_partitions / f"date={DAY.isoformat()}" / FILE_NAME)


@pytest.fixture(scope="module")
def reference(flights_frame: pd.DataFrame, real_day: pd.DataFrame) -> pd.DataFrame:
    """The champion's training rows: the real January 1-24."""
    first, last = TRAIN_DAYS[0].isoformat(), TRAIN_DAYS[-1].isoformat()
    rows = flights_frame[(flights_frame["date"] >= first) & (flights_frame["date"] <= last)]
    return rows[list(real_day.columns)].reset_index(drop=True)


@pytest.fixture
def champion(settings, reference: pd.DataFrame, monkeypatch: pytest.MonkeyPatch) -> History:
    """Version 1 is champion after 2013-01-31, known to the history DB only; MLflow is never needed."""
    # settings_for is lru_cached: the steps must see this test's environment, not an earlier test's
    assert settings_for(DATASET).paths.home == settings.paths.home

    history = History(settings.history_url)
    history.add_alias_event(
        dataset=DATASET,
        model=settings.registered_model,
        alias="champion",
        logical_date=CHAMPION_DATE,
        before_version=None,
        after_version=1,
        reason="test",
        dag_run_id="t",
    )
    history.put_model(
        DATASET,
        1,
        trained_on=CHAMPION_DATE,
        run_id="r",
        experiment_id="e",
        train_days=[d.isoformat() for d in TRAIN_DAYS],
        holdout_days=[d.isoformat() for d in HOLDOUT_DAYS],
        train_rows=len(reference),
        data_digest="x",
        holdout_metrics={"roc_auc": 0.65},
    )
    cache = settings.paths.models / DATASET / "v1" / "reference.parquet"
    cache.parent.mkdir(parents=True)
    reference.to_parquet(cache, index=False)

    def no_mlflow(_settings) -> None:
        raise AssertionError("the reference must come from the local cache, not MLflow")

    monkeypatch.setattr("ml.registry._configure", no_mlflow)
    return history


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_partition(settings, content: pd.DataFrame | bytes, day: dt.date = DAY) -> Path:
    partition = settings.partition_dir(day)
    partition.mkdir(parents=True, exist_ok=True)
    path = partition / FILE_NAME
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        content.to_parquet(path, index=False)
    return path


def alerts(settings, kind: str, day: dt.date) -> list[dict]:
    if not settings.paths.alerts.is_file():
        return []
    events = [json.loads(line) for line in settings.paths.alerts.read_text().splitlines() if line.strip()]
    return [e for e in events if e["kind"] == kind and day.isoformat() in e["message"]]


# ---------------------------------------------------------------------------------------------- bad inputs


def _wrong_dtype(day: pd.DataFrame) -> pd.DataFrame:
    day.loc[0, "distance"] = 1020
    day["distance"] = day["distance"].map(lambda x: f"{int(x):,}")  # '1,020', '529', ...
    return day


def _unseen(day: pd.DataFrame) -> pd.DataFrame:
    rows = day.index[: len(day) // 5]  # 20% > the 5% allowance
    day.loc[rows, "dest"] = np.where(np.arange(len(rows)) % 2, "QQQ", "ZZZ")
    return day


def _out_of_range(day: pd.DataFrame) -> pd.DataFrame:
    day.loc[:4, "distance"] = 99999
    return day


def _non_binary(day: pd.DataFrame) -> pd.DataFrame:
    day["delayed"] = np.arange(len(day)) % 3  # 0/1/2
    return day


def _other_day(day: pd.DataFrame) -> pd.DataFrame:
    day.loc[:9, "date"] = "2013-02-06"
    return day


def _all_null(day: pd.DataFrame) -> pd.DataFrame:
    day["temp"] = np.nan
    return day


# (id, build from a copy of the real day -> frame or raw bytes, fragments the summary and reason must name)
BAD_INPUTS: list[tuple[str, Callable[[pd.DataFrame], pd.DataFrame | bytes], tuple[str, ...]]] = [
    ("empty-file", lambda d: b"", ("empty",)),
    ("zero-rows", lambda d: d.iloc[:0], ("0 rows",)),
    ("missing-column", lambda d: d.drop(columns=["visib"]), ("'visib'",)),
    (
        "renamed-column",
        lambda d: d.rename(columns={"distance": "distance_miles"}),
        ("'distance'", "'distance_miles'"),
    ),
    ("extra-column", lambda d: d.assign(gate="A1"), ("'gate'",)),
    ("wrong-dtype", _wrong_dtype, ("'distance'", "'1,020'")),
    ("all-null-feature", _all_null, ("'temp'",)),
    ("out-of-range", _out_of_range, ("'distance'", "99999")),
    ("duplicate-rows", lambda d: pd.concat([d, d.iloc[:5]], ignore_index=True), ("duplicate",)),
    ("missing-label", lambda d: d.drop(columns=["delayed"]), ("'delayed'",)),
    ("non-binary-label", _non_binary, ("'delayed'", "binary")),
    ("corrupt-parquet", lambda d: np.random.default_rng(7).bytes(4096), ("parquet",)),
    ("rows-of-another-day", _other_day, ("'date'", "2013-02-06")),
]


def _normalised(summary: str, *paths: Path | str) -> str:
    """A summary with the checked file's location replaced, to compare the lake and quarantine runs."""
    for p in sorted((str(p) for p in paths), key=len, reverse=True):
        summary = summary.replace(p, "<file>")
    return summary


@pytest.mark.parametrize(("build", "fragments"), [c[1:] for c in BAD_INPUTS], ids=[c[0] for c in BAD_INPUTS])
def test_bad_batch_is_quarantined_never_deleted_never_trained_on(
    settings, champion: History, real_day: pd.DataFrame, build, fragments
):
    path = write_partition(settings, build(real_day.copy()))
    digest = sha256(path)
    quarantine_dir = settings.quarantine_dir(DAY)

    checked = validate_batch.run(Day.of(DATASET, DAY, "run"))

    assert checked["ok"] is False
    assert checked["champion_version"] == 1 and checked["requarantine"] is False
    for fragment in fragments:
        assert fragment in checked["summary"], f"{fragment!r} not in {checked['summary']!r}"
    assert champion.get_day(DATASET, DAY)["status"] == "invalid"

    moved = quarantine_batch.run(Day.of(DATASET, DAY, "run"), checked)

    # quarantined: gone from the lake, byte for byte in the quarantine area, with the reason beside it
    assert Path(moved["path"]) == quarantine_dir
    assert not lake.partition_exists(settings, DAY)
    assert lake.batch_files(settings.partition_dir(DAY)) == []
    assert lake.quarantined_files(settings, DAY) == [quarantine_dir / FILE_NAME]
    assert sha256(quarantine_dir / FILE_NAME) == digest
    reason = json.loads((quarantine_dir / lake.REASON_FILE).read_text())
    assert reason["day"] == DAY.isoformat() and reason["dataset"] == DATASET and reason["dag_run_id"] == "run"
    for fragment in fragments:
        assert fragment in reason["failures"]
    row = champion.get_day(DATASET, DAY)
    assert (row["status"], row["decision"]) == ("quarantined", "quarantine")
    assert str(quarantine_dir) in row["reason"] and fragments[0] in row["reason"]
    assert row["champion_version"] == 1
    # the champion stays as it was
    assert champion.champion_at(DATASET, DAY) == 1
    assert Day.of(DATASET, NEXT_DAY).serving_champion() == 1
    assert len(champion.alias_events(DATASET)) == 1
    assert [m["version"] for m in champion.models(DATASET)] == [1]
    # never trained on, neither by the day's own run nor by any later one
    assert DAY not in usable_days(settings, champion, DAY)
    assert DAY not in usable_days(settings, champion, NEXT_DAY)
    # the step itself raises no alert: the DAG's notifier does, from this return value (tests/unit/test_alerts.py)
    assert alerts(settings, "quarantine", DAY) == []

    # re-running the day: the lake partition is gone, the quarantined copy is checked again
    assert wait_for_batch.run(Day.of(DATASET, DAY))
    again = validate_batch.run(Day.of(DATASET, DAY, "rerun"))
    assert again["ok"] is False and again["requarantine"] is True
    lake_file = settings.partition_dir(DAY) / FILE_NAME
    assert _normalised(again["summary"], quarantine_dir / FILE_NAME) == _normalised(
        checked["summary"], lake_file, lake_file.relative_to(settings.paths.lake)
    )

    quarantine_batch.run(Day.of(DATASET, DAY, "rerun"), again)

    assert lake.batch_files(quarantine_dir) == [quarantine_dir / FILE_NAME]
    assert sha256(quarantine_dir / FILE_NAME) == digest
    assert not list(quarantine_dir.glob("attempt-*"))
    assert json.loads((quarantine_dir / lake.REASON_FILE).read_text()) == reason  # first evidence kept
    row = champion.get_day(DATASET, DAY)
    assert (row["status"], row["decision"]) == ("quarantined", "quarantine")
    assert [r["day"] for r in champion.days(DATASET)] == [DAY.isoformat()]
    assert champion.champion_at(DATASET, NEXT_DAY) == 1
    assert DAY not in usable_days(settings, champion, NEXT_DAY)


def test_novel_values_are_accepted_recorded_and_alerted_unless_the_yaml_says_quarantine(
    settings, champion: History, real_day: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
):
    from ml import alerts as ml_alerts
    from ml.runner import _alert

    path = write_partition(settings, _unseen(real_day.copy()))  # 20% of rows to airports never seen

    checked = validate_batch.run(Day.of(DATASET, DAY, "run"))

    assert checked["ok"] is True and checked["next"] == "score_batch"
    assert "'dest'" in checked["novelty"] and "QQQ" in checked["novelty"]
    assert lake.batch_files(settings.partition_dir(DAY)) == [path]  # stays in the lake: trained on later
    row = champion.get_day(DATASET, DAY)
    assert row["status"] == "accepted" and "novelty (not quarantined)" in row["validation"]
    _alert("novelty", Day.of(DATASET, DAY, "run"), dict(checked))
    (sent,) = alerts(settings, "novelty", DAY)
    assert "QQQ" in sent["message"] and sent["dag_run_id"] == "run"
    monkeypatch.setenv("DRIFTWATCH__VALIDATION__NOVELTY", "record")
    settings_for.cache_clear()
    assert ml_alerts.step_alert(settings_for(DATASET), "novelty", DAY, dict(checked), "run") is None

    monkeypatch.setenv("DRIFTWATCH__VALIDATION__NOVELTY", "quarantine")
    settings_for.cache_clear()
    refused = validate_batch.run(Day.of(DATASET, DAY, "rerun"))

    assert refused["ok"] is False and "'dest'" in refused["summary"] and "QQQ" in refused["summary"]


def test_bad_batch_delivered_again_is_quarantined_beside_the_first(settings, champion, real_day):
    bad = real_day.drop(columns=["visib"])
    first = sha256(write_partition(settings, bad))
    first_check = validate_batch.run(Day.of(DATASET, DAY, "run"))
    assert first_check["ok"] is False
    quarantine_batch.run(Day.of(DATASET, DAY, "run"), first_check)

    second_frame = bad.iloc[:500]
    second = sha256(write_partition(settings, second_frame))  # upstream re-delivers, still broken
    second_check = validate_batch.run(Day.of(DATASET, DAY, "rerun"))
    assert second_check["requarantine"] is False
    moved = quarantine_batch.run(Day.of(DATASET, DAY, "rerun"), second_check)

    base = settings.quarantine_dir(DAY)
    assert Path(moved["path"]) == base / "attempt-2"
    assert sha256(base / FILE_NAME) == first and sha256(base / "attempt-2" / FILE_NAME) == second
    assert lake.quarantined_files(settings, DAY) == [base / "attempt-2" / FILE_NAME]
    assert not lake.partition_exists(settings, DAY)
    assert champion.get_day(DATASET, DAY)["rows"] == len(second_frame)
    assert DAY not in usable_days(settings, champion, NEXT_DAY)


# ---------------------------------------------------------------------------------------------- good and missing


def test_good_batch_passes_and_stays_in_the_lake(settings, champion, real_day):
    path = write_partition(settings, real_day)
    digest = sha256(path)

    checked = validate_batch.run(Day.of(DATASET, DAY, "run"))

    assert checked["ok"] is True, checked["summary"]
    assert checked["rows"] == len(real_day) and checked["champion_version"] == 1
    assert checked["requarantine"] is False
    assert lake.batch_files(settings.partition_dir(DAY)) == [path] and sha256(path) == digest
    assert not settings.quarantine_dir(DAY).exists()
    assert champion.get_day(DATASET, DAY)["status"] == "accepted"
    assert DAY in usable_days(settings, champion, DAY)  # the contrast that makes the bad cases meaningful
    assert alerts(settings, "quarantine", DAY) == []


def test_missing_partition_is_not_ready_and_not_validated(settings, champion):
    partition = settings.partition_dir(DAY)

    assert wait_for_batch.run(Day.of(DATASET, DAY)) is False
    with pytest.raises(BatchMissingError, match=re.escape(str(partition))):
        validate_batch.run(Day.of(DATASET, DAY, "run"))
    assert champion.get_day(DATASET, DAY) is None
    assert not settings.quarantine_dir(DAY).exists()
