"""What the model server accepts, pure: a request body and its headers in, the rows to score out, or an
`InputError` with its HTTP status, the field, the expected type and what was found (values: ml/serving/cells.py).

Formats (MLflow's scoring server's, where they fit):

    application/json  {"dataframe_split": {"columns": [...], "data": [[...], ...]}}
                      {"dataframe_records": [{...}, ...]}
                      {"instances": ...} or {"inputs": ...}: a list of records, or {column: [values, ...]}
                      optional beside them: "inference_ids": [str, ...], one per row
    text/csv          a header row, then one row per line (an empty field is a missing value)

Columns: every feature (numeric: a number, null or NaN when missing, never ±inf or text; categorical: a
string or null), and optionally the dataset's date column (YYYY-MM-DD: the day the row is captured under) and
`inference_id`; the YAML's `drop` columns are accepted and ignored. Anything else is refused, so a captured
record is always one the pipeline can read. Status: 415 another content type, 400 not JSON/CSV, 413 more
than `serving.max_rows` rows, 422 anything else. Rows are counted from 0.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ml.capture import INFERENCE_ID
from ml.config import Settings
from ml.serving import cells
from ml.serving.cells import ABSENT, ID_HEADER, IDS_KEY, InputError, names, show, wrong

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["ID_HEADER", "Columns", "InputError", "Rows", "parse_labels", "parse_request", "show"]

FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")
LABELS_SHAPE = (
    '{"labels": [{"inference_id": "...", "label": ...}, ...]} or one {"inference_id": ..., "label": ...}'
)


@dataclass(frozen=True)
class Columns:
    """The columns a request may carry, from the dataset's settings."""

    date: str
    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    ignored: tuple[str, ...]  # the YAML's `drop` columns: accepted, not scored, not captured
    label: str
    max_rows: int

    @classmethod
    def of(cls, settings: Settings) -> Columns:
        return cls(
            date=settings.date_column,
            numeric=tuple(settings.numeric),
            categorical=tuple(settings.categorical),
            ignored=tuple(settings.drop),
            label=settings.label,
            max_rows=settings.serving.max_rows,
        )

    @property
    def features(self) -> list[str]:
        return [*self.numeric, *self.categorical]

    @property
    def optional(self) -> list[str]:
        return [self.date, INFERENCE_ID, *self.ignored]

    @property
    def expected(self) -> str:
        return (
            f"the features {names(self.features, len(self.features))}, optionally {names(self.optional, 10)}"
        )


@dataclass(frozen=True)
class Rows:
    """A valid request: the features in the model's order (numeric float64, categorical str or None), each
    row's own day (None: not given; the server uses the day it arrived) and the inference ids."""

    features: pd.DataFrame
    days: list[dt.date | None]
    ids: list[str]


@dataclass(frozen=True)
class _Table:
    columns: list[Any]
    rows: Sequence[Sequence[Any]]
    where: str  # how a message names the rows: "dataframe_split.data", "CSV", ...


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def _unsupported(content_type: str | None, allowed: str) -> InputError:
    return InputError(
        415,
        f"Content-Type {show(content_type or '')} is not accepted: send {allowed}.",
        field="Content-Type",
        expected=allowed,
    )


def parse_request(
    body: bytes,
    content_type: str | None,
    columns: Columns,
    *,
    new_id: Callable[[], str],
    header_id: str | None = None,
) -> Rows:
    """The rows of a POST /invocations body; `header_id` is the X-Inference-Id header, `new_id()` makes the
    ids not given.

    Raises:
        InputError: see the module's docstring.
    """
    kind = media_type(content_type)
    if kind == "application/json":
        table, ids = _json_table(load_json(body), columns.max_rows)
    elif kind == "text/csv":
        table, ids = _csv_table(_text(body), columns.max_rows), None
    else:
        raise _unsupported(content_type, "application/json or text/csv")
    return _rows(table, columns, ids, header_id, new_id, typed=kind == "application/json")


