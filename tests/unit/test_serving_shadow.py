"""The model server with `promotion.mode: shadow` (ml/serving/app.py, ml/shadow.py), in process through
starlette's TestClient on REAL models in a REAL MLflow registry (the fixtures of test_serving_app.py): the
version with the alias `shadow` scores every request after it is answered, its scores are captured apart
(never returned), the day's task finds them by inference id, and the server stops shadowing when the alias
goes; a shadow that cannot load changes nothing for the callers."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
from starlette.testclient import TestClient

from ml import capture
from ml.serving import create_app
from ml.train import predict_proba
from tests.unit import test_serving_app as base
from tests.unit.test_serving_app import split_body, wait_for

store, srv = base.store, base.srv  # the fixtures: a real registry with v1, v2 (models) and v3 (not a model)

pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")


def _shadow_mode(s):
    return s.with_overrides(promotion=dataclasses.replace(s.promotion, mode="shadow"))


def _shadow_captured(s) -> pd.DataFrame:
    files = sorted(capture.shadow_dir(s).glob("date=*/*.parquet"))
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True) if files else pd.DataFrame()


def _load(srv, version: int):
    import mlflow

    mv = srv.client.get_model_version(srv.s.registered_model, str(version))
    return mlflow.sklearn.load_model(mv.source)


def test_the_shadow_scores_every_request_after_the_answer_and_is_captured_apart(srv):
    s = _shadow_mode(srv.s)
    srv.client.set_registered_model_alias(s.registered_model, "shadow", "2")
    rows = srv.rows.head(8).reset_index(drop=True)
    dated = rows.assign(**{s.date_column: "2013-01-05"})
    app = create_app(s)
    with TestClient(app) as client:
        wait_for(lambda: client.get("/version").json().get("shadow_version") == 2, what="shadow v2 loaded")
        answers = [
            client.post(
                "/invocations",
                json=split_body(dated.iloc[i : i + 4], [s.date_column, *s.features], inference_ids=ids),
            )
            for i, ids in ((0, list("abcd")), (4, list("efgh")))
        ]
        health = client.get("/health").json()
    assert [a.status_code for a in answers] == [200, 200]
    assert all(a.json()["model_version"] == 1 for a in answers)  # the champion answers
    got = [p for a in answers for p in a.json()["predictions"]]
    np.testing.assert_allclose(got, predict_proba(_load(srv, 1), s, rows), rtol=1e-12)
    assert health["shadow"]["version"] == 2 and health["shadow"]["error"] is None
    assert health["status"] == "ok"
    shadow = _shadow_captured(s).set_index("inference_id").loc[list("abcdefgh")]
    assert set(shadow["shadow_version"]) == {2}
    np.testing.assert_allclose(shadow["shadow_score"], predict_proba(_load(srv, 2), s, rows), rtol=1e-12)
    assert not np.allclose(shadow["shadow_score"], got)  # another model's scores, never returned
    # the day's task reads them by inference id, in the batch's order; a row the server did not shadow: None
    batch = rows.assign(inference_id=list("hgfedcba"))
    found = capture.shadow_scores(s, pd.Timestamp("2013-01-05").date(), batch, 2)
    np.testing.assert_allclose(found["score"], shadow.loc[list("hgfedcba"), "shadow_score"], rtol=1e-12)
    assert capture.shadow_scores(s, pd.Timestamp("2013-01-05").date(), batch, 1) is None
    extra = batch.assign(inference_id=[*"hgfedcb", "unseen"])
    assert capture.shadow_scores(s, pd.Timestamp("2013-01-05").date(), extra, 2) is None


def test_a_shadow_that_cannot_load_is_reported_and_changes_nothing_for_callers(srv):
    s = _shadow_mode(srv.s)
    srv.client.set_registered_model_alias(s.registered_model, "shadow", "3")  # not a model
    with TestClient(create_app(s)) as client:
        answer = client.post("/invocations", json=split_body(srv.rows.head(3), s.features))
        health = client.get("/health").json()
    assert answer.status_code == 200 and answer.json()["model_version"] == 1
    assert health["status"] == "ok"  # the champion is served as it should be
    assert health["shadow"]["version"] is None and "v3 cannot be loaded" in health["shadow"]["error"]
    assert _shadow_captured(s).empty


def test_the_server_stops_shadowing_when_the_alias_goes(srv):
    s = _shadow_mode(srv.s)
    srv.client.set_registered_model_alias(s.registered_model, "shadow", "2")
    with TestClient(create_app(s)) as client:
        wait_for(lambda: client.get("/version").json().get("shadow_version") == 2, what="shadow v2 loaded")
        client.post("/invocations", json=split_body(srv.rows.head(2), s.features, inference_ids=["x1", "x2"]))
        srv.client.delete_registered_model_alias(s.registered_model, "shadow")
        wait_for(lambda: client.get("/version").json().get("shadow_version") is None, what="shadow dropped")
        client.post("/invocations", json=split_body(srv.rows.head(2), s.features, inference_ids=["y1", "y2"]))
    assert set(_shadow_captured(s)["inference_id"]) == {"x1", "x2"}


def test_direct_mode_loads_no_shadow(srv):
    srv.client.set_registered_model_alias(srv.s.registered_model, "shadow", "2")
    app = create_app(srv.s)
    with TestClient(app) as client:
        client.post("/invocations", json=split_body(srv.rows.head(2), srv.s.features))
        assert "shadow" not in client.get("/health").json()
    assert app.state.shadow is None and _shadow_captured(srv.s).empty
