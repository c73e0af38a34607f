"""Daily partitions of the lake: `<lake>/<dataset>/date=YYYY-MM-DD/*.parquet`.

Files whose names start with `_` or `.` are driftwatch's own (e.g. `_predictions.parquet`, the champion's
scores stored beside the batch) and are never read as batch data, as in Hive/Spark layouts.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ml.config import Settings
from ml.exceptions import BatchMissingError, UnreadableBatchError

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

PREDICTIONS_FILE = "_predictions.parquet"
# the champion a new one replaced, scoring the same batch while the new one is watched (ml/tasks/watch_champion)
SHADOW_FILE = "_shadow_predictions.parquet"
REASON_FILE = "_reason.json"


def as_date(value: str | dt.date | dt.datetime) -> dt.date:
    """A logical date from a date, a datetime, or an ISO string (`2013-02-01` or a full timestamp)."""
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    return dt.date.fromisoformat(str(value)[:10])


def batch_files(partition: Path) -> list[Path]:
    """Data files of a partition, driftwatch's own files excluded."""
    if not partition.is_dir():
        return []
    return sorted(
        p
        for p in partition.iterdir()
        if p.is_file() and not p.name.startswith(("_", ".")) and p.suffix == ".parquet"
    )


def partition_exists(settings: Settings, day: dt.date) -> bool:
    return bool(batch_files(settings.partition_dir(day)))


def read_files(files: Iterable[Path]) -> pd.DataFrame:
    """Read parquet files into one frame.

    Raises:
        UnreadableBatchError: a file is empty, corrupt or not parquet; the message names the file.
    """
    import pandas as pd
    import pyarrow.parquet as pq

    frames = []
    for f in files:
        if f.stat().st_size == 0:
            raise UnreadableBatchError(f"{f}: the file is empty (0 bytes). Expected a parquet file.")
        try:
            frames.append(_plain_dates(pq.read_table(f).to_pandas()))
        except Exception as exc:  # pyarrow raises several types for a bad file
            raise UnreadableBatchError(
                f"{f}: cannot be read as parquet ({type(exc).__name__}: {exc})."
            ) from None
    if not frames:
        return pd.DataFrame()
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


def write_partition_file(frame: pd.DataFrame, path: Path, date_column: str) -> Path:
    """Write a day's data file atomically (a hidden temporary file, fsync, rename), its date column as
    dictionary-encoded strings: the type pyarrow and pandas give the `date=` folder key, so the whole lake
    reads as one hive-partitioned dataset (`pd.read_parquet(<lake>/<dataset>)`) instead of failing with
    "Unable to merge: Field date has incompatible types". `read_files` gives plain strings back."""
    import os

    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(frame, preserve_index=False)
    if date_column in table.column_names:
        i = table.column_names.index(date_column)
        values = [
            None if v is None else v if isinstance(v, str) else _iso_day(v)
            for v in table.column(i).to_pylist()
        ]
        dates = pa.array(values, type=pa.string()).dictionary_encode()
        dates = dates.cast(pa.dictionary(pa.int32(), pa.string()))
        table = table.set_column(i, pa.field(date_column, dates.type), dates)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    tmp.replace(path)
    return path


def _iso_day(value: Any) -> str:
    """A date, datetime or Timestamp as 'YYYY-MM-DD' (the day the folder names)."""
    return value.date().isoformat() if isinstance(value, dt.datetime) else value.isoformat()[:10]


def _plain_dates(frame: pd.DataFrame) -> pd.DataFrame:
    """Dictionary-encoded string columns (the lake's date column, `write_partition_file`) as plain values."""
    import pandas as pd

    coded = [c for c in frame.columns if isinstance(frame[c].dtype, pd.CategoricalDtype)]
    return frame.astype({c: object for c in coded}) if coded else frame


def read_batch(settings: Settings, day: dt.date) -> pd.DataFrame:
    """The batch of one logical date, as stored (no cleaning).

    Raises:
        BatchMissingError: the partition has no data file.
        UnreadableBatchError: a data file cannot be read.
    """
    partition = settings.partition_dir(day)
    files = batch_files(partition)
    if not files:
        raise BatchMissingError(
            f"{partition}: no batch for {settings.name} on {day} (expected *.parquet files)."
        )
    return _with_labels(settings, read_files(files))


def _with_labels(settings: Settings, frame: pd.DataFrame) -> pd.DataFrame:
    """A captured batch with the labels that have arrived joined by inference id (ml/capture.py)."""
    if not settings.captured:
        return frame
    from ml.capture import attach_labels

    return attach_labels(settings, frame)


