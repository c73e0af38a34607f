"""Data capture and late ground truth, as SageMaker Model Monitor does it, in the lake beside the batches.

    <lake>/<dataset>/_capture/date=YYYY-MM-DD/part-<writer>-<seq>.parquet   what the model server scored
    <lake>/<dataset>/_labels/arrived=YYYY-MM-DD/part-<writer>-<seq>.parquet labels keyed by inference id
    <lake>/<dataset>/_capture_shadow/date=YYYY-MM-DD/part-...parquet     the shadow challenger's scores

A capture record is one scored row: the inference id (the caller's or generated), when it was captured, the
day it belongs to (the row's date column when the request carries it, else the UTC date it arrived: a replay
of history lands on the days it replays), the features as received after validation, the score and the
model version that served it. The server buffers records and writes one file per day and flush interval
(`serving.flush_seconds`), to a hidden temporary name then renamed: a reader never sees half a file, a kill
-9 loses at most the records of one interval. Label files are written the same way.

For a dataset with `source: capture`, the day's batch (`date=D/capture.parquet`) is assembled from the
capture once the day is complete (`day_settled`), and labels are joined by inference id whenever the lake is
read (`attach_labels`): a label that arrives days later is used from then on; rows still without a label are
monitored by the CBPE estimate and never trained on.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ml.config import CAPTURE_COLUMNS, Settings
from ml.exceptions import DriftwatchError

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

INFERENCE_ID = "inference_id"
CAPTURED_AT = "captured_at"
SCORE = "served_score"
VERSION = "served_version"
# the columns a capture record has beside the dataset's date column and features
META_COLUMNS = CAPTURE_COLUMNS
assert META_COLUMNS == (INFERENCE_ID, CAPTURED_AT, SCORE, VERSION)
LABEL_ARRIVED_AT = "arrived_at"
BATCH_FILE = "capture.parquet"  # the day's batch assembled from the capture (date=D/capture.parquet)


def new_inference_id() -> str:
    return uuid.uuid4().hex


def sampled(inference_id: str, percent: float) -> bool:
    """Whether a request is captured at `percent` %: decided by its id, so a retried request is decided alike."""
    if percent >= 100:
        return True
    if percent <= 0:
        return False
    bucket = int.from_bytes(hashlib.blake2b(inference_id.encode(), digest_size=4).digest(), "big") % 10_000
    return bucket < percent * 100


def writer_id() -> str:
    """Unique per writing process (replicas of the server share the capture folder)."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def atomic_parquet(frame: pd.DataFrame, path: Path) -> Path:
    """Write `frame` to `path` through a hidden temporary file in the same folder and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    frame.to_parquet(tmp, index=False)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    tmp.replace(path)
    return path


@dataclass
class WriterStats:
    buffered: int = 0  # records waiting for the next flush
    written: int = 0  # records in files
    files: int = 0
    dropped: int = 0  # records a failed flush could not write (kept for the next try until close)
    last_flush: float | None = None  # time.time() of the last successful flush
    last_error: str | None = None


@dataclass
class BufferedWriter:
    """Buffers frames and writes them, one file per partition and interval, from a background thread.

    `partition_of(frame)` splits a frame into {folder name: rows}; `add` is thread-safe and never blocks on
    disk. `close()` writes what is buffered (graceful shutdown). `add` takes a frame, or columns as lists
    ({column: [values]}, the same columns each time): the model server adds one small batch per request, and
    a thousand one-row frames cost ~60 ms to concatenate at each flush, lists ~3 ms.
    """

    root: Path
    partition_of: Any  # Callable[[pd.DataFrame], dict[str, pd.DataFrame]]
    flush_seconds: float = 5.0
    writer: str = field(default_factory=writer_id)
    stats: WriterStats = field(default_factory=WriterStats)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._buffer: list[pd.DataFrame | dict[str, list[Any]]] = []
        self._seq = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> BufferedWriter:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name=f"flush-{self.root.name}", daemon=True)
            self._thread.start()
        return self

    def add(self, batch: pd.DataFrame | dict[str, list[Any]]) -> None:
        rows = _length(batch)
        if not rows:
            return
        with self._lock:
            self._buffer.append(batch)
            self.stats.buffered += rows

    def _loop(self) -> None:
        while not self._stop.wait(self.flush_seconds):
            self.flush()

    def flush(self) -> list[Path]:
        """Write what is buffered now; returns the files written. A failed write keeps the records buffered."""

        with self._flush_lock:
            with self._lock:
                frames, self._buffer = self._buffer, []
            if not frames:
                return []
            try:
                frame = _frame_of(frames)
            except Exception as exc:  # noqa: BLE001 - never lose the interval's records, never kill the thread
                self.stats.last_error = f"{type(exc).__name__}: {exc}"
                log.error(
                    "capture: could not assemble %d buffered batches (%s); will retry", len(frames), exc
                )
                with self._lock:
                    self._buffer[:0] = frames
                return []
            written: list[Path] = []
            parts: dict[str, pd.DataFrame] = {}
            try:
                parts = self.partition_of(frame)
                for folder, rows in sorted(parts.items()):
                    self._seq += 1
                    name = f"part-{self.writer}-{time.time_ns()}-{self._seq:06d}.parquet"
                    written.append(atomic_parquet(rows, self.root / folder / name))
            except Exception as exc:  # noqa: BLE001 - a full disk must not kill the server: keep and retry
                self.stats.last_error = f"{type(exc).__name__}: {exc}"
                log.error("capture: could not write under %s (%s); will retry", self.root, exc)
                # what was not written goes back (all of it when the split itself failed); what was, counts
                done = {p.parent.name for p in written}
                left = [r for f, r in parts.items() if f not in done] if parts else [frame]
                moved = len(frame) - sum(len(r) for r in left)
                with self._lock:
                    self._buffer[:0] = left
                    self.stats.buffered -= moved
                self.stats.written += moved
                self.stats.files += len(written)
                return written
            with self._lock:
                self.stats.buffered -= len(frame)
            self.stats.written += len(frame)
            self.stats.files += len(written)
            self.stats.last_flush = time.time()
            self.stats.last_error = None
            return written

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.flush_seconds + 5)
            self._thread = None
        self.flush()


def _length(batch: pd.DataFrame | dict[str, list[Any]]) -> int:
    if isinstance(batch, dict):
        return len(next(iter(batch.values()), []))
    return len(batch)


def _frame_of(batches: list[pd.DataFrame | dict[str, list[Any]]]) -> pd.DataFrame:
    """One frame of buffered frames and column lists, in the order they were added."""
    import pandas as pd

    frames: list[pd.DataFrame] = []
    columns: dict[str, list[Any]] = {}
    for batch in batches:
        if isinstance(batch, dict) and (not columns or list(columns) == list(batch)):
            for name, values in batch.items():
                columns.setdefault(name, []).extend(values)
            continue
        if columns:
            frames.append(pd.DataFrame(columns))
            columns = {}
        if isinstance(batch, dict):
            columns = {name: list(values) for name, values in batch.items()}
        else:
            frames.append(batch)
    if columns:
        frames.append(pd.DataFrame(columns))
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


def _by_day(column: str, prefix: str) -> Any:
    def split(frame: pd.DataFrame) -> dict[str, pd.DataFrame]:
        import pandas as pd

        days = pd.to_datetime(frame[column]).dt.date.astype(str)
        return {f"{prefix}={d}": rows.reset_index(drop=True) for d, rows in frame.groupby(days, sort=True)}

    return split


def capture_writer(settings: Settings) -> BufferedWriter:
    """The server's capture writer: records partitioned by their day (the dataset's date column)."""
    return BufferedWriter(
        settings.capture_dir, _by_day(settings.date_column, "date"), settings.serving.flush_seconds
    )


def label_writer(settings: Settings, flush_seconds: float | None = None) -> BufferedWriter:
    """Labels partitioned by the day they arrived (column `arrived_at`)."""
    return BufferedWriter(
        settings.labels_dir,
        _by_day(LABEL_ARRIVED_AT, "arrived"),
        flush_seconds if flush_seconds is not None else settings.serving.flush_seconds,
    )


SHADOW_SCORE = "shadow_score"
SHADOW_VERSION = "shadow_version"


def shadow_dir(settings: Settings) -> Path:
    """Where the model server writes the scores of the challenger in shadow (`promotion.mode: shadow`): one
    record per captured request row, {date column, inference id, captured_at, shadow_score, shadow_version},
    never answered to the caller."""
    return settings.lake_dir / "_capture_shadow"


def shadow_writer(settings: Settings) -> BufferedWriter:
    return BufferedWriter(
        shadow_dir(settings), _by_day(settings.date_column, "date"), settings.serving.flush_seconds
    )


def shadow_scores(settings: Settings, day: dt.date, batch: pd.DataFrame, version: int) -> pd.DataFrame | None:
    """The scores the model server gave the batch's rows with shadow version `version` (aligned by inference
    id, as `Objective.to_frame`), or None unless it scored every row of the batch with that version."""
    from ml.data import read_files

    if INFERENCE_ID not in batch.columns:
        return None
    found = read_files(_parquet_files(shadow_dir(settings) / f"date={day.isoformat()}"))
    if found.empty:
        return None
    found = found[found[SHADOW_VERSION] == version].drop_duplicates(INFERENCE_ID, keep="first")
    scores = batch[INFERENCE_ID].map(found.set_index(INFERENCE_ID)[SHADOW_SCORE])
    if scores.isna().any():
        log.info(
            "%s %s: the server scored %s of %s rows with shadow v%s: scoring the day here",
            settings.name,
            day,
            int(scores.notna().sum()),
            len(batch),
            version,
        )
        return None
    return settings.objective.to_frame(scores.to_numpy(dtype="float64"))


def _parquet_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix == ".parquet" and not p.name.startswith((".", "_")))


def capture_files(settings: Settings, day: dt.date) -> list[Path]:
    return _parquet_files(settings.capture_dir / f"date={day.isoformat()}")


def captured_days(settings: Settings) -> list[dt.date]:
    out = []
    if settings.capture_dir.is_dir():
        for p in settings.capture_dir.glob("date=*"):
            try:
                day = dt.date.fromisoformat(p.name[5:])
            except ValueError:
                continue
            if _parquet_files(p):
                out.append(day)
    return sorted(out)


def day_settled(settings: Settings, day: dt.date, now: float | None = None) -> tuple[bool, str]:
    """Whether day `day`'s capture is complete: the wall clock is past the day (UTC) and no capture file of
    it is newer than `serving.settle_seconds` (a replay of history writes a day, then moves to the next).
    Returns (settled, why) for the sensor's log."""
    now = time.time() if now is None else now
    files = capture_files(settings, day)
    folder = settings.capture_dir / f"date={day.isoformat()}"
    if not files:
        return False, f"no capture file in {folder} yet"
    end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC).timestamp()
    if now < end:
        return False, f"{day} is not over yet (UTC); {len(files)} capture files in {folder} so far"
    newest = max(p.stat().st_mtime for p in files)
    quiet = now - newest
    if quiet < settings.serving.settle_seconds:
        return False, (
            f"{len(files)} capture files in {folder}, the newest {quiet:.0f} s old: waiting until none is newer "
            f"than serving.settle_seconds={settings.serving.settle_seconds:g}"
        )
    return True, f"{len(files)} capture files in {folder}, quiet for {quiet:.0f} s"


