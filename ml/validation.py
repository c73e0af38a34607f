"""Validate a daily batch: schema pre-checks in pandas, then a Great Expectations 1.x suite.

The suite is derived from the dataset YAML (`validation:` section) and, once a champion exists, from its
training data (the *reference*): numeric ranges widened by `range_tolerance`, categorical domains with an
allowance of `max_unseen_share` unseen rows. Nothing is raised for bad data: every problem becomes a
`Failure` naming file, column, expectation, expected and found, so the pipeline can quarantine the day.

Great Expectations takes seconds to import, so it is imported lazily and one ephemeral context is kept per
process; each run registers its suite and validation definition under a unique name and removes them after.
"""

from __future__ import annotations

import datetime as dt
import difflib
import html
import json
import logging
import threading
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ml.config import Settings
from ml.data import as_date, batch_files, read_files
from ml.exceptions import SchemaError, UnreadableBatchError

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

MAX_NAMES = 5  # column names listed in one message, then "..."
MAX_EXAMPLES = 5  # example values listed in one message
# A feature allowed to be entirely null (floor 0) must still have values when the reference mostly had them.
REFERENCE_NULL_SHARE = 0.5
# `mostly` for "at least one value": any non-null row passes, an all-null column fails.
AT_LEAST_ONE = 1e-9
DAY_PARAMETER = "day"
JSON_NAME = "validation.json"
HTML_NAME = "validation.html"


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
    expectations: list[dict] = field(default_factory=list, repr=False)

    def summary(self) -> str:
        if self.success:
            return f"{self.checked} expectations passed"
        return "\n".join(f.message for f in self.failures)

    def to_dict(self) -> dict:
        return _jsonable(asdict(self))


# ---------------------------------------------------------------------------------------------- suite spec