def parse_labels(body: bytes, content_type: str | None, max_rows: int) -> list[Any]:
    """The records of a POST /ground-truth body (LABELS_SHAPE); their values are checked by
    `ml.capture.check_labels`, as `driftwatch labels add` checks a file's.

    Raises:
        InputError: 415 not JSON, 400 malformed, 413 too many records, 422 another shape or unknown keys.
    """
    if media_type(content_type) != "application/json":
        raise _unsupported(content_type, "application/json")
    obj = load_json(body)
    if isinstance(obj, dict) and set(obj) == {"labels"}:
        records = obj["labels"]
        if not isinstance(records, list) or not records:
            found = "an empty list" if records == [] else show(records)
            raise wrong("'labels'", "a list of records", found, field="labels")
    elif isinstance(obj, dict) and obj and set(obj) <= {INFERENCE_ID, "label"}:
        records = [obj]
    else:
        found = f"keys {names(sorted(obj, key=str))}" if isinstance(obj, dict) else show(obj)
        raise wrong("the body", LABELS_SHAPE, found, field="labels")
    if len(records) > max_rows:
        raise InputError(
            413,
            f"'labels': {len(records)} records, at most {max_rows} per request (serving.max_rows).",
            field="labels",
            expected=f"at most {max_rows} records",
        )
    for n, record in enumerate(records):
        extra = sorted(set(record) - {INFERENCE_ID, "label"}, key=str) if isinstance(record, dict) else []
        if extra:
            where = f"labels: record {n}"
            raise wrong(
                where, "the keys 'inference_id' and 'label'", f"{names(extra)}", field=str(extra[0]), row=n
            )
    return records


def load_json(body: bytes) -> Any:
    """The parsed body (JSON's NaN is read as a missing value).

    Raises:
        InputError: 400, not UTF-8 JSON.
    """
    text = _text(body)
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        where = f" ({exc})" if isinstance(exc, json.JSONDecodeError) else ""
        raise InputError(400, f"malformed JSON{where}.", field="body", expected="a JSON object") from None


def _text(body: bytes) -> str:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(
            400, f"the body is not UTF-8 (byte {exc.start}).", field="body", expected="UTF-8"
        ) from None


def _too_many(n: int, max_rows: int, field: str) -> None:
    if n > max_rows:
        raise InputError(
            413,
            f"{field}: {n} rows, at most {max_rows} per request (serving.max_rows): split the request.",
            field=field,
            expected=f"at most {max_rows} rows",
        )


def _json_table(obj: Any, max_rows: int) -> tuple[_Table, Any]:
    expected = f"an object with one of {', '.join(FORMATS)} (and optionally {IDS_KEY})"
    if not isinstance(obj, dict):
        raise wrong("the body", expected, show(obj), field="body")
    unknown = sorted((k for k in obj if k not in (*FORMATS, IDS_KEY)), key=str)
    if unknown:
        raise wrong("the body", expected, f"the unknown keys {names(unknown)}", field=str(unknown[0]))
    found = [k for k in FORMATS if k in obj]
    if len(found) != 1:
        raise wrong("the body", expected, names(found) if found else "none of them", field="body")
    key, data = found[0], obj[found[0]]
    if key == "dataframe_split":
        table = _split(data, max_rows)
    elif isinstance(data, list):
        table = _records(data, key, max_rows)
    elif key != "dataframe_records" and isinstance(data, dict):
        table = _column_lists(data, key, max_rows)
    else:
        shapes = "a list of records" + (
            "" if key == "dataframe_records" else " or an object {column: [values]}"
        )
        raise wrong(f"'{key}'", shapes, show(data), field=key)
    return table, obj.get(IDS_KEY)


def _split(data: Any, max_rows: int) -> _Table:
    shape = '{"columns": [...], "data": [[...], ...]}'
    if not (
        isinstance(data, dict)
        and isinstance(data.get("columns"), list)
        and isinstance(data.get("data"), list)
    ):
        raise wrong("'dataframe_split'", shape, show(data), field="dataframe_split")
    extra = sorted(set(data) - {"columns", "data", "index"}, key=str)
    if extra:
        raise wrong("'dataframe_split'", shape, f"the unknown keys {names(extra)}", field=str(extra[0]))
    columns, rows = data["columns"], data["data"]
    _too_many(len(rows), max_rows, "dataframe_split.data")
    for n, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != len(columns):
            found = f"a list of {len(row)}" if isinstance(row, list) else show(row)
            expected = f"a list of {len(columns)} values (one per column)"
            raise wrong(
                f"'dataframe_split.data' row {n}", expected, found, field="dataframe_split.data", row=n
            )
    return _Table(columns, rows, "dataframe_split.data")


