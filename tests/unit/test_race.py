"""Two OS processes racing to move the champion: one champion, a complete audit log, nothing lost.

Two long-lived worker processes (started once; importing MLflow costs seconds) race once per round.
Each round is a fresh tmp: its own history DB and its own MLflow store (a copy of a template store built
once, since creating one runs MLflow's migrations). A round goes:

    parent: set the round up (versions, maybe a champion) and write its spec   -> arm-<i>
    workers: open the round's stores, warm up                                 -> armed-<i>-<worker>
    parent: both armed                                                          -> go-<i>
    workers: promote (or roll back) at once, record when they held the lock     -> result-<i>-<worker>.json

so the two calls start within a millisecond or so and meet at the lock. The lock's critical sections are
timed with the system-wide monotonic clock, so the test also sees that they did not overlap.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from scipy.special import expit

from ml import promotion, registry
from ml.config import BUNDLED_DATASETS, load_settings
from ml.evaluate import compare
from ml.history import History, locks

pytestmark = pytest.mark.slow  # real training or real processes: make test runs it, make test-unit does not

ROUNDS = 20
DAY = dt.date(2013, 2, 20)  # the day both runs promote for (a manual and a scheduled run of one date)
WORKERS = ("a", "b")
CONTENDED: list[bool] = []  # per round: did the second worker ask for the lock while the first held it

WORKER = r"""
import contextlib, datetime as dt, json, os, sys, time, traceback
from pathlib import Path

root, name = Path(sys.argv[1]), sys.argv[2]
from ml import promotion, registry
from ml.config import load_settings
from ml.history import History


base = load_settings("flights")
times = {}
real_lock = History.lock

@contextlib.contextmanager
def timed_lock(self, *args, **kwargs):
    times["asked"] = time.monotonic()
    with real_lock(self, *args, **kwargs):
        times["acquired"] = time.monotonic()
        try:
            yield
        finally:
            times["released"] = time.monotonic()

History.lock = timed_lock

def wait_for(path):
    while not path.exists():
        if (root / "stop").exists():
            os._exit(0)  # everything is committed; skip the interpreter's slow teardown of MLflow
        time.sleep(0.0005)

registry.client(base).search_registered_models()  # warm up MLflow's registry code on the template store
(root / f"ready-{name}").touch()
i = 0
while True:
    wait_for(root / f"arm-{i}")
    spec = json.loads((root / f"round-{i}.json").read_text())
    job = spec["jobs"][name]
    s = base.with_overrides(tracking_uri=spec["tracking_uri"], history_url=spec["history_url"],
                            registered_model=spec["model"])
    h = History(s.history_url)
    registry.client(s).get_registered_model(s.registered_model)  # open the round's MLflow store now
    h.alias_events(s.name)
    (root / f"armed-{i}-{name}").touch()
    wait_for(root / f"go-{i}")
    times.clear()
    try:
        if job["kind"] == "promote":
            out = promotion.promote(s, h, version=job["version"], day=dt.date.fromisoformat(job["day"]),
                                   evaluation=spec["evaluation"], dag_run_id=f"{name}-{i}")
        else:
            out = promotion.rollback(s, h, reason=f"race round {i}", actor=f"worker-{name}")
        result = {"ok": True, "out": out}
    except BaseException:
        result = {"ok": False, "error": traceback.format_exc()}
    result.update(times)
    tmp = root / f"result-{i}-{name}.tmp"
    tmp.write_text(json.dumps(result, default=str))
    tmp.replace(root / f"result-{i}-{name}.json")
    i += 1