def build_suite_spec(settings: Settings, reference: pd.DataFrame | None) -> list[dict]:
    """The expectations for a dataset as plain dicts `{type, kwargs, meta}`, in a stable order.

    The logical day is not part of the spec: the date check uses the suite parameter `day`
    (`{"$PARAMETER": "day"}`), filled in when the suite runs.

    Args:
        settings: the dataset's settings; `settings.validation` holds the YAML rules.
        reference: the champion's training data, or None before the first champion exists.

    Returns:
        A list of `{"type": "expect_...", "kwargs": {...}, "meta": {"id", "rule", "source"}}`.
    """

    v = settings.validation
    ref = reference if reference is not None and len(reference) else None
    yaml_name = settings.yaml_path.name
    spec: list[dict] = []

    def add(type_: str, rule: str, source: str, **kwargs: Any) -> None:
        ident = f"{rule}:{kwargs['column']}" if "column" in kwargs else rule
        spec.append(
            {
                "type": type_,
                "kwargs": _jsonable(kwargs),
                "meta": {"id": ident, "rule": rule, "source": source},
            }
        )

    add(
        "expect_table_row_count_to_be_between",
        "rows",
        f"validation.min_rows/max_rows in {yaml_name}",
        min_value=v.min_rows,
        max_value=v.max_rows,
    )
    date = settings.date_column
    add(
        "expect_column_values_to_not_be_null",
        "date_present",
        f"date_column in {yaml_name}",
        column=date,
        mostly=1.0,
    )
    add(
        "expect_column_values_to_be_in_set",
        "date",
        "the logical day",
        column=date,
        value_set={"$PARAMETER": DAY_PARAMETER},
    )

    label = settings.label
    add(
        "expect_column_values_to_not_be_null",
        "label_present",
        f"label.column in {yaml_name}",
        column=label,
        mostly=1.0,
    )
    classes = _label_classes(settings, ref)
    if classes is not None:
        add(
            "expect_column_values_to_be_in_set",
            "label",
            f"label.positive in {yaml_name}" + (" and the reference" if ref is not None else ""),
            column=label,
            value_set=classes,
        )
    else:
        add(
            "expect_column_unique_value_count_to_be_between",
            "label_classes",
            "a binary label",
            column=label,
            max_value=2,
        )

    if settings.keys:
        add(
            "expect_compound_columns_to_be_unique",
            "keys",
            f"keys in {yaml_name}",
            column_list=list(settings.keys),
        )

    for col in settings.features:
        floor = v.non_null_floor(col)
        if floor > 0:
            add(
                "expect_column_values_to_not_be_null",
                "non_null",
                f"validation.min_non_null in {yaml_name}",
                column=col,
                mostly=min(floor, 1.0),
            )
        elif ref is not None and col in ref.columns:
            ref_null = float(ref[col].isna().mean())
            if ref_null < REFERENCE_NULL_SHARE:
                add(
                    "expect_column_values_to_not_be_null",
                    "not_all_null",
                    f"the reference column is {ref_null:.0%} null",
                    column=col,
                    mostly=AT_LEAST_ONE,
                )

        if col in settings.numeric:
            bounds = _range(settings, col, ref)
            if bounds is not None:
                (lo, hi), source = bounds
                add(
                    "expect_column_values_to_be_between",
                    "range",
                    source,
                    column=col,
                    min_value=lo,
                    max_value=hi,
                    mostly=1.0,
                )
        elif ref is not None and col in ref.columns and v.max_unseen_share < 1:
            values = ref[col].dropna()
            value_set = sorted({str(x) for x in values})
            if value_set:
                add(
                    "expect_column_values_to_be_in_set",
                    "domain",
                    f"{len(value_set)} categories of the reference",
                    column=col,
                    value_set=value_set,
                    mostly=round(1.0 - v.max_unseen_share, 6),
                )

    # Hard ranges on declared non-feature columns (features were handled above).
    for col, (lo, hi) in sorted(v.ranges.items()):
        if col not in settings.numeric and col in settings.columns:
            add(
                "expect_column_values_to_be_between",
                "range",
                f"validation.ranges in {yaml_name}",
                column=col,
                min_value=lo,
                max_value=hi,
                mostly=1.0,
            )
    return spec


def _label_classes(settings: Settings, ref: pd.DataFrame | None) -> list | None:
    """The two label values, or None when they cannot be known (then only "at most 2 classes" is checked)."""
    positive = _py(settings.positive)
    if isinstance(positive, bool):
        return [False, True]
    if isinstance(positive, int | float) and positive in (0, 1):
        return [0, 1]
    if ref is not None and settings.label in ref.columns:
        seen = {_py(x) for x in ref[settings.label].dropna().unique()} | {positive}
        if len(seen) == 2:
            return sorted(seen, key=str)
    return None


def _range(settings: Settings, col: str, ref: pd.DataFrame | None) -> tuple[tuple[float, float], str] | None:
    """Hard bounds from the YAML when declared for the column, else the reference range widened."""
    import pandas as pd

    v = settings.validation
    if col in v.ranges:
        lo, hi = v.ranges[col]
        return (float(lo), float(hi)), f"validation.ranges in {settings.yaml_path.name}"
    if ref is None or col not in ref.columns:
        return None
    values = pd.to_numeric(ref[col], errors="coerce").dropna()
    if values.empty:
        return None
    ref_lo, ref_hi = float(values.min()), float(values.max())
    span = ref_hi - ref_lo
    # A constant reference column has no span; widen by its magnitude instead so it is not a point check.
    margin = v.range_tolerance * (span if span > 0 else max(abs(ref_hi), 1.0))
    bounds = (round(ref_lo - margin, 6), round(ref_hi + margin, 6))
    source = f"reference range [{_num(ref_lo)}, {_num(ref_hi)}] widened by {v.range_tolerance:g} of its span"
    return bounds, source