def read_capture(settings: Settings, day: dt.date) -> pd.DataFrame:
    """The day's capture records, one row per inference id (the first captured wins), in capture order."""
    from ml.data import read_files

    frame = read_files(capture_files(settings, day))
    if frame.empty:
        return frame
    frame = frame.sort_values([CAPTURED_AT, INFERENCE_ID], kind="stable")
    return frame.drop_duplicates(INFERENCE_ID, keep="first").reset_index(drop=True)


def assemble_batch(settings: Settings, day: dt.date) -> Path | None:
    """Write the day's batch `date=D/capture.parquet` from its capture (idempotent: an existing one is kept,
    so a re-run validates what the first run validated). Returns the path, or None without capture."""
    target = settings.partition_dir(day) / BATCH_FILE
    if target.is_file():
        return target
    frame = read_capture(settings, day)
    if frame.empty:
        return None
    frame = frame.assign(**{settings.label: None})  # labels are joined when the lake is read
    columns = [c for c in batch_columns(settings) if c in frame.columns]
    from ml.data import write_partition_file

    return write_partition_file(frame[columns], target, settings.date_column)


def batch_columns(settings: Settings) -> list[str]:
    """The columns of an assembled batch: the dataset's columns (the label empty), then the capture's."""
    return [*settings.columns, *META_COLUMNS]