"""


def _wait(
    paths: list[Path], procs: dict[str, subprocess.Popen], logs: Path, timeout: float, what: str
) -> None:
    deadline = time.monotonic() + timeout
    while not all(p.exists() for p in paths):
        for name, proc in procs.items():
            if proc.poll() is not None:
                pytest.fail(
                    f"worker {name} exited ({proc.returncode}) waiting for {what}:\n"
                    f"{(logs / f'{name}.log').read_text()[-4000:]}"
                )
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.002)


class Workers:
    """The two racing processes and the files they synchronise on."""

    def __init__(self, root: Path, procs: dict[str, subprocess.Popen]):
        self.root, self.procs, self.round = root, procs, 0

    def race(self, spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
        i, root = self.round, self.root
        self.round += 1
        tmp = root / f"round-{i}.tmp"
        tmp.write_text(json.dumps(spec, default=str))
        tmp.replace(root / f"round-{i}.json")
        (root / f"arm-{i}").touch()
        _wait([root / f"armed-{i}-{w}" for w in WORKERS], self.procs, root, 120, f"round {i} to be armed")
        (root / f"go-{i}").touch()
        _wait([root / f"result-{i}-{w}.json" for w in WORKERS], self.procs, root, 300, f"round {i}'s results")
        return {w: json.loads((root / f"result-{i}-{w}.json").read_text()) for w in WORKERS}


@pytest.fixture(scope="module")
def template_store(tmp_path_factory) -> Path:
    """An empty MLflow SQLite store, migrated once; each round gets a copy."""
    from mlflow import MlflowClient

    path = tmp_path_factory.mktemp("race-template") / "mlflow.db"
    uri = f"sqlite:///{path}"
    MlflowClient(tracking_uri=uri, registry_uri=uri).search_registered_models()
    return path


@pytest.fixture(scope="module")
def workers(tmp_path_factory, template_store) -> Iterator[Workers]:
    root = tmp_path_factory.mktemp("race-workers")
    home = root / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DRIFTWATCH", "MLFLOW_"))}
    env.update(
        DRIFTWATCH_HOME=str(home),
        DRIFTWATCH_LAKE=str(home / "lake"),
        DRIFTWATCH_DB_URL=f"sqlite:///{home / 'unused.db'}",
        MLFLOW_TRACKING_URI=f"sqlite:///{template_store}",
        MLFLOW_DISABLE_TELEMETRY="true",
        DO_NOT_TRACK="true",
    )
    procs = {}
    for name in WORKERS:
        log = (root / f"{name}.log").open("w")
        procs[name] = subprocess.Popen(
            [sys.executable, "-c", WORKER, str(root), name], env=env, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        _wait([root / f"ready-{w}" for w in WORKERS], procs, root, 300, "the workers to start")
        yield Workers(root, procs)
    finally:
        (root / "stop").touch()
        for proc in procs.values():
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


@pytest.fixture(scope="module")
def evaluation() -> dict[str, Any]:
    """A real promoting `compare` result (with the segment check), as the workers get it: through JSON."""
    s = load_settings(BUNDLED_DATASETS / "flights.yaml", environ={})
    s = s.with_overrides(thresholds=dataclasses.replace(s.thresholds, bootstrap_resamples=100))
    rng = np.random.default_rng(0)
    x = rng.normal(size=1000)
    y = (rng.random(1000) < expit(2 * x)).astype(int)
    weak = expit(2.0 * (x + rng.normal(scale=1.5, size=1000)) / np.sqrt(1 + 4 * 1.5**2))
    out = compare(s, y, weak, expit(2 * x), segments={"origin": np.array(["EWR", "JFK"] * 500)})
    assert out["promote"], out["reason"]
    return json.loads(json.dumps(out, default=str))


@pytest.fixture
def round_settings(settings, template_store):
    """This round's settings: a fresh history DB and a fresh copy of the MLflow store under tmp_path."""
    store = Path(settings.tracking_uri.removeprefix("sqlite:///"))
    store.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(template_store, store)
    return settings


def _register(s, n: int, source: Path) -> list[int]:
    c = registry.client(s)
    c.create_registered_model(s.registered_model)
    return [
        int(c.create_model_version(s.registered_model, str(source), run_id=None).version) for _ in range(n)
    ]


def _timeline(history: History, s, alias: str) -> list[dict[str, Any]]:
    return sorted(history.alias_events(s.name, alias), key=lambda e: (e["logical_date"], e["id"]))