# ---------------------------------------------------------------------------------------------- validation


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
    schema_records, failures, unusable = _schema_checks(settings, frame, label)
    records = list(schema_records)

    spec = build_suite_spec(settings, reference)
    present = set(frame.columns) - unusable
    # expectations on absent or mistyped columns are reported as skipped; the schema failure explains why
    runnable = [entry for entry in spec if all(c in present for c in _entry_columns(entry))]

    gx_frame = _gx_frame(settings, frame, present)
    outcomes = _run_gx(settings, runnable, gx_frame, day) if runnable else {}
    for entry in spec:
        ident = entry["meta"]["id"]
        kwargs = _resolved_kwargs(entry, day)
        column = entry["kwargs"].get("column")
        record = {
            "type": entry["type"],
            "column": column,
            "kwargs": kwargs,
            "source": entry["meta"]["source"],
            "success": None,
            "observed": "skipped: column missing or of the wrong type",
        }
        if ident in outcomes:
            success, result, error = outcomes[ident]
            record["success"] = success
            record["observed"] = error or _observed(result)
            if not success:
                failures.append(_gx_failure(settings, entry, kwargs, result, error, label, day))
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
        expectations=_jsonable(records),
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
        where = _display(settings, partition)
        found = "no such folder" if not partition.is_dir() else "no *.parquet data file in it"
        failure = _failure(
            where, None, "readable", "at least one *.parquet data file", found, "has no batch file"
        )
        result = _unreadable(day, files, [failure])
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
        result = _write_reports(settings, result)
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


# ---------------------------------------------------------------------------------------------- schema


