"""Validate a batch: read its files, run the schema pre-checks and the rules' suite, write the result.

Nothing is raised for bad data: every problem becomes a `Failure` naming file, column, expectation, expected
and found, so the pipeline can quarantine the day.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ml.config import Settings
from ml.data import as_date, batch_files, read_files
from ml.exceptions import SchemaError, UnreadableBatchError
from ml.validation import gx
from ml.validation.base import explain, observed
from ml.validation.report import write_reports
from ml.validation.result import Failure, Problem, ValidationResult, failure, jsonable
from ml.validation.rules import not_checked, suite
from ml.validation.schema import schema_checks

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

READABLE = "readable"  # the `expectation` of a file that cannot be read
SKIPPED = "skipped: column missing or of the wrong type"


def validate_frame(
    settings: Settings,
    frame: pd.DataFrame,
    *,
    day: dt.date,
    files: list[Path],
    reference: pd.DataFrame | None = None,
) -> ValidationResult:
    """Schema pre-checks, then the GX suite, on one day's frame. Writes nothing.

    Args:
        settings: the dataset's settings.
        frame: the batch as read from the lake.
        day: the logical day every row must be dated on.
        files: the files the frame was read from (named in the messages).
        reference: the champion's training data, or None.

    Returns:
        A ValidationResult; `failures` is empty when the batch passed.
    """
    day = as_date(day)
    label = _file_label(settings, files)
    schema_records, failures, unusable = schema_checks(settings, frame, label)
    records = list(schema_records)

    expectations = suite(settings, reference)
    present = set(frame.columns) - unusable
    # expectations on absent or mistyped columns are reported as skipped; the schema failure explains why
    runnable = [e.spec() for e in expectations if all(c in present for c in e.columns)]

    novelty: list[Failure] = []
    refuse_novelty = settings.validation.novelty == "quarantine"
    outcomes = (
        gx.run_suite(settings.name, runnable, gx.gx_frame(settings, frame, present), day) if runnable else {}
    )
    for expectation in expectations:
        record: dict[str, Any] = {
            "type": expectation.type,
            "column": expectation.kwargs.get("column"),
            "kwargs": expectation.resolved(day),
            "source": expectation.source,
            "success": None,
            "observed": SKIPPED,
        }
        if expectation.id in outcomes:
            success, result, error = outcomes[expectation.id]
            record["success"] = success
            record["observed"] = error or observed(result)
            if not success:
                found = explain(expectation, result, error, day=day, file=label)
                record["novelty"] = expectation.novelty
                if expectation.novelty and not refuse_novelty and not error:
                    novelty.append(found)
                else:
                    failures.append(found)
        records.append(record)

    checked = sum(1 for r in records if r["success"] is not None)
    return ValidationResult(
        success=not failures,
        day=day.isoformat(),
        rows=len(frame),
        files=[str(f) for f in files],
        failures=failures,
        checked=checked,
        json_path=None,
        html_path=None,
        expectations=jsonable(records),
        not_checked=not_checked(settings, reference),
        novelty=novelty,
    )


def validate_batch(
    settings: Settings,
    day: dt.date,
    *,
    reference: pd.DataFrame | None = None,
    files: list[Path] | None = None,
    write_report: bool = True,
) -> ValidationResult:
    """Validate the partition of a logical day and write `validation.json` and `validation.html`.

    Unreadable input (no data file, an empty or corrupt file) does not raise: the result fails with a
    Failure of expectation "readable" naming the file, so the caller can quarantine the day.

    Args:
        settings: the dataset's settings.
        day: the logical day.
        reference: the champion's training data, or None before the first champion.
        files: the files to check (default: the data files of the day's partition).
        write_report: write the JSON and HTML reports under `settings.report_dir(day)`.
    """
    day = as_date(day)
    partition = settings.partition_dir(day)
    files = list(files) if files is not None else batch_files(partition)
    if not files:
        found = "no such folder" if not partition.is_dir() else "no *.parquet data file in it"
        problem = Problem("has no batch file", "at least one *.parquet data file", found)
        result = _unreadable(day, files, [failure(_display(settings, partition), None, READABLE, problem)])
    else:
        frames, failures = [], []
        for f in files:
            try:
                frames.append(read_files([f]))
            except UnreadableBatchError as exc:
                failures.append(_unreadable_failure(settings, f, exc))
        if failures:
            result = _unreadable(day, files, failures)
        else:
            import pandas as pd

            frame = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
            result = validate_frame(settings, frame, day=day, files=files, reference=reference)

    if write_report:
        result = write_reports(settings, result)
    if result.success:
        log.info("validation %s %s: %s", settings.name, day, result.summary())
    else:
        log.warning("validation %s %s failed:\n%s", settings.name, day, result.summary())
    return result


def validate_path(
    settings: Settings, path: Path, *, reference: pd.DataFrame | None = None
) -> ValidationResult:
    """Validate a parquet file or a partition folder (for `driftwatch validate PATH`). Writes nothing.

    The logical day comes from a `date=YYYY-MM-DD` folder in the path, else from the data's date column
    (its most common value).

    Raises:
        UnreadableBatchError: the path does not exist, holds no data file, or a file cannot be read.
        SchemaError: the logical day cannot be told (no `date=` folder and no usable date column).
    """
    path = Path(path)
    if path.is_dir():
        files = batch_files(path)
        if not files:
            raise UnreadableBatchError(f"{path}: no *.parquet data file in the folder. Expected a batch.")
    elif path.is_file():
        files = [path]
    else:
        raise UnreadableBatchError(f"{path}: no such file or folder. Expected a parquet file or a partition.")
    frame = read_files(files)
    day = _day_from_path(path) or _day_from_frame(settings, frame, path)
    return validate_frame(settings, frame, day=day, files=files, reference=reference)


# ---------------------------------------------------------------------------------------------- helpers


def _unreadable_failure(settings: Settings, path: Path, exc: Exception) -> Failure:
    reason = str(exc)
    prefix = f"{path}: "
    if reason.startswith(prefix):
        reason = reason[len(prefix) :]
    if path.stat().st_size == 0:
        found = "an empty file (0 bytes)"
    else:
        found = reason.removesuffix(".").removeprefix("cannot be read as parquet ").strip("()")
    problem = Problem("cannot be read", "a readable parquet file", found)
    return failure(_display(settings, path), None, READABLE, problem)


def _unreadable(day: dt.date, files: Sequence[Path], failures: list[Failure]) -> ValidationResult:
    records: list[dict[str, Any]] = [
        {
            "type": READABLE,
            "column": None,
            "kwargs": {"file": f.file},
            "source": "the lake",
            "success": False,
            "observed": f.found,
        }
        for f in failures
    ]
    return ValidationResult(
        success=False,
        day=day.isoformat(),
        rows=0,
        files=[str(f) for f in files],
        failures=failures,
        checked=len(failures),
        json_path=None,
        html_path=None,
        expectations=records,
    )


def _display(settings: Settings, path: Path) -> str:
    """A path as shown in messages: relative to the lake root when inside it (`flights/date=.../x.parquet`)."""
    path = Path(path)
    try:
        return str(path.resolve().relative_to(settings.paths.lake))
    except ValueError:
        return str(path)


def _file_label(settings: Settings, files: Iterable[Path]) -> str:
    names = [_display(settings, f) for f in files]
    return ", ".join(names) if names else "<frame>"


def _day_from_path(path: Path) -> dt.date | None:
    for part in reversed(Path(path).resolve().parts):
        if part.startswith("date="):
            try:
                return dt.date.fromisoformat(part[5:])
            except ValueError:
                return None
    return None


def _day_from_frame(settings: Settings, frame: pd.DataFrame, path: Path) -> dt.date:
    date = settings.date_column
    if date in frame.columns:
        values = gx.gx_frame(settings, frame, {date})[date].dropna()
        if len(values):
            counts = values.astype(str).value_counts()
            # ties broken by value so the choice does not depend on row order
            best = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0][0]
            try:
                return as_date(str(best))
            except ValueError:
                pass
    raise SchemaError(
        f"{path}: cannot tell the logical day. Expected a date=YYYY-MM-DD folder in the path or ISO dates in "
        f"column '{date}'. Got neither."
    )
