"""The MLflow registry side: log a challenger, move `champion`/`previous` under the audit log, reject.

MLflow runs as a library on a SQLite file in tmp (no server). One store per module (creating it costs
seconds); each test registers its own model name, so tests do not see each other's aliases.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import uuid

import numpy as np
import pytest
import sqlalchemy as sa
from scipy.special import expit

from ml import promotion, registry
from ml.config import load_settings
from ml.evaluate import compare
from ml.history import History
from ml.train import fit
from tests.conftest import isolate

D1, D2, D3 = dt.date(2013, 1, 31), dt.date(2013, 2, 15), dt.date(2013, 2, 10)
TRAIN_DAYS = ["2013-01-01", "2013-01-02", "2013-01-03"]


@pytest.fixture(scope="module")
def mlflow_store(tmp_path_factory, flights_frame):
    """A SQLite MLflow store holding one real challenger logged by `log_challenger`."""
    home = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{home / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp:
        isolate(mp, home, uri)
        s = load_settings("flights").with_overrides(registered_model="flights-source")
        train = flights_frame[flights_frame["date"].isin(TRAIN_DAYS)].reset_index(drop=True)
        model = fit(s, train, D1, {"max_iter": 10})
        split = {
            "train_days": TRAIN_DAYS[:2],
            "holdout_days": TRAIN_DAYS[2:],
            "train_range": f"{TRAIN_DAYS[0]}..{TRAIN_DAYS[1]}",
            "holdout_range": f"{TRAIN_DAYS[2]}..{TRAIN_DAYS[2]}",
        }
        evidence = [home / "drift.html", home / "drift.json"]
        for path in evidence:
            path.write_text("{}")
        info = registry.log_challenger(
            s,
            day=D1,
            model=model,
            train=train,
            split=split,
            trigger="bootstrap: test",
            digest="abc123",
            params={},
            reference=train.head(100),
            dag_run_id="manual__test",
            dag_run_url=None,
            metrics={"holdout_roc_auc": 0.7},
            files={"trigger": evidence},
        )
        registry._experiment_id.cache_clear()
        yield {"uri": uri, "settings": s, "info": info, "model": model, "train": train}


@pytest.fixture
def reg(dw_env, monkeypatch, mlflow_store):
    """Settings on the module's MLflow store with a model name of the test's own, and a fresh history."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_store["uri"])
    s = load_settings("flights").with_overrides(registered_model=f"flights-{uuid.uuid4().hex[:12]}")
    return s


@pytest.fixture
def history(reg) -> History:
    return History(reg.history_url)


def _register(s, mlflow_store, n: int) -> list[int]:
    """n versions of the logged challenger under the test's model name."""
    c = registry.client(s)
    source = c.get_model_version("flights-source", str(mlflow_store["info"]["version"]))
    c.create_registered_model(s.registered_model)
    return [
        int(c.create_model_version(s.registered_model, source.source, run_id=source.run_id).version)
        for _ in range(n)
    ]


def _scores(seed: int = 0, n: int = 1000):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    p_true = expit(2.0 * x)
    y = (rng.random(n) < p_true).astype(int)
    p_weak = expit(2.0 * (x + rng.normal(scale=1.5, size=n)) / np.sqrt(1 + 4 * 1.5**2))
    return y, p_true, p_weak


@pytest.fixture(scope="module")
def evaluations(mlflow_store) -> dict[str, dict]:
    """Real `compare` results (first champion, better challenger, worse challenger), computed once."""
    s = mlflow_store["settings"]
    s = s.with_overrides(thresholds=dataclasses.replace(s.thresholds, bootstrap_resamples=200))
    y, strong, weak = _scores()
    out = {
        "bootstrap": compare(s, y, None, strong),
        "better": compare(s, y, weak, strong),
        "worse": compare(s, y, strong, weak),
    }
    assert [out[k]["promote"] for k in ("bootstrap", "better", "worse")] == [True, True, False]
    return out


@pytest.fixture
def ev(evaluations):
    """`ev("better")`: a fresh copy of one of the module's evaluations."""
    return lambda kind: copy.deepcopy(evaluations[kind])


def _alias(s, alias: str) -> int | None:
    from mlflow.exceptions import MlflowException

    try:
        return int(registry.client(s).get_model_version_by_alias(s.registered_model, alias).version)
    except MlflowException:
        return None


def _events(history: History, s, alias: str) -> list[tuple]:
    return [
        (e["logical_date"], e["before_version"], e["after_version"])
        for e in history.alias_events(s.name, alias)
    ]


def test_log_challenger_registers_a_loadable_tagged_version(mlflow_store):
    s, info = mlflow_store["settings"], mlflow_store["info"]
    c = registry.client(s)

    version = c.get_model_version(s.registered_model, str(info["version"]))
    loaded = registry.load_model(s, info["version"])

    assert version.run_id == info["run_id"]
    assert version.tags["driftwatch.logical_date"] == D1.isoformat()
    assert version.tags["driftwatch.data_digest"] == "abc123"
    assert "Awaiting evaluation" in version.description
    assert c.get_run(info["run_id"]).info.status == "FINISHED"  # complete before the version existed
    assert sorted(a.path for a in c.list_artifacts(info["run_id"], "trigger")) == [
        "trigger/drift.html",
        "trigger/drift.json",
    ]
    X = mlflow_store["train"][s.features]
    np.testing.assert_array_equal(loaded.predict_proba(X), mlflow_store["model"].predict_proba(X))


