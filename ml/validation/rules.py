"""The batch rules, each declared once: the Great Expectations expectation it asks for, and what it says when
that expectation fails.

Pure: the dataset's settings and the champion's training data (the *reference*) in, expectation specs out;
GX's result of a failed expectation in, a message out. Nothing here imports Great Expectations or touches a
file (`ml.validation.gx` runs the suite, `ml.validation.batch` reads the batch and writes the result).

A rule is one class (`ml.validation.base`): its `name` (the tag in the expectation's meta), the GX
`expectation` type it asks for, `expectations()` (or `for_column()` for a `FeatureRule`, asked once per
feature column) building the expectation's arguments from the settings and the reference, and `problem()`
wording a failure: what is wrong, what was expected, what was found. Defining the class registers it; the
order of this file is the order of the suite and of the messages. A rule without `problem()` is refused
when this module is imported.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from ml.config import Settings
from ml.validation.base import DAY_PARAMETER, RULES, Basis, Expectation, FeatureRule, Found, Rule
from ml.validation.result import Problem, examples, names, num, py

if TYPE_CHECKING:
    import pandas as pd

# A feature allowed to be entirely null (floor 0) must still have values when the reference mostly had them.
REFERENCE_NULL_SHARE = 0.5
# `mostly` for "at least one value": any non-null row passes, an all-null column fails.
AT_LEAST_ONE = 1e-9

NOT_NULL = "expect_column_values_to_not_be_null"
IN_SET = "expect_column_values_to_be_in_set"
BETWEEN = "expect_column_values_to_be_between"


# ---------------------------------------------------------------------------------------------- table


class RowCount(Rule):
    """The row count within validation.min_rows and max_rows."""

    name = "rows"
    expectation = "expect_table_row_count_to_be_between"

    def expectations(self, basis: Basis) -> Iterator[Expectation]:
        v = basis.settings.validation
        source = f"validation.min_rows/max_rows in {basis.yaml}"
        yield self.ask(source, min_value=v.min_rows, max_value=v.max_rows)

    def problem(self, found: Found) -> Problem:
        bounds = f"between {found.kwargs['min_value']} and {found.kwargs['max_value']} rows"
        return Problem(
            "has a row count out of bounds", f"{bounds} ({found.source})", f"{found.observed} rows"
        )


class DatePresent(Rule):
    """A date on every row."""

    name = "date_present"
    expectation = NOT_NULL

    def expectations(self, basis: Basis) -> Iterator[Expectation]:
        yield self.ask(f"date_column in {basis.yaml}", column=basis.settings.date_column, mostly=1.0)

    def problem(self, found: Found) -> Problem:
        return Problem(
            "has rows without a date", "a date on every row", f"{found.unexpected}/{found.rows} rows null"
        )


class OnTheDay(Rule):
    """Every row dated on the logical day (a suite parameter, filled in when the suite runs)."""

    name = "date"
    expectation = IN_SET

    def expectations(self, basis: Basis) -> Iterator[Expectation]:
        date = basis.settings.date_column
        yield self.ask("the logical day", column=date, value_set={"$PARAMETER": DAY_PARAMETER})

    def problem(self, found: Found) -> Problem:
        return Problem(
            "holds rows of another day",
            f"every row dated {found.day.isoformat()} (the logical day)",
            f"{found.unexpected}/{found.rows} rows dated otherwise, e.g. {found.examples}",
        )


class LabelPresent(Rule):
    """A class on every row."""

    name = "label_present"
    expectation = NOT_NULL

    def expectations(self, basis: Basis) -> Iterator[Expectation]:
        if basis.settings.captured:
            return  # captured traffic is labelled later: each label is checked when it arrives (ml/serving)
        yield self.ask(f"label.column in {basis.yaml}", column=basis.settings.label, mostly=1.0)

    def problem(self, found: Found) -> Problem:
        return Problem(
            "(the label) has missing values",
            "a class on every row",
            f"{found.unexpected}/{found.rows} rows null",
        )


class LabelValues(Rule):
    """The label's two classes, when they can be known (see `label_classes`)."""

    name = "label"
    expectation = IN_SET

    def expectations(self, basis: Basis) -> Iterator[Expectation]:
        s = basis.settings
        if s.task == "multiclass":
            yield self.ask(f"label.classes in {basis.yaml}", column=s.label, value_set=list(s.classes))
            return
        if s.task == "regression":
            return
        classes = label_classes(basis)
        if classes is not None:
            source = f"label.positive in {basis.yaml}" + (
                " and the reference" if basis.reference is not None else ""
            )
            yield self.ask(source, column=basis.settings.label, value_set=classes)

    def problem(self, found: Found) -> Problem:
        return Problem(
            "(the label) must be one of its classes"
            if "classes" in found.source
            else "(the label) must be binary",
            f"values in {found.kwargs['value_set']!r}",
            f"{found.unexpected}/{found.non_null} rows outside, e.g. {found.examples}",
        )


