"""The schema pre-checks, in pandas before Great Expectations runs: the column set (missing, unexpected,
renamed columns, the label) and the features' dtypes. Pure: a frame in, records and failures out.

A column that is missing or of the wrong type is left out of the GX suite: its expectations are reported as
skipped, and the schema failure says why.
"""

from __future__ import annotations

import difflib
import numbers
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from ml.config import Settings
from ml.validation.result import Failure, Problem, examples, failure, names

if TYPE_CHECKING:
    import pandas as pd

SCHEMA = "schema"  # the `expectation` of a schema failure


def schema_checks(
    settings: Settings, frame: pd.DataFrame, file: str
) -> tuple[list[dict[str, Any]], list[Failure], set[str]]:
    """Column set and dtypes of `frame` (read from `file`).

    Returns:
        (records of the four checks for the report, failures, columns GX must not touch).
    """
    import pandas as pd
    from pandas.api import types as ptypes

    present = [str(c) for c in frame.columns]
    expected = settings.columns
    missing = [c for c in expected if c not in present and c != settings.label]
    extra = [c for c in present if c not in expected and c not in settings.optional_columns]
    hints = rename_hints([*missing, *([settings.label] if settings.label not in present else [])], extra)
    yaml_name = settings.yaml_path.name
    failures: list[Failure] = []
    records: list[dict[str, Any]] = []

    def record(name: str, success: bool, observed: str) -> None:
        records.append(
            {
                "type": SCHEMA,
                "column": None,
                "kwargs": {"check": name},
                "source": yaml_name,
                "success": success,
                "observed": observed,
            }
        )

    def hint_text(columns: Iterable[str]) -> str:
        return "".join(
            f"; '{hints[c]}' looks like '{c}' renamed (rename it back)" for c in columns if c in hints
        )

    if missing:
        what = f"misses {len(missing)} column{'s' if len(missing) > 1 else ''} {names(missing)}"
        found = f"{len(present)} columns without {names(missing)}" + hint_text(missing)
        problem = Problem(what, f"the {len(expected)} columns of {yaml_name}", found)
        failures.append(failure(file, None, SCHEMA, problem))
    record("columns present", not missing, f"missing {names(missing)}" if missing else "all present")

    if extra:
        what = f"has {len(extra)} unexpected column{'s' if len(extra) > 1 else ''} {names(extra)}"
        allowed = f"only the columns of {yaml_name} (list extra ones under `drop:` to keep them)"
        failures.append(failure(file, None, SCHEMA, Problem(what, allowed, names(extra) + hint_text(hints))))
    record("no unexpected columns", not extra, f"unexpected {names(extra)}" if extra else "none")

    if settings.label not in present:
        problem = Problem(
            "(the label) is missing",
            f"the label column '{settings.label}'"
            + (
                f" (positive class {settings.positive!r})"
                if settings.task == "binary"
                else f" ({settings.task})"
            ),
            f"no such column{hint_text([settings.label])}",
        )
        failures.append(failure(file, settings.label, SCHEMA, problem))
    record("label present", settings.label in present, "present" if settings.label in present else "missing")

    unusable: set[str] = set()
    bad_types: list[str] = []
    n = len(frame)
    for col in settings.features:
        if col not in present:
            continue
        series = frame[col]
        if col in settings.numeric:
            if numeric_ok(series):
                continue
            bad = [x for x in series.dropna() if not is_number(x)]
            what, allowed = "must be numeric", "int or float values"
        else:
            text_dtype = (
                ptypes.is_object_dtype(series)
                or ptypes.is_string_dtype(series)
                or isinstance(series.dtype, pd.CategoricalDtype)
            )
            if not text_dtype:
                bad = list(series.dropna())
            else:
                bad = [x for x in series.dropna() if not isinstance(x, str)]
                if not bad:
                    continue
            what, allowed = "must be text (categorical)", "str values"
        found = f"{series.dtype} ({len(bad)}/{n} rows, e.g. {examples(bad)})"
        failures.append(failure(file, col, SCHEMA, Problem(what, allowed, found)))
        unusable.add(col)
        bad_types.append(col)
    if settings.task == "regression" and settings.label in present and not numeric_ok(frame[settings.label]):
        label = frame[settings.label]
        bad = [x for x in label.dropna() if not is_number(x)]
        found = f"{label.dtype} ({len(bad)}/{n} rows, e.g. {examples(bad)})"
        problem = Problem("(the label of a regression) must be numeric", "int or float values", found)
        failures.append(failure(file, settings.label, SCHEMA, problem))
        unusable.add(settings.label)
        bad_types.append(settings.label)
    record(
        "feature dtypes",
        not bad_types,
        f"wrong type: {names(bad_types)}" if bad_types else "all as declared",
    )
    return records, failures, unusable


def numeric_ok(series: pd.Series) -> bool:
    from pandas.api import types as ptypes

    if ptypes.is_bool_dtype(series):
        return False
    if ptypes.is_integer_dtype(series) or ptypes.is_float_dtype(series):
        return True
    # An object column of numbers only (e.g. written all-null, or as Python floats) is numeric data;
    # nulls are left to the non-null expectations.
    return ptypes.is_object_dtype(series) and all(is_number(x) for x in series.dropna())


def is_number(x: Any) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def rename_hints(missing: Sequence[str], extra: Sequence[str]) -> dict[str, str]:
    """{missing column: extra column that looks like its new name}."""
    hints: dict[str, str] = {}
    pool = {e.lower(): e for e in extra}
    for col in missing:
        match = difflib.get_close_matches(col.lower(), list(pool), n=1, cutoff=0.6)
        if match:
            hints[col] = pool.pop(match[0])
    return hints
