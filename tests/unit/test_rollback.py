"""`rollback`: champion back to previous under the promotion lock, audited, and `champion --at` after it.

Semantics pinned here (see `ml.promotion.rollback`):
- champion goes current -> previous and `previous` goes to the version rolled back from, so a second
  rollback undoes the first;
- the rollback's audit events carry the logical date of the latest audit event, so they sort after every
  recorded event: `champion --at` answers the restored version from that date on, that date included,
  and earlier dates keep their answers.

MLflow runs as a library on one SQLite file per module; each test registers its own model name (through
DRIFTWATCH__REGISTERED_MODEL, so the CLI sees it too) and has its own history database.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import json
import uuid

import numpy as np
import pytest
import sqlalchemy as sa
from scipy.special import expit

from ml import promotion, registry
from ml.cli import main
from ml.config import BUNDLED_DATASETS, load_settings
from ml.evaluate import compare
from ml.exceptions import ModelError
from ml.history import History, locks

A, B, C = dt.date(2013, 1, 31), dt.date(2013, 2, 10), dt.date(2013, 2, 20)
DAY = dt.timedelta(days=1)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    """An MLflow SQLite store shared by the module's tests (creating one runs MLflow's migrations)."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path_factory.mktemp('rollback') / 'mlflow.db'}"
    MlflowClient(tracking_uri=uri, registry_uri=uri).search_registered_models()
    return uri


@pytest.fixture(scope="module")
def evaluations() -> dict[str, dict]:
    """Real `compare` results: a first champion and a better challenger (with the segment check)."""
    s = load_settings(BUNDLED_DATASETS / "flights.yaml", environ={})
    s = s.with_overrides(thresholds=dataclasses.replace(s.thresholds, bootstrap_resamples=100))
    rng = np.random.default_rng(0)
    x = rng.normal(size=1000)
    y = (rng.random(1000) < expit(2 * x)).astype(int)
    weak = expit(2.0 * (x + rng.normal(scale=1.5, size=1000)) / np.sqrt(1 + 4 * 1.5**2))
    out = {
        "bootstrap": compare(s, y, None, expit(2 * x)),
        "better": compare(s, y, weak, expit(2 * x), segments={"origin": np.array(["EWR", "JFK"] * 500)}),
    }
    assert out["bootstrap"]["promote"] and out["better"]["promote"]
    return out


@pytest.fixture
def s(dw_env, monkeypatch, store):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    monkeypatch.setenv("DRIFTWATCH__REGISTERED_MODEL", f"flights-{uuid.uuid4().hex[:12]}")
    return load_settings("flights")


@pytest.fixture
def history(s) -> History:
    return History(s.history_url)


def _register(s, n: int, tmp_path) -> list[int]:
    c = registry.client(s)
    c.create_registered_model(s.registered_model)
    return [
        int(c.create_model_version(s.registered_model, str(tmp_path / "model"), run_id=None).version)
        for _ in range(n)
    ]


@pytest.fixture
def three(s, history, evaluations, tmp_path) -> tuple[int, int, int]:
    """v1 champion from A, v2 from B, v3 from C: champion v3, previous v2."""
    v1, v2, v3 = _register(s, 3, tmp_path)
    for version, day, kind in ((v1, A, "bootstrap"), (v2, B, "better"), (v3, C, "better")):
        promotion.promote(
            s,
            history,
            version=version,
            day=day,
            evaluation=copy.deepcopy(evaluations[kind]),
            dag_run_id=f"scheduled__{day}",
        )
    return v1, v2, v3


def _alias(s, alias: str) -> int | None:
    aliases = registry.client(s).get_registered_model(s.registered_model).aliases
    return int(aliases[alias]) if alias in aliases else None


def _events(history: History, s, alias: str) -> list[tuple]:
    return [
        (e["logical_date"], e["before_version"], e["after_version"])
        for e in history.alias_events(s.name, alias)
    ]