class LabelClasses(Rule):
    """At most two label values, when the classes cannot be known."""

    name = "label_classes"
    expectation = "expect_column_unique_value_count_to_be_between"

    def expectations(self, basis: Basis) -> Iterator[Expectation]:
        if basis.settings.task == "binary" and label_classes(basis) is None:
            yield self.ask("a binary label", column=basis.settings.label, max_value=2)

    def problem(self, found: Found) -> Problem:
        return Problem("(the label) must be binary", "at most 2 classes", f"{found.observed} classes")


class UniqueKeys(Rule):
    """Each key (settings.keys) at most once per day."""

    name = "keys"
    expectation = "expect_compound_columns_to_be_unique"

    def expectations(self, basis: Basis) -> Iterator[Expectation]:
        if basis.settings.keys:
            yield self.ask(f"keys in {basis.yaml}", column_list=list(basis.settings.keys))

    def problem(self, found: Found) -> Problem:
        keys = ", ".join(found.kwargs["column_list"])
        dupes = [tuple(d.values()) if isinstance(d, Mapping) else d for d in found.unexpected_values]
        return Problem(
            f"has duplicate keys ({keys})",
            f"each ({keys}) at most once per day ({found.source})",
            f"{found.unexpected}/{found.rows} rows sharing a key, e.g. {examples(dupes)}",
        )


# ---------------------------------------------------------------------------------------------- features


class NonNull(FeatureRule):
    """At least validation.min_non_null of a feature's rows non-null (when its floor is above 0)."""

    name = "non_null"
    expectation = NOT_NULL

    def for_column(self, basis: Basis, column: str) -> Iterator[Expectation]:
        floor = basis.settings.validation.non_null_floor(column)
        if floor > 0:
            yield self.ask(f"validation.min_non_null in {basis.yaml}", column=column, mostly=min(floor, 1.0))

    def problem(self, found: Found) -> Problem:
        mostly = float(found.kwargs["mostly"])
        share = (found.rows - found.unexpected) / found.rows if found.rows else 0.0
        return Problem(
            "has too many missing values",
            f"at least {mostly:.0%} non-null ({found.source})",
            f"{share:.1%} non-null ({found.unexpected}/{found.rows} rows null)",
        )


class NotAllNull(FeatureRule):
    """A feature allowed to be null (floor 0) still has a value when its reference column mostly had one."""

    name = "not_all_null"
    expectation = NOT_NULL

    def for_column(self, basis: Basis, column: str) -> Iterator[Expectation]:
        ref = basis.reference_column(column)
        if basis.settings.validation.non_null_floor(column) > 0 or ref is None:
            return
        ref_null = float(ref.isna().mean())
        if ref_null < REFERENCE_NULL_SHARE:
            yield self.ask(f"the reference column is {ref_null:.0%} null", column=column, mostly=AT_LEAST_ONE)

    def problem(self, found: Found) -> Problem:
        return Problem(
            "is entirely null",
            f"at least one value ({found.source})",
            f"{found.unexpected}/{found.rows} rows null",
        )


class ValueRange(FeatureRule):
    """A numeric feature within its validation.ranges bounds (impossible values outside), else within the
    reference range widened by validation.range_tolerance of its span (novelty outside)."""

    name = "range"
    expectation = BETWEEN

    def for_column(self, basis: Basis, column: str) -> Iterator[Expectation]:
        if column in basis.settings.numeric:
            bounds = numeric_range(basis, column)
            if bounds is not None:
                (lo, hi), source = bounds
                derived = column not in basis.settings.validation.ranges
                yield self.ask(source, novelty=derived, column=column, min_value=lo, max_value=hi, mostly=1.0)

    def problem(self, found: Found) -> Problem:
        bounds = f"[{num(found.kwargs['min_value'])}, {num(found.kwargs['max_value'])}]"
        return Problem(
            "has values out of range",
            f"values in {bounds} ({found.source})",
            f"{found.unexpected}/{found.non_null} values outside, e.g. {found.examples}",
        )


class Domain(FeatureRule):
    """A categorical feature's values seen in the reference, but for validation.max_unseen_share of rows
    (beyond it: novelty)."""

    name = "domain"
    expectation = IN_SET

    def for_column(self, basis: Basis, column: str) -> Iterator[Expectation]:
        ref = basis.reference_column(column)
        unseen = basis.settings.validation.max_unseen_share
        if column in basis.settings.numeric or ref is None or unseen >= 1:
            return
        value_set = sorted({str(x) for x in ref.dropna()})
        if value_set:
            source = f"{len(value_set)} categories of the reference"
            mostly = round(1.0 - unseen, 6)
            yield self.ask(source, novelty=True, column=column, value_set=value_set, mostly=mostly)

    def problem(self, found: Found) -> Problem:
        allowance = 1.0 - float(found.kwargs["mostly"])
        pct = found.result.get("unexpected_percent") or 0.0
        return Problem(
            "has too many categories unseen in the reference",
            f"at most {allowance:.0%} of rows outside the {found.source}",
            f"{pct:.1f}% ({found.unexpected}/{found.non_null} rows), e.g. {found.examples}",
        )