def label_files(settings: Settings) -> list[Path]:
    return [f for p in sorted(settings.labels_dir.glob("arrived=*")) for f in _parquet_files(p)]


_LABELS_CACHE: dict[str, tuple[tuple[tuple[str, int, int], ...], pd.Series]] = {}


def labels(settings: Settings) -> pd.Series:
    """Every label that has arrived, indexed by inference id (a later correction wins). Cached per process
    until a label file is added or changed."""
    import pandas as pd

    from ml.data import read_files

    files = label_files(settings)
    key = tuple((str(f), f.stat().st_mtime_ns, f.stat().st_size) for f in files)
    cached = _LABELS_CACHE.get(str(settings.labels_dir))
    if cached is not None and cached[0] == key:
        return cached[1]
    frame = read_files(files)
    if frame.empty:
        series = pd.Series(dtype="object", name=settings.label)
    else:
        frame = frame.sort_values(LABEL_ARRIVED_AT, kind="stable")
        frame = frame.drop_duplicates(INFERENCE_ID, keep="last")
        series = frame.set_index(INFERENCE_ID)[settings.label]
    _LABELS_CACHE[str(settings.labels_dir)] = (key, series)
    return series


def attach_labels(settings: Settings, frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` with the label of each captured row (one with an inference id) taken from the labels that have
    arrived (null where none has yet); rows without an inference id (the original window's history) keep
    their own label."""
    if INFERENCE_ID not in frame.columns:
        return frame
    known = labels(settings)
    captured = frame[INFERENCE_ID].notna()
    arrived = frame[INFERENCE_ID].map(known) if len(known) else frame[INFERENCE_ID].map(lambda _: None)
    out = frame.copy()
    own = frame[settings.label] if settings.label in frame.columns else None
    out[settings.label] = arrived.where(captured, own) if own is not None else arrived
    return out


def label_frame(
    settings: Settings, ids: Iterable[str], values: Iterable[Any], arrived_at: dt.datetime | None = None
) -> pd.DataFrame:
    """Label records ready for `label_writer(...).add`."""
    import pandas as pd

    ids = [str(i) for i in ids]
    when = pd.Timestamp(arrived_at or dt.datetime.now(dt.UTC))
    when = when.tz_localize("UTC") if when.tzinfo is None else when.tz_convert("UTC")
    return pd.DataFrame({INFERENCE_ID: ids, settings.label: list(values), LABEL_ARRIVED_AT: when})


class LabelError(DriftwatchError, ValueError):
    """Ground truth that cannot be stored; the message names the record, the field and the expected value."""


def label_classes(settings: Settings) -> tuple[Any, Any]:
    """The label's (negative, positive) values: 0/1 for a 0/1 label, False/True for a boolean one; for other
    labels the positive class and None (any other value of the same type is the negative class)."""
    positive = settings.positive
    if isinstance(positive, bool):
        return (not positive, positive)
    if isinstance(positive, int) and positive in (0, 1):
        return (1 - positive, positive)
    return (None, positive)


def check_labels(
    settings: Settings, records: Iterable[Any], where: str = "labels"
) -> tuple[list[str], list[Any]]:
    """Validate ground-truth records `{"inference_id": str, "label": value}`; returns (ids, labels).

    Raises:
        LabelError: a record is not a mapping, an id is missing/not a string/repeated, or a label is not one
            of the dataset's classes; the message names the record and the expected value.
    """
    negative, positive = label_classes(settings)
    ids: list[str] = []
    values: list[Any] = []
    seen: set[str] = set()
    for n, record in enumerate(records):
        at = f"{where}: record {n}"
        if not isinstance(record, dict):
            raise LabelError(
                f'{at}: expected an object {{"inference_id": str, "label": ...}}. Got {record!r:.80}.'
            )
        rid = record.get(INFERENCE_ID)
        if not isinstance(rid, str) or not rid or len(rid) > 200:
            raise LabelError(
                f"{at}: field 'inference_id': expected a non-empty string (<= 200 chars). Got {rid!r:.80}."
            )
        if rid in seen:
            raise LabelError(f"{at}: field 'inference_id': {rid!r} appears twice in one request.")
        seen.add(rid)
        if "label" not in record:
            raise LabelError(f"{at}: field 'label' is missing. Expected {positive!r} or {negative!r}.")
        value = record["label"]
        if isinstance(positive, bool | int) and negative is not None:
            if isinstance(value, bool) or (isinstance(value, int | float) and value in (0, 1)):
                value = type(positive)(value)
            if value not in (negative, positive) or isinstance(value, float):
                raise LabelError(
                    f"{at}: field 'label' ({settings.label}): expected {negative!r} or {positive!r}. Got {value!r:.80}."
                )
        elif not isinstance(value, type(positive)):
            raise LabelError(
                f"{at}: field 'label' ({settings.label}): expected a {type(positive).__name__} "
                f"(positive class {positive!r}). Got {value!r:.80}."
            )
        ids.append(rid)
        values.append(value)
    return ids, values
