"""The model server (ml/serving/) in process through starlette's TestClient, on REAL models registered in a
REAL MLflow registry (a SQLite store in tmp, one per module; each test its own registered model):

    v1, v2  two tiny real challengers logged by `registry.log_challenger` (different data, different scores)
    v3      a version whose artifact is not a model

Nothing of MLflow is mocked: the alias is moved with MlflowClient, the server polls the registry every 0.2 s.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from starlette.testclient import TestClient

from ml import capture, registry
from ml.config import load_settings
from ml.serving import Follower, create_app
from ml.train import fit, predict_proba
from tests.conftest import isolate

pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")

DAY = dt.date(2013, 1, 5)
TRAIN = {
    1: (["2013-01-01", "2013-01-02"], {"max_iter": 5}),
    2: (["2013-01-03", "2013-01-04"], {"max_iter": 15}),
}


@pytest.fixture(scope="module")
def store(tmp_path_factory, flights_frame) -> Iterator[dict]:
    """A SQLite MLflow store with two real challengers and one version that is not a model."""
    home = tmp_path_factory.mktemp("serving")
    uri = f"sqlite:///{home / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp:
        isolate(mp, home, uri)
        s = load_settings("flights").with_overrides(registered_model="flights-serving-source")
        sources = []
        for days, params in TRAIN.values():
            train = flights_frame[flights_frame["date"].isin(days)].reset_index(drop=True)
            info = registry.log_challenger(
                s,
                day=DAY,
                model=fit(s, train, DAY, params),
                train=train,
                split={"train_days": days, "holdout_days": [], "train_range": "-", "holdout_range": "-"},
                trigger="test",
                digest=uuid.uuid4().hex[:8],
                params=params,
                reference=train.head(50),
                dag_run_id=None,
                dag_run_url=None,
                metrics={},
            )
            mv = registry.client(s).get_model_version(s.registered_model, str(info["version"]))
            sources.append((mv.source, mv.run_id))
        junk = home / "not-a-model"
        junk.mkdir()
        (junk / "README.txt").write_text("this folder is not an MLflow model")
        sources.append((str(junk), None))
        registry._experiment_id.cache_clear()
    yield {"uri": uri, "sources": sources, "rows": flights_frame[flights_frame["date"] == DAY.isoformat()]}


@pytest.fixture
def srv(dw_env, monkeypatch, store):
    """Settings on the module's store under a model name of the test's own, versions 1, 2 (models) and 3 (not
    a model), `champion` on v1; the server polls every 0.2 s and flushes its capture every 0.2 s."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store["uri"])
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    monkeypatch.delenv("DRIFTWATCH_ALERT_TARGET", raising=False)
    s = load_settings("flights")
    s = s.with_overrides(
        registered_model=f"serving-{uuid.uuid4().hex[:10]}",
        serving=dataclasses.replace(
            s.serving, poll_seconds=0.2, flush_seconds=0.2, max_rows=50, max_body_bytes=20_000
        ),
    )
    c = registry.client(s)
    c.create_registered_model(s.registered_model)
    for source, run_id in store["sources"]:
        c.create_model_version(s.registered_model, source, run_id=run_id)
    c.set_registered_model_alias(s.registered_model, "champion", "1")
    return SimpleNamespace(s=s, client=c, rows=store["rows"].reset_index(drop=True))


def with_serving(s, **changes):
    return s.with_overrides(serving=dataclasses.replace(s.serving, **changes))


def split_body(frame: pd.DataFrame, columns: list[str], **extra) -> dict:
    data = frame[columns].astype(object).where(frame[columns].notna(), None)
    return {"dataframe_split": {"columns": columns, "data": data.to_numpy().tolist()}, **extra}


def record(srv, i: int = 0, **changes) -> dict:
    """Row `i` as a JSON record of its features (missing values as null)."""
    row = srv.rows[srv.s.features].iloc[i]
    return {k: (None if pd.isna(v) else v) for k, v in row.to_dict().items()} | changes


def wait_for(condition: Callable[[], object], timeout: float = 10.0, what: str = "") -> float:
    t0 = time.monotonic()
    while not condition():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.02)
    return time.monotonic() - t0


