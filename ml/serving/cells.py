"""One value of a request to the model server, checked (pure): a number, a category, a date, an inference id.
Each check returns the value as it is scored and captured, or raises `InputError`, whose message names the
column, the row (from 0), what is expected and what was found:

    column 'distance' row 3: expected a number or null, got 'abc'.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Callable, Sequence
from typing import Any

from ml.capture import INFERENCE_ID

IDS_KEY = "inference_ids"
ID_HEADER = "X-Inference-Id"
MAX_ID_CHARS = 200  # as ml.capture.check_labels allows for the labels sent back with these ids
FIRST_DAY, LAST_DAY = dt.date(1900, 1, 1), dt.date(2199, 12, 31)
NUMBER = "a number or null"
CATEGORY = "a string or null"
DAY = f"a date YYYY-MM-DD between {FIRST_DAY} and {LAST_DAY}, or null"
ID = f"a non-empty string of at most {MAX_ID_CHARS} characters"
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
_DAY = re.compile(r"(\d{4}-\d{2}-\d{2})([T ].+)?")
ABSENT = object()  # a record without a key the other records of the request have


class InputError(ValueError):
    """A request the server refuses, with its HTTP status; `to_dict()` is the JSON body of the answer."""

    def __init__(
        self, status: int, message: str, *, field: str | None, expected: str | None, row: int | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.field, self.expected, self.row = status, field, expected, row

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"error": str(self), "field": self.field, "expected": self.expected}
        if self.row is not None:
            out["row"] = self.row
        return out


def wrong(where: str, expected: str, found: str, *, field: str, row: int | None = None) -> InputError:
    """422 "<where>: expected <expected>, got <found>."."""
    return InputError(
        422, f"{where}: expected {expected}, got {found}.", field=field, expected=expected, row=row
    )


def show(value: Any) -> str:
    """A found value as a message quotes it: short, with JSON's names for null, true and containers."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list | tuple):
        return "a list"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def names(items: Sequence[Any], limit: int = 5) -> str:
    """['a', 'b', ...]: `limit` names at most."""
    return "[" + ", ".join([show(n) for n in items[:limit]] + (["..."] if len(items) > limit else [])) + "]"


def _cell(column: str, row: int) -> str:
    return f"column {show(column)} row {row}"


def _absent(column: str, row: int) -> InputError:
    return wrong(
        _cell(column, row),
        "a value or null",
        "no value (send null for a missing value)",
        field=column,
        row=row,
    )


def number(v: Any, column: str, row: int, *, typed: bool) -> float:
    """A numeric feature: JSON numbers (`typed`) or CSV text; null, NaN or an empty field is missing (NaN)."""
    if v is ABSENT:
        raise _absent(column, row)
    if v is None:
        return math.nan
    x: float | None = None
    if typed and isinstance(v, int | float) and not isinstance(v, bool):
        try:
            x = float(v)
        except OverflowError:  # an integer beyond float range
            x = math.inf
    elif not typed:
        text = v.strip()
        if text == "" or text.lower() == "nan":
            return math.nan
        x = float(text) if _NUMBER.fullmatch(text) else None
    if x is None:
        raise wrong(_cell(column, row), NUMBER, show(v), field=column, row=row)
    if math.isinf(x):
        raise wrong(_cell(column, row), "a finite number or null", show(v), field=column, row=row)
    return x


def category(v: Any, column: str, row: int, *, typed: bool) -> str | None:
    """A categorical feature: a string, or null (an empty CSV field) when missing."""
    if v is ABSENT:
        raise _absent(column, row)
    if v is None or (not typed and v == ""):
        return None
    if not isinstance(v, str):
        raise wrong(_cell(column, row), CATEGORY, show(v), field=column, row=row)
    return unicode(v, _cell(column, row), column, row)


def unicode(v: str, where: str, field: str, row: int | None) -> str:
    """Parquet stores UTF-8: a lone surrogate (JSON "\\ud800") would make the capture file unwritable."""
    try:
        v.encode("utf-8")
    except UnicodeEncodeError:
        raise wrong(
            where, "valid Unicode text", "a string with a lone surrogate", field=field, row=row
        ) from None
    return v


def day(v: Any, column: str, row: int) -> dt.date | None:
    """The row's own day (its date column): YYYY-MM-DD, or a full ISO timestamp whose date it is; None when
    not given (the server captures the row under the day it arrived)."""
    if v is ABSENT or v is None or v == "":
        return None
    match = _DAY.fullmatch(v) if isinstance(v, str) else None
    found = None
    if match:
        try:
            found = dt.date.fromisoformat(match.group(1))
            if match.group(2):
                dt.datetime.fromisoformat(v)  # the rest of a timestamp must be valid too
        except ValueError:
            found = None
    if found is None or not FIRST_DAY <= found <= LAST_DAY:
        raise wrong(_cell(column, row), DAY, show(v), field=column, row=row)
    return found


def inference_id(v: Any, where: str, field: str, row: int) -> str:
    if not isinstance(v, str) or not v or len(v) > MAX_ID_CHARS:
        found = f"a string of {len(v)} characters" if isinstance(v, str) and v else show(v)
        raise wrong(where, ID, found, field=field, row=row)
    return unicode(v, where, field, row)


def inference_ids(
    in_rows: list[Any] | None, given: Any, header: str | None, n: int, new_id: Callable[[], str]
) -> list[str]:
    """The ids of a request's `n` rows, from one place: its `inference_id` column (null: generated), the
    top-level `inference_ids` list (one string per row), or the X-Inference-Id header (one row); otherwise
    generated. Refused: two places, a list of another length, a non-string, an id twice."""
    places = [
        p
        for p, v in ((f"column {INFERENCE_ID!r}", in_rows), (IDS_KEY, given), (ID_HEADER, header))
        if v is not None
    ]
    if len(places) > 1:
        raise wrong("inference ids", "them in one place", " and ".join(places), field=IDS_KEY)
    ids: list[str | None] = [None] * n
    if header is not None:
        if n != 1:
            raise wrong(
                f"header {ID_HEADER}",
                f'a single-row request (else send "{IDS_KEY}")',
                f"{n} rows",
                field=ID_HEADER,
            )
        ids = [inference_id(header, f"header {ID_HEADER}", ID_HEADER, 0)]
    elif given is not None:
        expected = f"a list of {n} strings, one per row"
        if not isinstance(given, list):
            raise wrong(f"'{IDS_KEY}'", expected, show(given), field=IDS_KEY)
        if len(given) != n:
            more = "more" if len(given) > n else "fewer"
            raise wrong(f"'{IDS_KEY}'", expected, f"{more} ids ({len(given)}) than rows ({n})", field=IDS_KEY)
        ids = [inference_id(v, f"'{IDS_KEY}' row {r}", IDS_KEY, r) for r, v in enumerate(given)]
    elif in_rows is not None:
        ids = [
            None
            if v is None or v == "" or v is ABSENT
            else inference_id(v, _cell(INFERENCE_ID, r), INFERENCE_ID, r)
            for r, v in enumerate(in_rows)
        ]
    first: dict[str, int] = {}
    for r, i in enumerate(ids):
        if i is not None and i in first:
            raise wrong(
                f"inference id {show(i)}",
                "a different id per row",
                f"it twice in one request (rows {first[i]} and {r})",
                field=IDS_KEY if given is not None else INFERENCE_ID,
                row=r,
            )
        if i is not None:
            first[i] = r
    return [i if i is not None else new_id() for i in ids]