def labelled(settings: Settings, frame: pd.DataFrame) -> pd.DataFrame:
    """The rows whose label is known (all rows of a lake batch; of captured traffic, those labelled so far)."""
    if settings.label not in frame.columns:
        return frame.iloc[0:0]
    known = frame[settings.label].notna()
    return frame if bool(known.all()) else frame[known].reset_index(drop=True)


def read_days(settings: Settings, days: Iterable[dt.date]) -> pd.DataFrame:
    """The labelled rows of several days' batches (missing days are skipped), features + label + date: every
    row of a lake batch; of captured traffic, the rows whose label has arrived (training and holdouts)."""
    import pandas as pd

    frames = []
    for day in days:
        files = batch_files(settings.partition_dir(day))
        if files:
            frames.append(read_files(files))
    if not frames:
        return pd.DataFrame(columns=settings.columns)
    frame = pd.concat(frames, ignore_index=True)
    return labelled(settings, _with_labels(settings, frame)) if settings.captured else frame


def available_days(settings: Settings, until: dt.date | None = None) -> list[dt.date]:
    """Days with a partition in the lake, ascending, up to and including `until`."""
    days = []
    if settings.lake_dir.is_dir():
        for p in settings.lake_dir.glob("date=*"):
            try:
                day = dt.date.fromisoformat(p.name[5:])
            except ValueError:
                continue
            if (until is None or day <= until) and batch_files(p):
                days.append(day)
    return sorted(days)


def daterange(start: dt.date, end: dt.date) -> list[dt.date]:
    return [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]


def quarantine(settings: Settings, day: dt.date, reason: dict) -> Path:
    """Move the day's partition (every file) to the quarantine area with a reason file. Never deletes.

    A second quarantine of the same day goes to `date=.../attempt-N` so earlier evidence is kept.
    Returns the folder the files now live in.
    """
    source = settings.partition_dir(day)
    target = settings.quarantine_dir(day)
    if target.exists():
        n = 2
        while (target / f"attempt-{n}").exists():
            n += 1
        target = target / f"attempt-{n}"
    target.mkdir(parents=True, exist_ok=True)
    if source.is_dir():
        for f in sorted(source.iterdir()):
            shutil.move(str(f), str(target / f.name))
        source.rmdir()
    (target / REASON_FILE).write_text(json.dumps(reason, indent=2, default=str))
    log.warning("quarantined %s %s -> %s", settings.name, day, target)
    return target


def quarantined_files(settings: Settings, day: dt.date) -> list[Path]:
    """Data files of the latest quarantine of a day (to re-check a day that was quarantined before)."""
    base = settings.quarantine_dir(day)
    if not base.is_dir():
        return []
    attempts = sorted(
        (p for p in base.glob("attempt-*") if p.is_dir()), key=lambda p: int(p.name.split("-")[1])
    )
    return batch_files(attempts[-1] if attempts else base)


def write_predictions(
    settings: Settings, day: dt.date, frame: pd.DataFrame, file: str = PREDICTIONS_FILE
) -> Path:
    """Store the champion's scores beside the batch (data capture), atomically; `file=SHADOW_FILE`: the
    replaced champion's scores of the same rows, while a new one is watched."""
    path = settings.partition_dir(day) / file
    tmp = path.with_name(f".{path.name}.tmp")
    frame.to_parquet(tmp, index=False)
    tmp.replace(path)
    return path


def read_predictions(settings: Settings, day: dt.date, file: str = PREDICTIONS_FILE) -> pd.DataFrame | None:
    import pandas as pd

    path = settings.partition_dir(day) / file
    return pd.read_parquet(path) if path.is_file() else None


def model_frame(settings: Settings, frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series]:
    """Features (declared order, numeric as float, categorical as str) and the label as the task needs it:
    0/1 (binary), the class's position in label.classes (multiclass, -1 for another value), float
    (regression)."""
    X = frame[settings.features].copy()
    for col in settings.numeric:
        X[col] = X[col].astype("float64")
    for col in settings.categorical:
        X[col] = X[col].astype("object").where(X[col].notna(), None)  # type: ignore[call-overload]
    import pandas as pd

    if settings.task == "multiclass":
        y = pd.Series(settings.objective.encode(frame[settings.label].to_numpy()), index=frame.index)
    elif settings.task == "regression":
        y = pd.to_numeric(frame[settings.label], errors="coerce").astype("float64")
    else:
        y = (frame[settings.label] == settings.positive).astype("int64")
    return X, y