def test_promote_moves_champion_and_previous_with_an_audit_trail(reg, history, mlflow_store, ev):
    v1, v2 = _register(reg, mlflow_store, 2)

    first = promotion.promote(
        reg, history, version=v1, day=D1, evaluation=ev("bootstrap"), dag_run_id="run-1"
    )
    better = ev("better")
    second = promotion.promote(reg, history, version=v2, day=D2, evaluation=better, dag_run_id="run-2")

    assert first == {"promoted": True, "champion": v1, "previous": None, "recorded_before": False}
    assert second == {"promoted": True, "champion": v2, "previous": v1, "recorded_before": False}
    assert _alias(reg, "champion") == v2
    assert _alias(reg, "previous") == v1
    assert promotion.champion_alias(reg) == v2
    assert _events(history, reg, "champion") == [(D1.isoformat(), None, v1), (D2.isoformat(), v1, v2)]
    assert _events(history, reg, "previous") == [(D2.isoformat(), None, v1)]
    last = history.alias_events(reg.name, "champion")[-1]
    assert last["reason"] == better["reason"] and last["dag_run_id"] == "run-2"
    assert history.champion_at(reg.name, D2) == v2
    tags = registry.client(reg).get_model_version(reg.registered_model, str(v2)).tags
    assert tags["driftwatch.decision"] == "promoted"
    assert tags["driftwatch.promoted_on"] == D2.isoformat()
    assert tags["driftwatch.replaced_version"] == str(v1)


def test_promote_again_for_the_same_day_and_version_adds_no_event(reg, history, mlflow_store, ev):
    v1, v2 = _register(reg, mlflow_store, 2)
    promotion.promote(reg, history, version=v1, day=D1, evaluation=ev("bootstrap"), dag_run_id=None)
    better = ev("better")
    promotion.promote(reg, history, version=v2, day=D2, evaluation=better, dag_run_id="try-1")
    before = history.alias_events(reg.name)

    retry = promotion.promote(reg, history, version=v2, day=D2, evaluation=better, dag_run_id="try-2")

    assert retry["champion"] == v2 and retry["recorded_before"] is True
    assert history.alias_events(reg.name) == before
    assert _alias(reg, "champion") == v2 and _alias(reg, "previous") == v1


def test_promote_interrupted_between_audit_rows_is_completed_by_its_retry(
    reg, history, mlflow_store, ev, monkeypatch
):
    """A promotion that fails after writing the `champion` row but before the `previous` row must not
    leave a half-written audit log that the retry then takes as done."""
    v1, v2 = _register(reg, mlflow_store, 2)
    promotion.promote(reg, history, version=v1, day=D1, evaluation=ev("bootstrap"), dag_run_id=None)
    real = History.add_alias_event

    def connection_lost_on_previous(self, conn=None, **fields):
        if fields.get("alias") == "previous":
            raise sa.exc.OperationalError("INSERT INTO dw_alias_events", {}, Exception("connection lost"))
        return real(self, conn, **fields)

    monkeypatch.setattr(History, "add_alias_event", connection_lost_on_previous)
    with pytest.raises(sa.exc.OperationalError, match="connection lost"):
        promotion.promote(reg, history, version=v2, day=D2, evaluation=ev("better"), dag_run_id="try-1")
    monkeypatch.setattr(History, "add_alias_event", real)

    promotion.promote(reg, history, version=v2, day=D2, evaluation=ev("better"), dag_run_id="try-2")

    assert _events(history, reg, "champion") == [(D1.isoformat(), None, v1), (D2.isoformat(), v1, v2)]
    assert _events(history, reg, "previous") == [(D2.isoformat(), None, v1)]
    assert _alias(reg, "champion") == v2 and _alias(reg, "previous") == v1


def test_previous_events_record_the_version_previous_named_before(reg, history, mlflow_store, ev):
    v1, v2, v3 = _register(reg, mlflow_store, 3)
    promotion.promote(reg, history, version=v1, day=D1, evaluation=ev("bootstrap"), dag_run_id=None)
    promotion.promote(reg, history, version=v2, day=D3, evaluation=ev("better"), dag_run_id=None)
    promotion.promote(reg, history, version=v3, day=D2, evaluation=ev("better"), dag_run_id=None)

    assert _events(history, reg, "previous") == [(D3.isoformat(), None, v1), (D2.isoformat(), v1, v2)]
    assert _alias(reg, "previous") == v2


