"""What the model server accepts (ml/serving/inputs.py, cells.py), pure: every accepted format gives the same
rows, and every bad request is refused with its status and a message naming the field, the expected type and
what was found."""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import json
import math

import numpy as np
import pandas as pd
import pytest

from ml.config import BUNDLED_DATASETS, load_settings
from ml.serving import cells
from ml.serving.inputs import Columns, InputError, parse_labels, parse_request

SETTINGS = load_settings(BUNDLED_DATASETS / "flights.yaml", environ={})
COLUMNS = dataclasses.replace(Columns.of(SETTINGS), max_rows=5)
JSON, CSV = "application/json", "text/csv"
ROW = {
    "sched_dep_time": 515, "sched_arr_time": 819, "distance": 1400, "hour": 5, "temp": 39.02, "dewp": 28.04,
    "humid": 64.43, "wind_dir": 260, "wind_speed": 12.66, "wind_gust": None, "precip": 0, "pressure": 1011.9,
    "visib": 10, "carrier": "UA", "origin": "EWR", "dest": "IAH",
}  # fmt: skip
FEATURES = list(ROW)


def rows(n: int = 3) -> list[dict]:
    return [{**ROW, "distance": 1400 + i, "dest": ["IAH", None, "MIA"][i % 3]} for i in range(n)]


def split(records: list[dict], **extra) -> dict:
    columns = list(records[0])
    return {
        "dataframe_split": {"columns": columns, "data": [[r[c] for c in columns] for r in records]},
        **extra,
    }


def as_csv(records: list[dict]) -> bytes:
    def text(v):
        return "" if v is None else str(v)

    lines = [",".join(records[0])] + [",".join(text(v) for v in r.values()) for r in records]
    return ("\n".join(lines) + "\n").encode()


def counter():
    n = itertools.count()
    return lambda: f"gen-{next(n)}"


def parse(body, content_type=JSON, header_id=None, columns=COLUMNS):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return parse_request(raw, content_type, columns, new_id=counter(), header_id=header_id)


def refused(body, content_type=JSON, header_id=None) -> InputError:
    with pytest.raises(InputError) as info:
        parse(body, content_type, header_id)
    return info.value


# ---------------------------------------------------------------------------------------------- accepted
def test_every_format_gives_the_same_typed_rows_in_the_model_s_column_order():
    records = rows(3)
    reordered = [dict(reversed(list(r.items()))) for r in records]
    bodies = [
        (split(records), JSON),
        (split(reordered), JSON),
        ({"dataframe_records": records}, JSON),
        ({"instances": records}, JSON),
        ({"inputs": {c: [r[c] for r in records] for c in FEATURES}}, JSON),
        ({"instances": {c: [r[c] for r in records] for c in FEATURES}}, "application/json; charset=utf-8"),
        (as_csv(records), CSV),
        (as_csv(records), "text/csv; charset=utf-8; header=present"),
    ]
    frames = [parse(body, ctype).features for body, ctype in bodies]

    first = frames[0]
    assert list(first.columns) == SETTINGS.features
    assert all(first[c].dtype == "float64" for c in SETTINGS.numeric)
    assert all(first[c].dtype == object for c in SETTINGS.categorical)
    assert first["distance"].tolist() == [1400.0, 1401.0, 1402.0]
    assert first["dest"].tolist() == ["IAH", None, "MIA"]
    assert math.isnan(first["wind_gust"][0])
    for frame in frames[1:]:
        pd.testing.assert_frame_equal(frame, first)


def test_missing_numbers_may_be_null_or_nan_and_missing_categories_null():
    body = json.dumps({"dataframe_records": [{**ROW, "temp": None, "humid": float("nan"), "origin": None}]})
    assert "NaN" in body  # what pandas' to_json and Python's json.dumps write for a missing value
    got = parse(body.encode()).features
    assert math.isnan(got["temp"][0]) and math.isnan(got["humid"][0]) and got["origin"][0] is None
    csv_body = as_csv([{**ROW, "temp": "nan", "humid": "", "origin": ""}])
    got = parse(csv_body, CSV).features
    assert math.isnan(got["temp"][0]) and math.isnan(got["humid"][0]) and got["origin"][0] is None


def test_the_row_s_own_date_is_kept_else_none_and_drop_columns_are_ignored():
    records = [
        {**ROW, "date": "2013-02-05", "flight": 1545, "tailnum": "N14228"},
        {**ROW, "date": "2013-02-06T08:15:00+00:00", "flight": 2, "tailnum": None},
        {**ROW, "date": None, "flight": None, "tailnum": "x"},
    ]
    got = parse({"dataframe_records": records})
    assert got.days == [dt.date(2013, 2, 5), dt.date(2013, 2, 6), None]
    assert list(got.features.columns) == SETTINGS.features
    assert parse(split(rows(2))).days == [None, None]