# ---------------------------------------------------------------------------------------------- other columns


class DeclaredRange(Rule):
    """validation.ranges of declared columns that are not features (those of features: ValueRange)."""

    name = ValueRange.name
    expectation = BETWEEN
    problem = ValueRange.problem

    def expectations(self, basis: Basis) -> Iterator[Expectation]:
        s = basis.settings
        for column, (lo, hi) in sorted(s.validation.ranges.items()):
            if column not in s.numeric and column in s.columns:
                source = f"validation.ranges in {basis.yaml}"
                yield self.ask(source, column=column, min_value=lo, max_value=hi, mostly=1.0)


# ---------------------------------------------------------------------------------------------- the suite


def suite(settings: Settings, reference: pd.DataFrame | None) -> list[Expectation]:
    """Every rule's expectations for the dataset, in a stable order: the rules in the order of `RULES`, a run
    of feature rules column by column (a column's checks together)."""
    basis = Basis.of(settings, reference)
    out: list[Expectation] = []
    for per_feature, group in itertools.groupby(RULES, key=lambda r: isinstance(r, FeatureRule)):
        rules = list(group)
        if per_feature:
            feature_rules = [r for r in rules if isinstance(r, FeatureRule)]
            for column in settings.features:
                for feature_rule in feature_rules:
                    out.extend(feature_rule.for_column(basis, column))
        else:
            for rule in rules:
                out.extend(rule.expectations(basis))
    return out


def build_suite_spec(settings: Settings, reference: pd.DataFrame | None) -> list[dict[str, Any]]:
    """The expectations for a dataset as plain dicts `{type, kwargs, meta}`, in a stable order.

    The logical day is not part of the spec: the date check uses the suite parameter `day`
    (`{"$PARAMETER": "day"}`), filled in when the suite runs.

    Args:
        settings: the dataset's settings; `settings.validation` holds the YAML rules.
        reference: the champion's training data, or None before the first champion exists.

    Returns:
        A list of `{"type": "expect_...", "kwargs": {...}, "meta": {"id", "rule", "source"}}`.
    """
    return [e.spec() for e in suite(settings, reference)]


# ---------------------------------------------------------------------------------------------- helpers


def label_classes(basis: Basis) -> list[Any] | None:
    """The two label values, or None when they cannot be known (then only "at most 2 classes" is checked):
    a boolean or 0/1 positive class gives them; otherwise the reference's values with the positive one."""
    settings = basis.settings
    positive = py(settings.positive)
    if isinstance(positive, bool):
        return [False, True]
    if isinstance(positive, int | float) and positive in (0, 1):
        return [0, 1]
    ref = basis.reference_column(settings.label)
    if ref is not None:
        seen = {py(x) for x in ref.dropna().unique()} | {positive}
        if len(seen) == 2:
            return sorted(seen, key=str)
    return None


def numeric_range(basis: Basis, column: str) -> tuple[tuple[float, float], str] | None:
    """Hard bounds from the YAML when declared for the column, else the reference range widened."""
    import pandas as pd

    v = basis.settings.validation
    if column in v.ranges:
        lo, hi = v.ranges[column]
        return (float(lo), float(hi)), f"validation.ranges in {basis.yaml}"
    ref = basis.reference_column(column)
    if ref is None:
        return None
    values = pd.to_numeric(ref, errors="coerce").dropna()
    if values.empty:
        return None
    ref_lo, ref_hi = float(values.min()), float(values.max())
    span = ref_hi - ref_lo
    # A constant reference column has no span; widen by its magnitude instead so it is not a point check.
    margin = v.range_tolerance * (span if span > 0 else max(abs(ref_hi), 1.0))
    bounds = (round(ref_lo - margin, 6), round(ref_hi + margin, 6))
    source = f"reference range [{num(ref_lo)}, {num(ref_hi)}] widened by {v.range_tolerance:g} of its span"
    return bounds, source


def not_checked(settings: Settings, reference: pd.DataFrame | None) -> list[str]:
    """The checks this suite leaves out, and why: those derived from the champion's training data before
    there is a champion, and the unseen-category check when validation.max_unseen_share turns it off."""
    basis = Basis.of(settings, reference)
    v = settings.validation
    out = []
    if basis.reference is None:
        unbounded = [c for c in settings.numeric if c not in v.ranges]
        if unbounded:
            out.append(
                f"the value ranges of {names(unbounded)}: no validation.ranges for them and no champion yet "
                "(its training data gives the ranges)"
            )
        if settings.categorical and v.max_unseen_share < 1:
            out.append(
                f"unseen categories of {names(list(settings.categorical))}: no champion yet (its training "
                "data gives the categories)"
            )
        floor0 = [c for c in settings.features if v.non_null_floor(c) == 0]
        if floor0:
            out.append(f"that {names(floor0)} still have values: no champion yet")
    elif settings.categorical and v.max_unseen_share >= 1:
        out.append(
            f"unseen categories of {names(list(settings.categorical))}: validation.max_unseen_share is "
            f"{v.max_unseen_share:g}"
        )
    return out