def test_the_promotion_and_the_days_row_are_one_transaction(reg, history, mlflow_store, ev):
    v1, v2 = _register(reg, mlflow_store, 2)
    history.start_day(reg.name, D2, status="accepted")
    promotion.promote(reg, history, version=v1, day=D1, evaluation=ev("bootstrap"), dag_run_id=None)
    better = ev("better")

    promotion.promote(reg, history, version=v2, day=D2, evaluation=better, dag_run_id="run-2")

    row = history.get_day(reg.name, D2)
    assert (row["promotion"], row["promotion_reason"], row["candidate_version"]) == (
        "promoted",
        better["reason"],
        v2,
    )


def test_rerun_of_an_old_days_promotion_leaves_the_alias_on_the_later_champion(
    reg, history, mlflow_store, ev
):
    v1, v2 = _register(reg, mlflow_store, 2)
    bootstrap = ev("bootstrap")
    promotion.promote(reg, history, version=v1, day=D1, evaluation=bootstrap, dag_run_id=None)
    promotion.promote(reg, history, version=v2, day=D2, evaluation=ev("better"), dag_run_id=None)
    before = history.alias_events(reg.name)

    promotion.promote(reg, history, version=v1, day=D1, evaluation=bootstrap, dag_run_id="rerun")

    assert history.alias_events(reg.name) == before
    assert _alias(reg, "champion") == v2
    assert _alias(reg, "previous") == v1


def test_backfilled_promotion_between_two_others_is_recorded_but_not_served(reg, history, mlflow_store, ev):
    v1, v2, v3 = _register(reg, mlflow_store, 3)
    better = ev("better")
    promotion.promote(reg, history, version=v1, day=D1, evaluation=ev("bootstrap"), dag_run_id=None)
    promotion.promote(reg, history, version=v2, day=D2, evaluation=better, dag_run_id=None)

    out = promotion.promote(reg, history, version=v3, day=D3, evaluation=better, dag_run_id="backfill")

    assert out["previous"] == v1  # the champion in force before D3 in logical-date order
    assert history.champion_at(reg.name, D3) == v3
    assert history.champion_at(reg.name, D2) == v2
    assert _alias(reg, "champion") == v2
    assert _alias(reg, "previous") == v1


def test_promoting_the_serving_champion_again_is_a_no_op(reg, history, mlflow_store, ev):
    (v1,) = _register(reg, mlflow_store, 1)
    promotion.promote(reg, history, version=v1, day=D1, evaluation=ev("bootstrap"), dag_run_id=None)
    before = history.alias_events(reg.name)

    out = promotion.promote(reg, history, version=v1, day=D2, evaluation=ev("better"), dag_run_id=None)

    assert out["promoted"] is False and out["champion"] == v1
    assert history.alias_events(reg.name) == before


def test_sync_aliases_repairs_an_alias_moved_by_hand(reg, history, mlflow_store, ev):
    v1, v2 = _register(reg, mlflow_store, 2)
    promotion.promote(reg, history, version=v1, day=D1, evaluation=ev("bootstrap"), dag_run_id=None)
    promotion.promote(reg, history, version=v2, day=D2, evaluation=ev("better"), dag_run_id=None)
    registry.client(reg).set_registered_model_alias(reg.registered_model, "champion", str(v1))

    latest = promotion.sync_aliases(reg, history)

    assert latest == {"champion": v2, "previous": v1}
    assert _alias(reg, "champion") == v2


def test_reject_tags_the_version_with_the_reason_and_keeps_the_champion(reg, history, mlflow_store, ev):
    v1, v2 = _register(reg, mlflow_store, 2)
    promotion.promote(reg, history, version=v1, day=D1, evaluation=ev("bootstrap"), dag_run_id=None)
    worse = ev("worse")
    worse["champion_version"] = v1
    before = history.alias_events(reg.name)

    promotion.reject(reg, version=v2, day=D2, evaluation=worse, champion=v1)

    version = registry.client(reg).get_model_version(reg.registered_model, str(v2))
    assert version.tags["driftwatch.decision"] == "rejected"
    assert version.tags["driftwatch.reason"] == worse["reason"]
    assert version.tags["gain.ci_high"] == f"{worse['bootstrap_ci']['high']:.6f}"
    assert worse["reason"] in version.description
    assert "FAIL" in version.description
    assert _alias(reg, "champion") == v1
    assert history.alias_events(reg.name) == before


@pytest.mark.parametrize("day", [dt.date(1949, 3, 1), dt.date(2013, 3, 1)])
def test_monitoring_metrics_of_any_date_are_logged(dw_env, day):
    """A dataset of the 1940s: MLflow refuses negative timestamps, so a day before 1970 is stamped 1970-01-01;
    the run is still the day's (its logical_date tag) and holds the value."""
    s = load_settings("flights")
    history = History(s.history_url)
    registry.log_monitoring(s, history, day, 1, {"batch_auc": 0.61}, [])
    c = registry.client(s)
    exp = registry.experiment_id(s, "monitoring")
    (run,) = c.search_runs([exp], filter_string=f"tags.`driftwatch.logical_date` = '{day.isoformat()}'")
    assert run.data.metrics["batch_auc"] == 0.61
    (metric,) = c.get_metric_history(run.info.run_id, "batch_auc")
    assert metric.timestamp == max(0, int(dt.datetime.combine(day, dt.time(), dt.UTC).timestamp() * 1000))