def test_inference_ids_come_from_the_list_the_column_or_the_header_else_are_generated():
    assert parse(split(rows(2), inference_ids=["a", "b"])).ids == ["a", "b"]
    records = [{**r, "inference_id": i} for r, i in zip(rows(3), ["a", None, "c"], strict=True)]
    assert parse({"dataframe_records": records}).ids == ["a", "gen-0", "c"]
    assert parse(split(rows(1)), header_id="req-1").ids == ["req-1"]
    assert parse(split(rows(2))).ids == ["gen-0", "gen-1"]
    assert parse(
        as_csv([{**r, "inference_id": i} for r, i in zip(rows(2), ["x", ""], strict=True)]), CSV
    ).ids == [
        "x",
        "gen-0",
    ]


# ---------------------------------------------------------------------------------------------- refused
def bad_value(column, value, row=1, fmt="records", n=3):
    valid = {"date": "2013-01-05", "inference_id": None}
    records = [{**r, column: valid[column]} if column in valid else r for r in rows(n)]
    records[row] = {**records[row], column: value}
    if fmt == "csv":
        return as_csv(records), CSV
    return ({"dataframe_records": records} if fmt == "records" else split(records)), JSON


CELL_CASES = [
    # (column, value, format, expected, found in message)
    ("distance", "abc", "records", "a number or null", "'abc'"),
    ("distance", "abc", "split", "a number or null", "'abc'"),
    ("distance", "abc", "csv", "a number or null", "'abc'"),
    ("distance", "1_000", "csv", "a number or null", "'1_000'"),
    ("distance", "1020", "records", "a number or null", "'1020'"),  # JSON numbers are numbers
    ("distance", True, "records", "a number or null", "true"),
    ("distance", [1], "records", "a number or null", "a list"),
    ("distance", {"v": 1}, "records", "a number or null", "an object"),
    ("distance", float("inf"), "records", "a finite number or null", "inf"),
    ("distance", float("-inf"), "split", "a finite number or null", "-inf"),
    ("distance", 10**400, "records", "a finite number or null", "1000"),
    ("distance", "1e999", "csv", "a finite number or null", "'1e999'"),
    ("distance", "-inf", "csv", "a number or null", "'-inf'"),
    ("carrier", 5, "records", "a string or null", "5"),
    ("carrier", ["UA"], "split", "a string or null", "a list"),
    ("carrier", {"x": "UA"}, "records", "a string or null", "an object"),
    ("carrier", False, "records", "a string or null", "false"),
    ("carrier", "\ud800", "records", "valid Unicode text", "lone surrogate"),
    ("date", "2013-13-01", "records", "a date YYYY-MM-DD", "'2013-13-01'"),
    ("date", "yesterday", "csv", "a date YYYY-MM-DD", "'yesterday'"),
    ("date", "2013-W01-1", "records", "a date YYYY-MM-DD", "'2013-W01-1'"),
    ("date", "2013-01-05T25:00", "records", "a date YYYY-MM-DD", "'2013-01-05T25:00'"),
    ("date", 20130105, "records", "a date YYYY-MM-DD", "20130105"),
    ("date", "1800-01-01", "split", "a date YYYY-MM-DD between 1900-01-01 and 2199-12-31", "'1800-01-01'"),
    ("inference_id", 7, "records", "a non-empty string", "7"),
    ("inference_id", "x" * 201, "split", "at most 200 characters", "a string of 201 characters"),
]


@pytest.mark.parametrize(("column", "value", "fmt", "expected", "found"), CELL_CASES)
def test_a_bad_value_names_its_column_row_the_expected_type_and_what_was_found(
    column, value, fmt, expected, found
):
    body, ctype = bad_value(column, value, row=1, fmt=fmt)

    err = refused(body, ctype)

    assert err.status == 422
    assert (err.field, err.row) == (column, 1)
    assert expected in err.expected
    assert f"column '{column}' row 1: expected {err.expected}, got " in str(err)
    assert found in str(err)
    assert err.to_dict() == {"error": str(err), "field": column, "expected": err.expected, "row": 1}