def captured(s) -> pd.DataFrame:
    files = sorted(s.capture_dir.glob("date=*/*.parquet"))
    return pd.concat([pd.read_parquet(f).assign(_file=str(f)) for f in files]) if files else pd.DataFrame()


def serving_alerts(s) -> list[dict]:
    path = s.paths.alerts
    lines = [json.loads(x) for x in path.read_text().splitlines()] if path.is_file() else []
    return [a for a in lines if a["kind"] == "serving"]


# ---------------------------------------------------------------------------------------------- scoring
def test_scores_are_the_versions_predict_proba_in_every_format(srv):
    s, rows = srv.s, srv.rows.head(20)
    expected = predict_proba(registry.load_model(s, 1), s, rows)
    ids = [f"r{i}" for i in range(len(rows))]

    with TestClient(create_app(s, capture=False)) as client:
        got = client.post(
            "/invocations", json=split_body(rows, [s.date_column, *s.features], inference_ids=ids)
        )
        csv = rows[s.features].to_csv(index=False)
        by_csv = client.post("/invocations", content=csv, headers={"Content-Type": "text/csv"})
        one = client.post(
            "/invocations",
            json={"instances": [record(srv)]},
            headers={"X-Inference-Id": "x"},
        )

    assert got.status_code == 200, got.text
    body = got.json()
    np.testing.assert_allclose(body["predictions"], expected, rtol=1e-12)
    assert (body["model_version"], body["inference_ids"], got.headers["X-Model-Version"]) == (1, ids, "1")
    np.testing.assert_allclose(by_csv.json()["predictions"], expected, rtol=1e-12)
    assert len(set(by_csv.json()["inference_ids"])) == 20
    assert one.json()["inference_ids"] == ["x"]
    np.testing.assert_allclose(one.json()["predictions"], expected[:1], rtol=1e-12)


# ---------------------------------------------------------------------------------------------- following
def test_the_server_follows_the_alias_under_traffic_without_a_failed_request(srv, caplog):
    s, rows = srv.s, srv.rows
    expected = {v: predict_proba(registry.load_model(s, v), s, rows.head(1)) for v in (1, 2)}
    answers: list[tuple[float, int, int | None, float | None]] = []
    stop = threading.Event()
    caplog.set_level(logging.INFO, logger="ml.serving")

    with TestClient(create_app(s, capture=False)) as client:

        def traffic() -> None:
            body = split_body(rows.head(1), s.features)
            while not stop.is_set():
                r = client.post("/invocations", json=body)
                ok = r.status_code == 200
                answers.append(
                    (
                        time.monotonic(),
                        r.status_code,
                        r.json()["model_version"] if ok else None,
                        r.json()["predictions"][0] if ok else None,
                    )
                )

        sender = threading.Thread(target=traffic)
        sender.start()
        try:
            time.sleep(0.5)
            moved = time.monotonic()
            srv.client.set_registered_model_alias(s.registered_model, "champion", "2")
            wait_for(lambda: any(a[2] == 2 for a in answers), 5, "a response from v2")
            time.sleep(0.5)
        finally:
            stop.set()
            sender.join()
        health = client.get("/health").json()

    statuses = [a[1] for a in answers]
    versions = [a[2] for a in answers]
    assert statuses.count(200) == len(answers) > 20, "every request answered"
    assert set(versions) == {1, 2}
    first_v2 = versions.index(2)
    assert versions == [1] * first_v2 + [2] * (len(versions) - first_v2), "one switch, never back"
    switch = answers[first_v2][0] - moved
    assert switch < 5 * s.serving.poll_seconds + 2, f"switched {switch:.2f} s after the alias moved"
    for _, _, version, score in answers:
        assert score == pytest.approx(expected[version][0], rel=1e-12)
    assert (health["status"], health["model_version"], health["alias_version"]) == ("ok", 2, 2)
    assert any("serving v2 (was v1), switched in" in r.getMessage() for r in caplog.records)