def _schema_checks(
    settings: Settings, frame: pd.DataFrame, label: str
) -> tuple[list[dict], list[Failure], set[str]]:
    """Column set and dtypes. Returns (records, failures, columns GX must not touch)."""
    import pandas as pd
    from pandas.api import types as ptypes

    present = [str(c) for c in frame.columns]
    expected = settings.columns
    missing = [c for c in expected if c not in present and c != settings.label]
    extra = [c for c in present if c not in expected]
    hints = _rename_hints([*missing, *([settings.label] if settings.label not in present else [])], extra)
    yaml_name = settings.yaml_path.name
    failures: list[Failure] = []
    records: list[dict] = []

    def record(name: str, success: bool, observed: str) -> None:
        records.append(
            {
                "type": "schema",
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
        found = f"{len(present)} columns without {_names(missing)}" + hint_text(missing)
        what = f"misses {len(missing)} column{'s' if len(missing) > 1 else ''} {_names(missing)}"
        failures.append(
            _failure(label, None, "schema", f"the {len(expected)} columns of {yaml_name}", found, what)
        )
    record("columns present", not missing, f"missing {_names(missing)}" if missing else "all present")

    if extra:
        found = _names(extra) + hint_text(hints)
        what = f"has {len(extra)} unexpected column{'s' if len(extra) > 1 else ''} {_names(extra)}"
        expected_text = f"only the columns of {yaml_name} (list extra ones under `drop:` to keep them)"
        failures.append(_failure(label, None, "schema", expected_text, found, what))
    record("no unexpected columns", not extra, f"unexpected {_names(extra)}" if extra else "none")

    if settings.label not in present:
        old_new = hint_text([settings.label])
        failures.append(
            _failure(
                label,
                settings.label,
                "schema",
                f"the label column '{settings.label}' (positive class {settings.positive!r})",
                f"no such column{old_new}",
                "(the label) is missing",
            )
        )
    record("label present", settings.label in present, "present" if settings.label in present else "missing")

    unusable: set[str] = set()
    bad_types: list[str] = []
    n = len(frame)
    for col in settings.features:
        if col not in present:
            continue
        series = frame[col]
        if col in settings.numeric:
            if _numeric_ok(series, ptypes):
                continue
            bad = [x for x in series.dropna() if not _is_number(x)]
            what, expected_text = "must be numeric", "int or float values"
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
            what, expected_text = "must be text (categorical)", "str values"
        found = f"{series.dtype} ({len(bad)}/{n} rows, e.g. {_examples(bad)})"
        failures.append(_failure(label, col, "schema", expected_text, found, what))
        unusable.add(col)
        bad_types.append(col)
    record(
        "feature dtypes",
        not bad_types,
        f"wrong type: {_names(bad_types)}" if bad_types else "all as declared",
    )
    return records, failures, unusable


def _numeric_ok(series: pd.Series, ptypes: Any) -> bool:
    if ptypes.is_bool_dtype(series):
        return False
    if ptypes.is_integer_dtype(series) or ptypes.is_float_dtype(series):
        return True
    # An object column of numbers only (e.g. written all-null, or as Python floats) is numeric data;
    # nulls are left to the non-null expectations.
    return ptypes.is_object_dtype(series) and all(_is_number(x) for x in series.dropna())


def _is_number(x: Any) -> bool:
    import numbers

    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def _rename_hints(missing: Sequence[str], extra: Sequence[str]) -> dict[str, str]:
    """{missing column: extra column that looks like its new name}."""
    hints: dict[str, str] = {}
    pool = {e.lower(): e for e in extra}
    for col in missing:
        match = difflib.get_close_matches(col.lower(), list(pool), n=1, cutoff=0.6)
        if match:
            hints[col] = pool.pop(match[0])
    return hints


# ---------------------------------------------------------------------------------------------- GX


_GX_LOCK = threading.Lock()
_GX: tuple[Any, Any] | None = None


def _gx_context() -> tuple[Any, Any]:
    """(ephemeral context, whole-dataframe batch definition), created once per process (~3-5 s)."""
    global _GX
    if _GX is None:
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        context = gx.get_context(mode="ephemeral")
        # tqdm bars on stderr would flood task logs
        context.variables.progress_bars = ProgressBarsConfig(globally=False)
        batch_definition = (
            context.data_sources.add_pandas("driftwatch")
            .add_dataframe_asset("batch")
            .add_batch_definition_whole_dataframe("whole")
        )
        _GX = (context, batch_definition)
    return _GX


def _run_gx(
    settings: Settings, spec: list[dict], frame: pd.DataFrame, day: dt.date
) -> dict[str, tuple[bool, dict, str | None]]:
    """Run the expectations on the frame. Returns {meta id: (success, result dict, error message)}."""
    import great_expectations as gx
    import great_expectations.expectations as gxe

    expectations = []
    for entry in spec:
        cls = getattr(gxe, "".join(part.title() for part in entry["type"].split("_")))
        expectations.append(cls(**entry["kwargs"], meta=dict(entry["meta"])))

    with _GX_LOCK:
        context, batch_definition = _gx_context()
        # unique names: one context serves every call in the process
        name = f"{settings.name}-{day.isoformat()}-{uuid.uuid4().hex[:12]}"
        suite = context.suites.add(gx.ExpectationSuite(name=name, expectations=expectations))
        try:
            definition = context.validation_definitions.add(
                gx.ValidationDefinition(name=name, data=batch_definition, suite=suite)
            )
            try:
                run = definition.run(
                    batch_parameters={"dataframe": frame},
                    expectation_parameters={DAY_PARAMETER: [day.isoformat()]},
                )
            finally:
                context.validation_definitions.delete(name)
        finally:
            context.suites.delete(name)

    outcomes: dict[str, tuple[bool, dict, str | None]] = {}
    for r in run.results:
        ident = (r.expectation_config.meta or {}).get("id")
        outcomes[ident] = (bool(r.success), dict(r.result or {}), _exception_message(r.exception_info))
    return outcomes


def _exception_message(info: Any) -> str | None:
    """GX reports errors either flat or keyed by metric id; return the first message."""
    if not info:
        return None
    if isinstance(info, Mapping) and "raised_exception" in info:
        return str(info.get("exception_message")) if info.get("raised_exception") else None
    if isinstance(info, Mapping):
        for value in info.values():
            message = _exception_message(value)
            if message:
                return message
    return None


def _gx_frame(settings: Settings, frame: pd.DataFrame, usable: set[str]) -> pd.DataFrame:
    """The frame GX sees: the date column as ISO strings, object-typed numeric columns as float."""
    import pandas as pd
    from pandas.api import types as ptypes

    out = frame
    date = settings.date_column
    if date in usable:
        series = frame[date]
        if ptypes.is_datetime64_any_dtype(series):
            normalised = series.dt.strftime("%Y-%m-%d")
        else:
            normalised = series.map(lambda x: x.isoformat()[:10] if isinstance(x, dt.date) else x)
        if not normalised.equals(series):
            out = out.copy()
            out[date] = normalised
    for col in settings.numeric:
        if col in usable and ptypes.is_object_dtype(frame[col]):
            if out is frame:
                out = out.copy()
            out[col] = pd.to_numeric(frame[col], errors="coerce").astype("float64")
    return out


def _entry_columns(entry: dict) -> list[str]:
    kwargs = entry["kwargs"]
    if "column" in kwargs:
        return [kwargs["column"]]
    return list(kwargs.get("column_list", []))


def _resolved_kwargs(entry: dict, day: dt.date) -> dict:
    kwargs = dict(entry["kwargs"])
    if kwargs.get("value_set") == {"$PARAMETER": DAY_PARAMETER}:
        kwargs["value_set"] = [day.isoformat()]
    return kwargs


def _observed(result: Mapping[str, Any]) -> str:
    if "observed_value" in result:
        return f"observed {_py(result['observed_value'])!r}"
    if "unexpected_count" in result:
        count, total = result.get("unexpected_count") or 0, result.get("element_count") or 0
        text = f"{count}/{total} rows unexpected"
        if count:
            text += f", e.g. {_examples(result.get('partial_unexpected_list') or [])}"
        return text
    return json.dumps(_jsonable(dict(result)), default=str)[:300]


def _gx_failure(
    settings: Settings,
    entry: dict,
    kwargs: dict,
    result: Mapping[str, Any],
    error: str | None,
    label: str,
    day: dt.date,
) -> Failure:
    rule, source, type_ = entry["meta"]["rule"], entry["meta"]["source"], entry["type"]
    column = kwargs.get("column")
    total = result.get("element_count") or 0
    count = result.get("unexpected_count") or 0
    examples = _examples(result.get("partial_unexpected_list") or [])
    nulls = result.get("missing_count")
    if rule == "rows":
        what = "has a row count out of bounds"
        expected = f"between {kwargs['min_value']} and {kwargs['max_value']} rows ({source})"
        found = f"{_py(result.get('observed_value'))} rows"
    elif rule == "date_present":
        what, expected, found = "has rows without a date", "a date on every row", f"{count}/{total} rows null"
    elif rule == "date":
        what = "holds rows of another day"
        expected = f"every row dated {day.isoformat()} (the logical day)"
        found = f"{count}/{total} rows dated otherwise, e.g. {examples}"
    elif rule == "label_present":
        what, expected, found = (
            "(the label) has missing values",
            "a class on every row",
            f"{count}/{total} rows null",
        )
    elif rule == "label":
        what = "(the label) must be binary"
        expected = f"values in {kwargs['value_set']!r}"
        found = f"{count}/{total - (nulls or 0)} rows outside, e.g. {examples}"
    elif rule == "label_classes":
        what, expected = "(the label) must be binary", "at most 2 classes"
        found = f"{_py(result.get('observed_value'))} classes"
    elif rule == "keys":
        keys = ", ".join(kwargs["column_list"])
        what = f"has duplicate keys ({keys})"
        expected = f"each ({keys}) at most once per day ({source})"
        dupes = [
            tuple(d.values()) if isinstance(d, Mapping) else d
            for d in result.get("partial_unexpected_list") or []
        ]
        found = f"{count}/{total} rows sharing a key, e.g. {_examples(dupes)}"
    elif rule == "non_null":
        mostly = float(kwargs["mostly"])
        share = (total - count) / total if total else 0.0
        what = "has too many missing values"
        expected = f"at least {mostly:.0%} non-null ({source})"
        found = f"{share:.1%} non-null ({count}/{total} rows null)"
    elif rule == "not_all_null":
        what = "is entirely null"
        expected = f"at least one value ({source})"
        found = f"{count}/{total} rows null"
    elif rule == "range":
        what = "has values out of range"
        expected = f"values in [{_num(kwargs['min_value'])}, {_num(kwargs['max_value'])}] ({source})"
        found = f"{count}/{total - (nulls or 0)} values outside, e.g. {examples}"
    elif rule == "domain":
        allowance = 1.0 - float(kwargs["mostly"])
        pct = result.get("unexpected_percent") or 0.0
        what = "has too many categories unseen in the reference"
        expected = f"at most {allowance:.0%} of rows outside the {source}"
        found = f"{pct:.1f}% ({count}/{total - (nulls or 0)} rows), e.g. {examples}"
    else:  # a rule added to build_suite_spec without a message of its own
        what, expected, found = f"fails {type_}", json.dumps(_jsonable(kwargs)), _observed(result)
    if error:
        found = f"an error while checking: {error}"
    return _failure(label, column, type_, expected, found, what)


# ---------------------------------------------------------------------------------------------- helpers


def _failure(
    file: str, column: str | None, expectation: str, expected: str, found: str, what: str
) -> Failure:
    subject = f"column '{column}' {what}" if column else what
    message = f"{file}: {subject}. Expected {expected}. Got {found}."
    return Failure(
        file=file,
        column=column,
        expectation=expectation,
        expected=expected,
        found=found,
        message=" ".join(message.split()),
    )


def _unreadable_failure(settings: Settings, path: Path, exc: Exception) -> Failure:
    reason = str(exc)
    prefix = f"{path}: "
    if reason.startswith(prefix):
        reason = reason[len(prefix) :]
    if path.stat().st_size == 0:
        found = "an empty file (0 bytes)"
    else:
        found = reason.removesuffix(".").removeprefix("cannot be read as parquet ").strip("()")
    return _failure(
        _display(settings, path), None, "readable", "a readable parquet file", found, "cannot be read"
    )


def _unreadable(day: dt.date, files: Sequence[Path], failures: list[Failure]) -> ValidationResult:
    records = [
        {
            "type": "readable",
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


def _names(names: Sequence[str]) -> str:
    shown = [repr(str(n)) for n in names[:MAX_NAMES]]
    return "[" + ", ".join(shown) + (", ..." if len(names) > MAX_NAMES else "") + "]"


def _examples(values: Iterable[Any]) -> str:
    """Up to MAX_EXAMPLES distinct values as a list literal, then '...'."""
    seen: list[Any] = []
    more = False
    for v in values:
        v = _py(v)
        if any(v == s or (v != v and s != s) for s in seen):  # v != v: NaN
            continue
        if len(seen) == MAX_EXAMPLES:
            more = True
            break
        seen.append(v)
    return "[" + ", ".join(repr(v) for v in seen) + (", ..." if more else "") + "]"


def _py(value: Any) -> Any:
    """numpy/pandas scalars as Python values (for messages and JSON)."""
    if hasattr(value, "item") and not isinstance(value, str | bytes):
        try:
            return value.item()
        except (ValueError, AttributeError):
            return value
    return value


def _num(x: Any) -> str:
    x = float(x)
    return str(int(x)) if x.is_integer() else f"{x:.6g}"


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_jsonable(v) for v in value]
    value = _py(value)
    if isinstance(value, float) and value != value:
        return None
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)


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
    values = _gx_frame(settings, frame, {date})[date].dropna() if date in frame.columns else []
    if len(values):
        counts = values.astype(str).value_counts()
        # ties broken by value so the choice does not depend on row order
        best = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0][0]
        try:
            return as_date(best)
        except ValueError:
            pass
    raise SchemaError(
        f"{path}: cannot tell the logical day. Expected a date=YYYY-MM-DD folder in the path or ISO dates in "
        f"column '{date}'. Got neither."
    )


# ---------------------------------------------------------------------------------------------- reports


def _write_reports(settings: Settings, result: ValidationResult) -> ValidationResult:
    target = settings.report_dir(as_date(result.day))
    target.mkdir(parents=True, exist_ok=True)
    json_path, html_path = target / JSON_NAME, target / HTML_NAME
    result = replace(result, json_path=str(json_path), html_path=str(html_path))
    payload = {"dataset": settings.name, **result.to_dict()}
    _atomic_write(json_path, json.dumps(payload, indent=2, default=str))
    _atomic_write(html_path, render_html(settings, result))
    return result


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def render_html(settings: Settings, result: ValidationResult) -> str:
    """A self-contained HTML page: banner, rows, files, failures, then every check with its outcome."""
    e = html.escape
    title = f"Validation — {settings.name} {result.day}"
    verdict = "PASSED" if result.success else "FAILED"
    colour = "#1b7f3b" if result.success else "#b42318"
    rows = []
    for i, rec in enumerate(result.expectations, 1):
        kwargs = {k: _short(v) for k, v in (rec.get("kwargs") or {}).items() if k != "column"}
        status = {True: "pass", False: "FAIL", None: "skipped"}[rec.get("success")]
        rows.append(
            f"<tr class='{status.lower()}'><td>{i}</td><td>{e(str(rec.get('type')))}</td>"
            f"<td>{e(str(rec.get('column') or ''))}</td><td><code>{e(json.dumps(kwargs, default=str))}</code></td>"
            f"<td>{e(status)}</td><td>{e(str(rec.get('observed') or ''))}</td>"
            f"<td>{e(str(rec.get('source') or ''))}</td></tr>"
        )
    failures = "".join(f"<li>{e(f.message)}</li>" for f in result.failures)
    files = "".join(f"<li><code>{e(f)}</code></li>" for f in result.files) or "<li>none</li>"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{e(title)}</title>
<style>
body{{font-family:system-ui,sans-serif;margin:1.5rem;color:#1d2939}}
.banner{{padding:.8rem 1rem;color:#fff;background:{colour};border-radius:6px;font-weight:600}}
table{{border-collapse:collapse;width:100%;font-size:.85rem}}
td,th{{border:1px solid #d0d5dd;padding:.3rem .5rem;text-align:left;vertical-align:top}}
tr.fail td{{background:#fef3f2}} tr.skipped td{{color:#98a2b3}} code{{font-size:.8rem;word-break:break-all}}
</style></head><body>
<h1>{e(title)}</h1>
<div class="banner">{e(verdict)}: {e(result.summary().splitlines()[0] if result.success else f"{len(result.failures)} failure(s)")}</div>
<p>Rows: {result.rows} &middot; checks evaluated: {result.checked}</p>
<h2>Files</h2><ul>{files}</ul>
{f"<h2>Failures</h2><ul>{failures}</ul>" if failures else ""}
<h2>Checks</h2>
<table><thead><tr><th>#</th><th>expectation</th><th>column</th><th>kwargs</th><th>result</th><th>observed</th>
<th>why</th></tr></thead><tbody>
{"".join(rows)}
</tbody></table></body></html>
"""


def _short(value: Any, limit: int = 12) -> Any:
    if isinstance(value, list) and len(value) > limit:
        return [*value[:limit], f"... ({len(value)} values)"]
    return value