def test_the_message_reads_as_the_style_guide_says():
    err = refused(*bad_value("distance", "abc", row=3, n=5))
    assert str(err) == "column 'distance' row 3: expected a number or null, got 'abc'."


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"dataframe_records": [{k: v for k, v in ROW.items() if k not in ("temp", "dest")}]}, "temp",
         "missing features ['temp', 'dest']: expected the features ['sched_dep_time', "),
        (split([{**ROW, "colour": "red", "size": 3}]), "colour", "unknown columns ['colour', 'size']: expected the "),
        (split([{**ROW, "delayed": 1}]), "delayed", "column 'delayed' is the label, not an input"),
        ({"dataframe_split": {"columns": [*FEATURES, "temp"], "data": [[*ROW.values(), 1]]}}, "temp",
         "column 'temp': expected unique column names"),
        ({"dataframe_split": {"columns": [*FEATURES[:-1], 7], "data": [list(ROW.values())]}}, "columns",
         "column names: expected strings, got 7"),
        ({"dataframe_split": {"columns": FEATURES, "data": []}}, "dataframe_split.data",
         "dataframe_split.data: expected at least one row"),
        ({"dataframe_split": {"columns": FEATURES, "data": [list(ROW.values())[:-1]]}}, "dataframe_split.data",
         "'dataframe_split.data' row 0: expected a list of 16 values (one per column), got a list of 15"),
        ({"dataframe_split": {"data": [list(ROW.values())]}}, "dataframe_split",
         "'dataframe_split': expected {\"columns\": [...], \"data\": [[...], ...]}, got an object"),
        ({"dataframe_split": {"columns": FEATURES, "data": [], "dtypes": {}}}, "dtypes", "unknown keys ['dtypes']"),
        ({"dataframe_records": [ROW, {k: v for k, v in ROW.items() if k != "hour"}]}, "hour",
         "column 'hour' row 1: expected a value or null, got no value (send null for a missing value)"),
        ({"dataframe_records": [ROW, [1, 2]]}, "dataframe_records",
         "'dataframe_records' row 1: expected a record {column: value}, got a list"),
        ({"dataframe_records": {c: [v] for c, v in ROW.items()}}, "dataframe_records",
         "'dataframe_records': expected a list of records, got an object"),
        ({"inputs": {"temp": [1, 2], "hour": [1]}}, "inputs",
         "'inputs': expected one value per row in each column, got lengths [1, 2]"),
        ({"inputs": {"temp": 1}}, "temp", "'inputs' column 'temp': expected a list of values, got 1"),
        ({"instances": "x"}, "instances", "'instances': expected a list of records or an object"),
        ([ROW], "body", "the body: expected an object with one of dataframe_split, dataframe_records, instances"),
        ({}, "body", "got none of them"),
        ({"instances": [ROW], "inputs": [ROW]}, "body", "got ['instances', 'inputs']"),
        ({"instances": [ROW], "params": {}}, "params", "got the unknown keys ['params']"),
    ],
)  # fmt: skip
def test_a_bad_table_is_refused_naming_the_field_and_what_is_expected(body, field, message):
    err = refused(body)
    assert err.status == 422
    assert err.field == field
    assert message in str(err)
    assert err.expected and f"expected {err.expected}" in str(err)


@pytest.mark.parametrize(
    ("body", "ctype", "status", "field", "message"),
    [
        (b'{"instances": [', JSON, 400, "body", "malformed JSON (Expecting value: line 1 column 16"),
        (b"\xff\xfe{}", JSON, 400, "body", "the body is not UTF-8 (byte 0)"),
        (b"[" * 100_000 + b"]" * 100_000, JSON, 400, "body", "malformed JSON"),
        (b'a,"b\n1,2', CSV, 400, "body", "malformed CSV"),
        (b"", CSV, 422, "body", "CSV: expected a header row, got an empty body"),
        (b"a,b\n1,2,3\n", CSV, 422, "body", "CSV row 0: expected 2 fields, as the header, got 3 fields"),
        (b"{}", "text/plain", 415, "Content-Type", "Content-Type 'text/plain' is not accepted"),
        (
            b"{}",
            None,
            415,
            "Content-Type",
            "Content-Type '' is not accepted: send application/json or text/csv",
        ),
        (b"{}", "application/x-www-form-urlencoded", 415, "Content-Type", "not accepted"),
    ],
)
def test_bodies_that_are_not_json_or_csv_or_malformed(body, ctype, status, field, message):
    err = refused(body, ctype)
    assert (err.status, err.field) == (status, field)
    assert message in str(err)
    assert err.expected


@pytest.mark.parametrize(
    ("body", "ctype", "field"),
    [
        (split(rows(6)), JSON, "dataframe_split.data"),
        ({"dataframe_records": rows(6)}, JSON, "dataframe_records"),
        ({"inputs": {c: [v] * 6 for c, v in ROW.items()}}, JSON, "inputs"),
        (as_csv(rows(6)), CSV, "CSV"),
    ],
)
def test_more_rows_than_max_rows_is_413(body, ctype, field):
    err = refused(body, ctype)
    assert (err.status, err.field, err.expected) == (413, field, "at most 5 rows")
    assert "6 rows, at most 5 per request (serving.max_rows)" in str(err)
    assert parse(split(rows(5))).features.shape == (5, 16)