def _tags(s, version: int) -> dict[str, str]:
    return registry.client(s).get_model_version(s.registered_model, str(version)).tags


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# ---------------------------------------------------------------------------------------------- rollback
def test_rollback_moves_champion_back_to_previous_with_audit_rows(s, history, three):
    v1, v2, v3 = three

    out = promotion.rollback(s, history, reason="v3 scores EWR badly", actor="alice")

    assert out == {
        "rolled_back": v3,
        "champion": v2,
        "previous": v3,
        "logical_date": C.isoformat(),
        "reason": "rollback: v3 scores EWR badly",
    }
    assert (_alias(s, "champion"), _alias(s, "previous")) == (v2, v3)
    assert promotion.champion_alias(s) == v2
    assert _events(history, s, "champion")[-1] == (C.isoformat(), v3, v2)
    assert _events(history, s, "previous")[-1] == (C.isoformat(), v2, v3)
    for event in history.alias_events(s.name)[-2:]:
        assert event["reason"].startswith("rollback: v3 scores EWR badly")
        assert event["actor"] == "alice" and event["dag_run_id"] is None and event["at"]
    assert len(history.alias_events(s.name)) == 3 + 2 + 2  # 3 promotions, 2 replaced champions, the rollback
    assert _tags(s, v3)["driftwatch.rolled_back"] == "true"
    assert _tags(s, v3)["driftwatch.rolled_back_reason"] == "v3 scores EWR badly"
    assert "driftwatch.rolled_back" not in _tags(s, v2)
    mirrored = json.loads(
        registry.client(s).get_registered_model(s.registered_model).tags["driftwatch.audit.champion"]
    )
    assert mirrored | {"at": None} == {
        "version": v2,
        "before": v3,
        "logical_date": C.isoformat(),
        "reason": "rollback: v3 scores EWR badly",
        "dag_run_id": None,
        "actor": "alice",
        "at": None,
    }
    with history.engine.connect() as conn:
        assert conn.execute(sa.select(locks)).fetchall() == []


def test_champion_at_after_a_rollback(s, history, three, capsys):
    """Dates before the latest audit event keep their answers; from it on, the restored version."""
    v1, v2, v3 = three
    assert history.champion_at(s.name, C) == v3

    promotion.rollback(s, history, reason="bad")

    expected = {A - DAY: None, A: v1, B - DAY: v1, B: v2, C - DAY: v2, C: v2, C + DAY: v2, C + 30 * DAY: v2}
    assert {day: history.champion_at(s.name, day) for day in expected} == expected
    for day, version in expected.items():
        code, out, _ = run(capsys, "champion", "--at", day.isoformat())
        assert (code, out.strip()) == ((0, str(version)) if version else (1, f"no champion on {day}"))
    assert run(capsys, "champion")[:2] == (0, f"{v2}\n")


def test_a_second_rollback_undoes_the_first(s, history, three):
    v1, v2, v3 = three
    promotion.rollback(s, history, reason="v3 looked bad")

    out = promotion.rollback(s, history, reason="false alarm", actor="bob")

    assert (out["rolled_back"], out["champion"], out["previous"]) == (v2, v3, v2)
    assert (_alias(s, "champion"), _alias(s, "previous")) == (v3, v2)
    assert _events(history, s, "champion")[-2:] == [(C.isoformat(), v3, v2), (C.isoformat(), v2, v3)]
    assert history.champion_at(s.name, C) == v3
    assert _tags(s, v2)["driftwatch.rolled_back_reason"] == "false alarm"
    assert "driftwatch.rolled_back" not in _tags(s, v3)


def test_a_promotion_after_a_rollback_replaces_the_restored_champion(
    s, history, three, evaluations, tmp_path
):
    v1, v2, v3 = three
    promotion.rollback(s, history, reason="bad")
    (v4,) = [
        int(
            registry.client(s)
            .create_model_version(s.registered_model, str(tmp_path / "m"), run_id=None)
            .version
        )
    ]

    out = promotion.promote(
        s,
        history,
        version=v4,
        day=C + DAY,
        evaluation=copy.deepcopy(evaluations["better"]),
        dag_run_id="next",
    )

    assert out == {"promoted": True, "champion": v4, "previous": v2, "recorded_before": False}
    assert (_alias(s, "champion"), _alias(s, "previous")) == (v4, v2)
    previous = sorted(history.alias_events(s.name, "previous"), key=lambda e: (e["logical_date"], e["id"]))
    assert (previous[-1]["before_version"], previous[-1]["after_version"]) == (v3, v2)
    chain = sorted(history.alias_events(s.name, "champion"), key=lambda e: (e["logical_date"], e["id"]))
    assert [(e["before_version"], e["after_version"]) for e in chain] == [
        (None, v1),
        (v1, v2),
        (v2, v3),
        (v3, v2),
        (v2, v4),
    ]