def _records(data: list[Any], key: str, max_rows: int) -> _Table:
    _too_many(len(data), max_rows, key)
    columns: dict[Any, None] = {}
    for n, record in enumerate(data):
        if not isinstance(record, dict):
            raise wrong(f"'{key}' row {n}", "a record {column: value}", show(record), field=key, row=n)
        columns.update(dict.fromkeys(record))
    order = list(columns)
    return _Table(order, [[r.get(c, ABSENT) for c in order] for r in data], key)


def _column_lists(data: dict[str, Any], key: str, max_rows: int) -> _Table:
    for name, values in data.items():
        if not isinstance(values, list):
            raise wrong(f"'{key}' column {show(name)}", "a list of values", show(values), field=str(name))
    lengths = sorted({len(v) for v in data.values()})
    if len(lengths) > 1:
        raise wrong(f"'{key}'", "one value per row in each column", f"lengths {lengths}", field=key)
    n = lengths[0] if lengths else 0
    _too_many(n, max_rows, key)
    columns = list(data)
    return _Table(columns, [[data[c][i] for c in columns] for i in range(n)], key)


def _csv_table(text: str, max_rows: int) -> _Table:
    lines: list[list[str]] = []
    try:
        for line in csv.reader(io.StringIO(text, newline=""), strict=True):
            if line:
                lines.append(line)
                _too_many(len(lines) - 1, max_rows, "CSV")
    except csv.Error as exc:
        raise InputError(
            400, f"malformed CSV ({exc}).", field="body", expected="CSV with a header row"
        ) from None
    if not lines:
        raise wrong("CSV", "a header row", "an empty body", field="body")
    header, rows = lines[0], lines[1:]
    for n, row in enumerate(rows):
        if len(row) != len(header):
            expected = f"{len(header)} fields, as the header"
            raise wrong(f"CSV row {n}", expected, f"{len(row)} fields", field="body", row=n)
    return _Table(list(header), rows, "CSV")


def _check_columns(columns: list[Any], spec: Columns) -> None:
    for name in columns:
        if not isinstance(name, str):
            raise wrong("column names", "strings", show(name), field="columns")
    seen: set[str] = set()
    for name in columns:
        if name in seen:
            raise wrong(f"column {show(name)}", "unique column names", "it twice", field=name)
        seen.add(name)
    if spec.label in seen:
        message = (
            f"column {show(spec.label)} is the label, not an input (send it to POST /ground-truth with the row's "
            f"inference id): expected {spec.expected}."
        )
        raise InputError(422, message, field=spec.label, expected=spec.expected)
    unknown = [c for c in columns if c not in spec.features and c not in spec.optional]
    missing = [c for c in spec.features if c not in seen]
    for what, found in (("unknown columns", unknown), ("missing features", missing)):
        if found:
            message = f"{what} {names(found)}: expected {spec.expected}."
            raise InputError(422, message, field=found[0], expected=spec.expected)


def _rows(
    table: _Table,
    spec: Columns,
    given_ids: Any,
    header_id: str | None,
    new_id: Callable[[], str],
    *,
    typed: bool,
) -> Rows:
    import numpy as np
    import pandas as pd

    _check_columns(table.columns, spec)
    n = len(table.rows)
    if n == 0:
        raise wrong(table.where, "at least one row", "none", field=table.where)
    at = {name: i for i, name in enumerate(table.columns)}

    def values(column: str) -> list[Any]:
        return [row[at[column]] for row in table.rows]

    data: dict[str, Any] = {}
    for c in spec.numeric:
        data[c] = np.array(
            [cells.number(v, c, r, typed=typed) for r, v in enumerate(values(c))], dtype="float64"
        )
    for c in spec.categorical:
        data[c] = pd.Series(
            [cells.category(v, c, r, typed=typed) for r, v in enumerate(values(c))], dtype=object
        )
    days = (
        [cells.day(v, spec.date, r) for r, v in enumerate(values(spec.date))]
        if spec.date in at
        else [None] * n
    )
    in_rows = values(INFERENCE_ID) if INFERENCE_ID in at else None
    ids = cells.inference_ids(in_rows, given_ids, header_id, n, new_id)
    return Rows(pd.DataFrame(data, columns=spec.features), list(days), ids)