def test_a_version_that_is_not_a_model_is_not_served_and_alerted_once(srv):
    s = srv.s
    follower = Follower(s)
    with TestClient(create_app(s, follower=follower, capture=False)) as client:
        body = split_body(srv.rows.head(2), s.features)
        srv.client.set_registered_model_alias(s.registered_model, "champion", "3")
        wait_for(lambda: follower.failed is not None, 5, "the load of v3 to fail")
        retries = follower._retry[3][0]
        wait_for(lambda: follower._retry[3][0] >= retries + 2, 5, "two more tries of v3")
        health = client.get("/health")
        answer = client.post("/invocations", json=body)
        alerts_then = serving_alerts(s)

        srv.client.set_registered_model_alias(s.registered_model, "champion", "2")
        wait_for(lambda: follower.served.version == 2, 5, "v2 served")
        healed = client.get("/health").json()

    assert health.status_code == 200
    h = health.json()
    assert (h["status"], h["model_version"], h["alias_version"]) == ("degraded", 1, 3)
    assert h["error"].startswith("v3 cannot be served: ") and h["error"].endswith("still serving v1")
    assert (answer.status_code, answer.json()["model_version"]) == (200, 1)
    assert len(alerts_then) == 1, alerts_then
    alert = alerts_then[0]
    assert (alert["version"], alert["serving"], alert["alias"]) == (3, 1, "champion")
    assert "cannot serve v3" in alert["message"] and "still serving v1" in alert["message"]
    assert (healed["status"], healed["model_version"], healed["error"]) == ("ok", 2, None)
    assert len(serving_alerts(s)) == 1


def test_a_corrupted_model_cache_fails_the_load_and_keeps_the_old_version(srv):
    """The version's files in the shared local cache are damaged (the model file deleted): not served."""
    s = srv.s
    follower = Follower(s, alert=lambda *a: None).start()
    try:
        path = registry._local_model_dir(s, 2, srv.client.get_model_version(s.registered_model, "2").run_id)
        next(path.glob("model.*")).unlink()
        srv.client.set_registered_model_alias(s.registered_model, "champion", "2")
        follower.poll()
        h = follower.health()
    finally:
        follower.stop()
    assert (h["status"], h["model_version"]) == ("degraded", 1)
    assert "v2 cannot be served" in h["error"]


def test_no_champion_yet_answers_503_and_serves_once_the_alias_appears(srv):
    s = srv.s
    srv.client.delete_registered_model_alias(s.registered_model, "champion")
    follower = Follower(s)
    with TestClient(create_app(s, follower=follower, capture=False)) as client:
        first = client.post("/invocations", json=split_body(srv.rows.head(1), s.features))
        health = client.get("/health")
        version = client.get("/version")
        srv.client.set_registered_model_alias(s.registered_model, "champion", "2")
        wait_for(lambda: follower.served is not None, 5, "a model served")
        later = client.post("/invocations", json=split_body(srv.rows.head(1), s.features))

    assert first.status_code == 503
    assert first.json()["error"].startswith("no champion yet")
    assert "has the alias 'champion'" in first.json()["error"]
    assert (health.status_code, health.json()["status"], health.json()["model_version"]) == (
        503,
        "no_model",
        None,
    )
    assert (version.status_code, version.json()["version"]) == (503, None)
    assert (later.status_code, later.json()["model_version"]) == (200, 2)


def test_an_alias_that_disappears_keeps_the_current_model_and_says_so(srv):
    s = srv.s
    follower = Follower(s).start()
    try:
        srv.client.delete_registered_model_alias(s.registered_model, "champion")
        follower.poll()
        h = follower.health()
    finally:
        follower.stop()
    assert (h["status"], h["model_version"], h["alias_version"]) == ("degraded", 1, None)
    assert h["error"] == f"no version of {s.registered_model} has the alias 'champion'; still serving v1"