def _check_consistent(s, history: History, results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The invariants every race must leave; returns the last champion event."""
    from mlflow import MlflowClient

    for name, r in results.items():
        assert r["ok"], f"worker {name} failed:\n{r['error']}"
    # the critical sections did not overlap
    first, second = sorted(results.values(), key=lambda r: r["acquired"])
    assert first["released"] <= second["acquired"], "both workers held the promotion lock at once"
    CONTENDED.append(second["asked"] < first["released"])

    champion_events = _timeline(history, s, "champion")
    for earlier, later in zip(champion_events, champion_events[1:], strict=False):
        assert later["before_version"] == earlier["after_version"], (
            f"broken before/after chain: {champion_events}"
        )
    last = champion_events[-1]
    # one `previous` event per champion change that replaced a champion, naming the replaced version
    previous_events = _timeline(history, s, "previous")
    assert [e["after_version"] for e in previous_events] == [
        e["before_version"] for e in champion_events if e["before_version"] is not None
    ]
    for earlier, later in zip(previous_events, previous_events[1:], strict=False):
        assert later["before_version"] == earlier["after_version"], (
            f"broken previous chain: {previous_events}"
        )

    c = MlflowClient(tracking_uri=s.tracking_uri, registry_uri=s.tracking_uri)
    aliases = {k: int(v) for k, v in c.get_registered_model(s.registered_model).aliases.items()}
    assert aliases == {"champion": last["after_version"], "previous": last["before_version"]}
    versions = [
        c.get_model_version(s.registered_model, v.version)  # search leaves `aliases` empty
        for v in c.search_model_versions(f"name='{s.registered_model}'")
    ]
    assert [int(v.version) for v in versions if "champion" in v.aliases] == [last["after_version"]]
    tag = json.loads(c.get_registered_model(s.registered_model).tags["driftwatch.audit.champion"])
    assert tag["version"] == last["after_version"]
    with history.engine.connect() as conn:
        assert conn.execute(sa.select(locks)).fetchall() == []
    return last


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_two_processes_promoting_at_once_leave_one_champion_and_a_complete_audit_log(
    workers, round_settings, evaluation, tmp_path, round_
):
    """Even rounds race over an established champion, odd rounds over the dataset's first promotion."""
    s = round_settings.with_overrides(registered_model=f"race-{round_}")
    history = History(s.history_url)
    v1, v2, v3 = _register(s, 3, tmp_path / "model")
    established = round_ % 2 == 0
    if established:
        promotion.promote(
            s,
            history,
            version=v1,
            day=DAY - dt.timedelta(days=1),
            evaluation=copy.deepcopy(evaluation),
            dag_run_id="setup",
        )
    raced = (v2, v3) if established else (v1, v2)

    results = workers.race(
        {
            "tracking_uri": s.tracking_uri,
            "history_url": s.history_url,
            "model": s.registered_model,
            "evaluation": evaluation,
            "jobs": {
                w: {"kind": "promote", "version": v, "day": DAY.isoformat()}
                for w, v in zip(WORKERS, raced, strict=True)
            },
        }
    )

    last = _check_consistent(s, history, results)
    events = _timeline(history, s, "champion")
    assert len(events) == (1 if established else 0) + 2, "one champion event per successful promotion"
    assert {e["after_version"] for e in events[-2:]} == set(raced)
    assert events[0]["before_version"] is None
    winner, loser = sorted(results.values(), key=lambda r: r["acquired"])
    assert winner["out"] == {
        "promoted": True,
        "champion": events[-2]["after_version"],
        "previous": v1 if established else None,
        "recorded_before": False,
    }
    assert loser["out"] == {
        "promoted": True,
        "champion": last["after_version"],
        "previous": events[-2]["after_version"],
        "recorded_before": False,
    }
    assert {e["dag_run_id"] for e in events[-2:]} == {f"{w}-{workers.round - 1}" for w in WORKERS}


@pytest.mark.parametrize("round_", range(4))
def test_a_rollback_racing_a_promotion_keeps_the_chain(workers, round_settings, evaluation, tmp_path, round_):
    """Whichever goes first, the other applies on top of it: the chain holds, the aliases mirror the end."""
    s = round_settings.with_overrides(registered_model=f"race-rollback-{round_}")
    history = History(s.history_url)
    v1, v2, v3 = _register(s, 3, tmp_path / "model")
    for version, day in ((v1, DAY - dt.timedelta(days=2)), (v2, DAY - dt.timedelta(days=1))):
        promotion.promote(
            s, history, version=version, day=day, evaluation=copy.deepcopy(evaluation), dag_run_id="setup"
        )

    results = workers.race(
        {
            "tracking_uri": s.tracking_uri,
            "history_url": s.history_url,
            "model": s.registered_model,
            "evaluation": evaluation,
            "jobs": {
                "a": {"kind": "rollback"},
                "b": {"kind": "promote", "version": v3, "day": DAY.isoformat()},
            },
        }
    )

    last = _check_consistent(s, history, results)
    if results["a"]["acquired"] < results["b"]["acquired"]:  # rolled back to v1, then v3 promoted over it
        assert (last["before_version"], last["after_version"]) == (v1, v3)
    else:  # v3 promoted, then rolled back to v2
        assert (last["before_version"], last["after_version"]) == (v3, v2)
        assert last["reason"] == f"rollback: race round {workers.round - 1}" and last["actor"] == "worker-a"


def test_the_workers_really_contended_for_the_lock():
    """Most rounds must have had one worker waiting on the other, or the rounds proved little."""
    if len(CONTENDED) < ROUNDS:
        pytest.skip("the race rounds did not all run in this session")
    assert sum(CONTENDED) >= len(CONTENDED) // 2, f"contended in {sum(CONTENDED)} of {len(CONTENDED)} rounds"