def test_a_rerun_of_the_rolled_back_days_promotion_does_not_undo_the_rollback(s, history, three, evaluations):
    v1, v2, v3 = three
    promotion.rollback(s, history, reason="bad")
    before = history.alias_events(s.name)

    promotion.promote(
        s, history, version=v3, day=C, evaluation=copy.deepcopy(evaluations["better"]), dag_run_id="rerun"
    )

    assert history.alias_events(s.name) == before
    assert (_alias(s, "champion"), _alias(s, "previous")) == (v2, v3)


def test_rollback_at_a_later_logical_date(s, history, three):
    v1, v2, v3 = three

    out = promotion.rollback(s, history, reason="bad", day=C + 5 * DAY)

    assert out["logical_date"] == (C + 5 * DAY).isoformat()
    assert [history.champion_at(s.name, d) for d in (C, C + 4 * DAY, C + 5 * DAY)] == [v3, v3, v2]
    with pytest.raises(
        ModelError, match=r"rollback date 2013-02-24 is before the latest audit event \(2013-02-25\)"
    ):
        promotion.rollback(s, history, reason="again", day=C + 4 * DAY)


# ---------------------------------------------------------------------------------------------- impossible
def test_rollback_without_a_previous_version_is_refused(s, history, evaluations, tmp_path):
    (v1,) = _register(s, 1, tmp_path)
    promotion.promote(
        s, history, version=v1, day=A, evaluation=copy.deepcopy(evaluations["bootstrap"]), dag_run_id=None
    )
    before = history.alias_events(s.name)

    with pytest.raises(
        ModelError, match=rf"flights: cannot roll back champion version {v1}: there is no previous version"
    ):
        promotion.rollback(s, history, reason="bad")

    assert history.alias_events(s.name) == before
    assert (_alias(s, "champion"), _alias(s, "previous")) == (v1, None)
    with history.engine.connect() as conn:
        assert conn.execute(sa.select(locks)).fetchall() == []


def test_rollback_without_a_champion_is_refused(s, history):
    with pytest.raises(ModelError, match="flights: nothing to roll back: the audit log has no champion"):
        promotion.rollback(s, history, reason="bad")


def test_rollback_needs_a_reason(s, history, three):
    with pytest.raises(ModelError, match="rollback needs a reason"):
        promotion.rollback(s, history, reason="  ")
    assert _alias(s, "champion") == three[2]


# ---------------------------------------------------------------------------------------------- CLI
def test_cli_rollback_prints_before_and_after(s, history, three, capsys):
    v1, v2, v3 = three

    code, out, err = run(capsys, "rollback", "--reason", "v3 scores EWR badly", "--actor", "carol")

    assert (code, err) == (0, "")
    assert out == f"flights: champion {v3} -> {v2} (previous: {v3}; recorded on {C})\n"
    assert history.alias_events(s.name)[-1]["actor"] == "carol"
    code, out, _ = run(capsys, "rollback", "--reason", "undo", "--json")
    assert code == 0 and json.loads(out) | {"reason": None} == {
        "dataset": "flights",
        "rolled_back": v2,
        "champion": v3,
        "previous": v2,
        "logical_date": C.isoformat(),
        "reason": None,
    }


def test_cli_rollback_without_previous_exits_1_with_the_message(s, history, evaluations, tmp_path, capsys):
    (v1,) = _register(s, 1, tmp_path)
    promotion.promote(
        s, history, version=v1, day=A, evaluation=copy.deepcopy(evaluations["bootstrap"]), dag_run_id=None
    )

    code, out, err = run(capsys, "rollback", "--reason", "bad")

    assert (code, out) == (1, "")
    assert err.startswith(
        f"error: flights: cannot roll back champion version {v1}: there is no previous version"
    )


def test_cli_rollback_requires_a_reason(s, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["rollback"])
    assert exc.value.code == 2
    assert "--reason" in capsys.readouterr().err


def test_cli_rollback_rejects_a_bad_date(s, capsys):
    code, _, err = run(capsys, "rollback", "--reason", "x", "--date", "20-02-2013")
    assert code == 2 and "rollback --date: expected YYYY-MM-DD. Got '20-02-2013'." in err


def test_rollback_to_a_version_missing_from_mlflow_records_nothing(s, history, three):
    v1, v2, v3 = three
    registry.client(s).delete_model_version(s.registered_model, str(v2))
    before = history.alias_events(s.name)

    with pytest.raises(
        ModelError, match=rf"cannot roll back to version {v2} of {s.registered_model}: .*Nothing was recorded"
    ):
        promotion.rollback(s, history, reason="bad")

    assert history.alias_events(s.name) == before
    assert _alias(s, "champion") == v3