@pytest.mark.parametrize(
    ("body", "header", "field", "message"),
    [
        (split(rows(2), inference_ids=["a", "b", "c"]), None, "inference_ids",
         "'inference_ids': expected a list of 2 strings, one per row, got more ids (3) than rows (2)"),
        (split(rows(2), inference_ids=["a"]), None, "inference_ids", "got fewer ids (1) than rows (2)"),
        (split(rows(2), inference_ids="a"), None, "inference_ids", "expected a list of 2 strings, one per row, got 'a'"),
        (split(rows(2), inference_ids=["a", 2]), None, "inference_ids",
         "'inference_ids' row 1: expected a non-empty string of at most 200 characters, got 2"),
        (split(rows(2), inference_ids=["a", ""]), None, "inference_ids", "got ''"),
        (split(rows(2), inference_ids=["a", None]), None, "inference_ids", "got null"),
        (split(rows(3), inference_ids=["a", "b", "a"]), None, "inference_ids",
         "inference id 'a': expected a different id per row, got it twice in one request (rows 0 and 2)"),
        ({"dataframe_records": [{**r, "inference_id": "z"} for r in rows(2)]}, None, "inference_id",
         "inference id 'z': expected a different id per row"),
        (split(rows(2)), "one", "X-Inference-Id",
         "header X-Inference-Id: expected a single-row request (else send \"inference_ids\"), got 2 rows"),
        (split(rows(1), inference_ids=["a"]), "b", "inference_ids",
         "inference ids: expected them in one place, got inference_ids and X-Inference-Id"),
        (split([{**ROW, "inference_id": "a"}], inference_ids=["a"]), None, "inference_ids",
         "got column 'inference_id' and inference_ids"),
    ],
)  # fmt: skip
def test_bad_inference_ids_are_refused(body, header, field, message):
    err = refused(body, header_id=header)
    assert (err.status, err.field) == (422, field)
    assert message in str(err)
    assert f"expected {err.expected}" in str(err)


def test_nothing_is_refused_late_a_valid_request_gives_float64_and_object_columns():
    """Whatever got through can be written to parquet as the capture needs (float64, str/None, date)."""
    got = parse({"dataframe_records": [{**r, "date": "2013-01-05"} for r in rows(5)]})
    frame = got.features.assign(date=got.days, inference_id=got.ids)
    assert frame.dtypes["distance"] == np.float64
    pd.testing.assert_frame_equal(pd.read_parquet(_roundtrip(frame)), frame, check_dtype=False)


def _roundtrip(frame):
    import io

    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    buffer.seek(0)
    return buffer


# ---------------------------------------------------------------------------------------------- labels
def test_labels_come_as_a_list_or_as_one_record():
    records = [{"inference_id": "a", "label": 1}, {"inference_id": "b", "label": 0}]
    assert parse_labels(json.dumps({"labels": records}).encode(), JSON, 5) == records
    assert parse_labels(json.dumps(records[0]).encode(), JSON, 5) == [records[0]]


@pytest.mark.parametrize(
    ("body", "ctype", "status", "field", "message"),
    [
        ({"labels": []}, JSON, 422, "labels", "'labels': expected a list of records, got an empty list"),
        ({"labels": {"a": 1}}, JSON, 422, "labels", "'labels': expected a list of records, got an object"),
        ([{"inference_id": "a", "label": 1}], JSON, 422, "labels", 'the body: expected {"labels": [{'),
        ({"labels": [], "more": 1}, JSON, 422, "labels", "got keys ['labels', 'more']"),
        ({"labels": [{"inference_id": "a", "label": 1, "weight": 2}]}, JSON, 422, "weight",
         "labels: record 0: expected the keys 'inference_id' and 'label', got ['weight']"),
        ({"labels": [{"inference_id": str(i), "label": 1} for i in range(6)]}, JSON, 413, "labels",
         "'labels': 6 records, at most 5 per request"),
        (b"{", JSON, 400, "body", "malformed JSON"),
        (b"inference_id,label\na,1\n", CSV, 415, "Content-Type", "send application/json"),
    ],
)  # fmt: skip
def test_bad_label_bodies_are_refused(body, ctype, status, field, message):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    with pytest.raises(InputError) as info:
        parse_labels(raw, ctype, 5)
    assert (info.value.status, info.value.field) == (status, field)
    assert message in str(info.value)
    assert info.value.expected


def test_show_quotes_values_short_and_in_json_terms():
    assert [cells.show(v) for v in (None, True, [1], {"a": 1}, "x", 1.5)] == [
        "null",
        "true",
        "a list",
        "an object",
        "'x'",
        "1.5",
    ]
    assert len(cells.show("</script>" * 100)) == 60
    assert cells.names(list("abcdefg")) == "['a', 'b', 'c', 'd', 'e', ...]"