def test_an_unreachable_registry_keeps_the_model_and_says_so(srv, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    s = srv.s
    follower = Follower(s).start()
    try:
        # the registry moves to a port nobody listens on
        follower.settings = s.with_overrides(tracking_uri="http://127.0.0.1:9")
        follower._client = None
        follower.poll()
        h = follower.health()
    finally:
        follower.stop()
    assert (h["status"], h["model_version"], h["alias_version"]) == ("degraded", 1, 1)
    assert h["error"].startswith("registry http://127.0.0.1:9 unreachable: ")
    assert follower.served is not None and follower.served.version == 1


# ---------------------------------------------------------------------------------------------- capture
def test_scored_rows_are_captured_by_day_with_their_columns_and_close_writes_them(srv):
    s = with_serving(srv.s, flush_seconds=600)  # only the graceful close can write them
    rows = srv.rows.head(6).reset_index(drop=True)
    dated = rows.head(3).assign(date=["2013-01-05", "2013-01-05", "2013-01-06"])
    today = dt.datetime.now(dt.UTC).date()
    answers = []
    app = create_app(s)
    with TestClient(app) as client:
        answers.append(
            client.post(
                "/invocations",
                json=split_body(dated, [s.date_column, *s.features], inference_ids=list("abc")),
            )
        )
        answers.append(client.post("/invocations", json=split_body(rows.iloc[3:5], s.features)))
        answers.append(
            client.post(
                "/invocations",
                content=rows.iloc[5:6][s.features].to_csv(index=False),
                headers={"Content-Type": "text/csv", "X-Inference-Id": "csv-1"},
            )
        )
        bad = split_body(rows.head(2), s.features, inference_ids=["bad-1", "bad-2"])
        bad["dataframe_split"]["data"][1][2] = "far"
        refused = client.post("/invocations", json=bad)
        before_close = (captured(s), client.get("/health").json()["capture"])

    assert [a.status_code for a in answers] == [200, 200, 200] and refused.status_code == 422
    assert before_close[0].empty and before_close[1]["buffered"] == 6
    got = captured(s)
    ids = [i for a in answers for i in a.json()["inference_ids"]]
    assert sorted(got["inference_id"]) == sorted(ids) and len(got) == 6
    assert not {"bad-1", "bad-2"} & set(got["inference_id"])
    by_id = got.set_index("inference_id")
    assert {i: Path(f).parent.name for i, f in by_id["_file"].items()} == {
        "a": "date=2013-01-05",
        "b": "date=2013-01-05",
        "c": "date=2013-01-06",
    } | {i: f"date={today}" for i in ids[3:]}
    scores = [p for a in answers for p in a.json()["predictions"]]
    np.testing.assert_allclose(by_id.loc[ids, "served_score"], scores, rtol=1e-12)
    assert set(by_id["served_version"]) == {1}
    schema = pq.read_schema(by_id["_file"]["a"])
    expected = [s.date_column, *s.features, *capture.META_COLUMNS]
    assert schema.names == expected
    types = {n: str(schema.field(n).type) for n in schema.names}
    assert types[s.date_column] == "date32[day]"
    assert all(types[c] == "double" for c in s.numeric)
    assert all(types[c] == "string" for c in s.categorical)
    assert (types["inference_id"], types["served_score"], types["served_version"]) == (
        "string",
        "double",
        "int64",
    )
    assert types["captured_at"].startswith("timestamp[") and "UTC" in types["captured_at"]
    features = by_id.loc[ids, s.features].reset_index(drop=True)
    pd.testing.assert_frame_equal(
        features, rows[s.features].astype({c: "float64" for c in s.numeric}), check_dtype=False
    )
    assert app.state.capture.stats.buffered == 0


def test_capture_percent_samples_by_inference_id(srv):
    s = with_serving(srv.s, capture_percent=50)
    ids = [f"id-{i}" for i in range(40)]
    with TestClient(create_app(s)) as client:
        assert (
            client.post(
                "/invocations", json=split_body(srv.rows.head(40), s.features, inference_ids=ids)
            ).status_code
            == 200
        )
    assert sorted(captured(s)["inference_id"]) == sorted(i for i in ids if capture.sampled(i, 50))
    assert 5 < len(captured(s)) < 35


def test_ground_truth_is_stored_by_inference_id_and_bad_labels_are_refused(srv):
    s = srv.s
    with TestClient(create_app(s, capture=False)) as client:
        many = client.post(
            "/ground-truth",
            json={"labels": [{"inference_id": "a", "label": 1}, {"inference_id": "b", "label": False}]},
        )
        one = client.post("/ground-truth", json={"inference_id": "c", "label": 0})
        bad = client.post("/ground-truth", json={"labels": [{"inference_id": "d", "label": 2}]})
        no_id = client.post("/ground-truth", json={"labels": [{"label": 1}]})
        twice = client.post("/ground-truth", json={"labels": [{"inference_id": "e", "label": 1}] * 2})

    assert (many.json(), one.json()) == ({"accepted": 2}, {"accepted": 1})
    assert bad.status_code == 422
    assert bad.json()["field"] == "label" and bad.json()["expected"] == "0 or 1"
    assert "labels: record 0: field 'label' (delayed): expected 0 or 1. Got 2." == bad.json()["error"]
    assert (no_id.status_code, no_id.json()["field"]) == (422, "inference_id")
    assert "expected a non-empty string" in no_id.json()["error"]
    assert (twice.status_code, twice.json()["field"]) == (422, "inference_id")
    assert capture.labels(s).to_dict() == {"a": 1, "b": 0, "c": 0}
    (folder,) = s.labels_dir.glob("arrived=*")
    assert folder.name == f"arrived={dt.datetime.now(dt.UTC).date()}"


# ---------------------------------------------------------------------------------------------- bad input
def _features(srv, n=2):
    return split_body(srv.rows.head(n), srv.s.features)


BAD = [
    # (name, request kwargs maker, status, field)
    ("malformed JSON", lambda srv: {"content": b'{"instances": [', "headers": {"Content-Type": "application/json"}}, 400, "body"),
    ("wrong content type", lambda srv: {"content": b"a=1", "headers": {"Content-Type": "application/x-www-form-urlencoded"}}, 415, "Content-Type"),
    ("no content type", lambda srv: {"content": b"{}"}, 415, "Content-Type"),
    ("over max_body_bytes", lambda srv: {"json": {"instances": [{"x": "y" * 30_000}]}}, 413, "body"),
    ("over max_body_bytes, chunked", lambda srv: {"content": iter([b'{"instances": ["' + b"y" * 15_000, b"y" * 15_000 + b'"]}']), "headers": {"Content-Type": "application/json"}}, 413, "body"),
    ("over max_rows", lambda srv: {"json": split_body(srv.rows.head(51), srv.s.features)}, 413, "dataframe_split.data"),
    ("missing feature", lambda srv: {"json": split_body(srv.rows.head(2), srv.s.features[1:])}, 422, "sched_dep_time"),
    ("unknown column", lambda srv: {"json": split_body(srv.rows.head(2).assign(arr_delay=3), [*srv.s.features, "arr_delay"])}, 422, "arr_delay"),
    ("the label", lambda srv: {"json": split_body(srv.rows.head(2).assign(delayed=1), [*srv.s.features, "delayed"])}, 422, "delayed"),
    ("text for a number", lambda srv: {"json": {"dataframe_records": [record(srv, distance="abc")]}}, 422, "distance"),
    ("inf", lambda srv: {"content": json.dumps({"dataframe_records": [record(srv, temp=float("inf"))]}), "headers": {"Content-Type": "application/json"}}, 422, "temp"),
    ("object for a category", lambda srv: {"json": {"dataframe_records": [record(srv, dest={"a": 1})]}}, 422, "dest"),
    ("bad date", lambda srv: {"json": split_body(srv.rows.head(1).assign(date="2013-02-30"), ["date", *srv.s.features])}, 422, "date"),
    ("ids repeated", lambda srv: {"json": {**_features(srv), "inference_ids": ["a", "a"]}}, 422, "inference_ids"),
    ("more ids than rows", lambda srv: {"json": {**_features(srv), "inference_ids": ["a", "b", "c"]}}, 422, "inference_ids"),
    ("id not a string", lambda srv: {"json": {**_features(srv), "inference_ids": ["a", 2]}}, 422, "inference_ids"),
    ("header id for two rows", lambda srv: {"json": _features(srv), "headers": {"X-Inference-Id": "a"}}, 422, "X-Inference-Id"),
    ("bad Content-Length", lambda srv: {"content": b"{}", "headers": {"Content-Type": "application/json", "Content-Length": "abc"}}, 400, "Content-Length"),
]  # fmt: skip


def test_bad_input_gets_a_4xx_naming_the_field_never_a_500_and_is_never_captured(srv):
    s = srv.s
    answers = {}
    with TestClient(create_app(s), raise_server_exceptions=False) as client:
        for name, request, _, _ in BAD:
            answers[name] = client.post("/invocations", **request(srv))
        for name, body in {
            "labels: malformed": b"{",
            "labels: bad label": json.dumps({"inference_id": "a", "label": "yes"}).encode(),
            "labels: not a list": json.dumps({"labels": "a"}).encode(),
        }.items():
            answers[name] = client.post(
                "/ground-truth", content=body, headers={"Content-Type": "application/json"}
            )
        good = client.post("/invocations", json=_features(srv))

    expected = {name: (status, field) for name, _, status, field in BAD} | {
        "labels: malformed": (400, "body"),
        "labels: bad label": (422, "label"),
        "labels: not a list": (422, "labels"),
    }
    got = {name: (r.status_code, r.json().get("field")) for name, r in answers.items()}
    assert got == expected
    for name, r in answers.items():
        body = r.json()
        assert r.headers["content-type"] == "application/json", name
        assert body["error"] and body["expected"], (name, body)
    assert good.status_code == 200
    assert sorted(captured(s)["inference_id"]) == sorted(good.json()["inference_ids"])
    assert not s.labels_dir.exists() or not list(s.labels_dir.rglob("*.parquet"))


def test_the_index_version_and_health_are_json_and_nothing_is_html(srv):
    s = srv.s
    with TestClient(create_app(s, capture=False)) as client:
        index, version, health = client.get("/"), client.get("/version"), client.get("/health")
        missing = [client.get(p) for p in ("/docs", "/redoc", "/openapi.json", "/<script>")]

    assert index.json()["endpoints"].keys() == {
        "POST /invocations",
        "POST /ground-truth",
        "GET /health",
        "GET /version",
    }
    v = version.json()
    run_id = srv.client.get_model_version(s.registered_model, "1").run_id
    assert (v["dataset"], v["registered_model"], v["alias"], v["version"], v["run_id"]) == (
        "flights",
        s.registered_model,
        "champion",
        1,
        run_id,
    )
    assert dt.datetime.fromisoformat(v["loaded_at"]).tzinfo is not None
    h = health.json()
    assert (health.status_code, h["status"], h["model_version"], h["alias_version"], h["error"]) == (
        200,
        "ok",
        1,
        1,
        None,
    )
    assert h["capture"] is None and h["labels"]["written"] == 0
    for r in (index, version, health, *missing):
        assert r.headers["content-type"] == "application/json"
        assert r.headers["x-content-type-options"] == "nosniff"
    assert [r.status_code for r in missing] == [404] * 4


# ---------------------------------------------------------------------------------------------- the commands
def test_driftwatch_serve_listens_on_loopback_port_5080_by_default():
    from ml.cli import build_parser

    args = build_parser().parse_args(["serve"])
    assert (args.dataset, args.host, args.port, args.func.__name__) == (
        "flights",
        "127.0.0.1",
        5080,
        "_serve",
    )


@pytest.mark.parametrize("mode", ["sqlite", "server"])
def test_make_serve_reaches_the_mlflow_and_history_the_tasks_use(tmp_path, mode):
    from devstack.components import airflow_env, client_env
    from devstack.config import StackConfig

    cfg = StackConfig.for_tests(tmp_path, mlflow_mode=mode, history_db_url="sqlite:////x/h.db")
    tasks, server = airflow_env(cfg, base={}), client_env(cfg, base={})
    keys = [
        "DRIFTWATCH_HOME",
        "MLFLOW_TRACKING_URI",
        "DRIFTWATCH_DB_URL",
        "MLFLOW_TRACKING_USERNAME",
        "MLFLOW_TRACKING_PASSWORD",
    ]
    assert {k: server.get(k) for k in keys} == {k: tasks.get(k) for k in keys}
    assert ("MLFLOW_TRACKING_PASSWORD" in server) == (mode == "server")
    assert not [k for k in server if k.startswith("AIRFLOW")]
