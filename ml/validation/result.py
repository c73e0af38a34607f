"""What a validation returns, and the wording every message shares. Pure: no pandas, no I/O.

A message is one line: `<file>: [column '<column>'] <what is wrong>. Expected <expected>. Got <found>.`
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

MAX_NAMES = 5  # column names listed in one message, then "..."
MAX_EXAMPLES = 5  # example values listed in one message


@dataclass(frozen=True)
class Failure:
    file: str  # the batch file(s) checked (comma-joined if several) or the partition dir
    column: str | None  # None for table-level checks (row count, column set, keys)
    expectation: str  # GX expectation type, or "schema" / "readable" for the pre-checks
    expected: str
    found: str
    message: str  # one line: file, column, what is wrong, expected, found


@dataclass(frozen=True)
class ValidationResult:
    success: bool
    day: str
    rows: int
    files: list[str]
    failures: list[Failure]
    checked: int  # number of checks evaluated (schema pre-checks + GX expectations)
    json_path: str | None
    html_path: str | None
    # every check with its outcome, for the reports: {type, column, kwargs, success, observed, source}
    expectations: list[dict[str, Any]] = field(default_factory=list, repr=False)
    not_checked: list[str] = field(default_factory=list)  # checks left out of the suite, and why
    # failed checks derived from the champion's training data, when validation.novelty does not quarantine:
    # values it never saw, recorded (and alerted) but not a reason to refuse the batch
    novelty: list[Failure] = field(default_factory=list)

    def summary(self) -> str:
        if self.success:
            passed = self.checked - len(self.novelty)
            return (
                f"{passed} expectations passed"
                + "".join(f"\n  novelty (not quarantined): {f.message}" for f in self.novelty)
                + "".join(f"\n  not checked: {why}" for why in self.not_checked)
            )
        return "\n".join(f.message for f in self.failures)

    def novelty_summary(self) -> str | None:
        """One line per novelty, or None."""
        return "\n".join(f.message for f in self.novelty) or None

    def to_dict(self) -> dict[str, Any]:
        return jsonable(asdict(self))


@dataclass(frozen=True)
class Problem:
    """What a failed check says: `what` follows the file (and the column), then expected and found."""

    what: str
    expected: str
    found: str


def failure(file: str, column: str | None, expectation: str, problem: Problem) -> Failure:
    """The Failure of `problem`, with its one-line message."""
    subject = f"column '{column}' {problem.what}" if column else problem.what
    message = f"{file}: {subject}. Expected {problem.expected}. Got {problem.found}."
    return Failure(
        file=file,
        column=column,
        expectation=expectation,
        expected=problem.expected,
        found=problem.found,
        message=" ".join(message.split()),
    )


def names(values: Sequence[str]) -> str:
    """Column names as a list literal, MAX_NAMES at most, then '...'."""
    shown = [repr(str(n)) for n in values[:MAX_NAMES]]
    return "[" + ", ".join(shown) + (", ..." if len(values) > MAX_NAMES else "") + "]"


def examples(values: Iterable[Any]) -> str:
    """Up to MAX_EXAMPLES distinct values as a list literal, then '...'."""
    seen: list[Any] = []
    more = False
    for v in values:
        v = py(v)
        if any(v == s or (v != v and s != s) for s in seen):  # v != v: NaN
            continue
        if len(seen) == MAX_EXAMPLES:
            more = True
            break
        seen.append(v)
    return "[" + ", ".join(repr(v) for v in seen) + (", ..." if more else "") + "]"


def py(value: Any) -> Any:
    """numpy/pandas scalars as Python values (for messages and JSON)."""
    if hasattr(value, "item") and not isinstance(value, str | bytes):
        try:
            return value.item()
        except (ValueError, AttributeError):
            return value
    return value


def num(x: Any) -> str:
    """A bound as written in a message: 23, 28.7695."""
    x = float(x)
    return str(int(x)) if x.is_integer() else f"{x:.6g}"


def jsonable(value: Any) -> Any:
    """`value` with numpy scalars, dates, tuples and sets turned into JSON types (NaN as None)."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [jsonable(v) for v in value]
    value = py(value)
    if isinstance(value, float) and value != value:
        return None
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)
