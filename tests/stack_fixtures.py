"""Stack fixtures (registered for every test directory by tests/conftest.py): a real local stack (Airflow scheduler, dag-processor, API server; MLflow server) per
test session, in a tmp home with free ports, driven through `devstack`.

    def test_something(stack, add_partitions):
        add_partitions(load_settings("flights"), days)   # the lake is stack.lake; fill it any time before a run
        result = stack.backfill("retraining_pipeline", "2013-01-01", "2013-01-03")
        assert result["failed"] == 0, stack.failure_report()

While the stack fixture is active, DRIFTWATCH_HOME, DRIFTWATCH_LAKE and MLFLOW_TRACKING_URI of the test
process point at the stack (of the last one started), so `load_settings` and `ml.status` read what the tasks
write; MLFLOW_TRACKING_USERNAME/PASSWORD are the stack's MLflow login (its basic-auth app refuses anonymous
requests). Do not combine it with the unit tests' `dw_env`/`settings` fixtures, which point elsewhere.

The stack uses MLflow in "server" mode (tasks log over HTTP; the server stores artifacts under
<home>/mlflow/artifacts), the production path. The DAGs are a copy of <repo>/dags taken at session start;
`stack.add_dag(text, name)` adds a throwaway DAG next to them. Other stacks (another MLflow mode, other
DAGs) come from the `stack_factory` fixture. Every process started is stopped at the end of the session;
when a test failed, the tail of every component log and of each failed task's log is printed and the full
logs are copied to test-artifacts/integration/<stack>/.
"""

from __future__ import annotations

import datetime as dt
import json as jsonlib
import os
import shutil
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import scheduling
import yaml

from devstack import airflow_api, config, private, processes, startup
from devstack import backfill as bf
from devstack.components import airflow_env
from ml.config import BUNDLED_DATASETS, REPO_ROOT

ARTIFACTS = REPO_ROOT / "test-artifacts" / "integration"


@dataclass
class Stack:
    """A running stack and helpers bound to it."""

    name: str
    cfg: config.StackConfig
    env: dict[str, str]  # the environment every Airflow process (and task) gets
    lake: Path
    dags_folder: Path
    start_seconds: dict[str, float] = field(default_factory=dict)

    @property
    def home(self) -> Path:
        return self.cfg.home

    def api(self, method: str, path: str, json: Any = None, **kwargs: Any) -> Any:
        return airflow_api.api(self.cfg, method, path, json, **kwargs)

    def mlflow(
        self, method: str, path: str, json: Any = None, *, auth: bool = True
    ) -> tuple[int, dict, bytes]:
        """A request to the stack's MLflow server (`path` like /api/2.0/mlflow/experiments/create), as its
        admin or anonymously: (status, headers with lower-case names, body), errors included."""
        headers = {"Content-Type": "application/json"} if json is not None else {}
        if auth:
            headers.update(private.mlflow_auth_header(self.cfg))
        data = None if json is None else jsonlib.dumps(json).encode()
        req = urllib.request.Request(self.cfg.mlflow_url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()

    def add_dag(self, source: str, filename: str, dag_id: str | None = None, timeout: float = 90.0) -> None:
        """Write a DAG file into the stack's dags folder and wait until Airflow has parsed it."""
        target = self.dags_folder / filename
        tmp = target.with_suffix(".tmp")
        tmp.write_text(textwrap.dedent(source))
        tmp.replace(target)  # never let the dag-processor read half a file
        if dag_id:
            self.wait_for_dag(dag_id, timeout=timeout)

    def wait_for_dag(self, dag_id: str, timeout: float = 120.0) -> dict[str, Any]:
        return airflow_api.wait_for_dag(self.cfg, dag_id, timeout=timeout)

    def backfill(self, dag_id: str, from_date: Any, to_date: Any, **kwargs: Any) -> dict[str, Any]:
        kwargs.setdefault("progress", False)
        kwargs.setdefault("timeout", 600)
        return bf.backfill(self.cfg, dag_id, from_date, to_date, **kwargs)

    def trigger(
        self, dag_id: str, logical_date: Any, conf: Mapping[str, Any] | None = None, **kwargs: Any
    ) -> str:
        return bf.trigger(self.cfg, dag_id, logical_date, conf, **kwargs)

    def runs(self, dag_id: str, **filters: Any) -> list[dict[str, Any]]:
        return airflow_api.dag_runs(self.cfg, dag_id, **filters)

    def task_instances(self, dag_id: str, run_id: str, **filters: Any) -> list[dict[str, Any]]:
        return airflow_api.task_instances(self.cfg, dag_id, run_id, **filters)

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int | None = None) -> str:
        """The text of a task attempt's log file (the latest attempt by default)."""
        if try_number is None:
            ti = self.api(
                "GET",
                f"/api/v2/dags/{dag_id}/dagRuns/{airflow_api.url_segment(run_id)}/taskInstances/{task_id}",
            )
            try_number = ti.get("try_number") or 1
        path = airflow_api.task_log_path(self.cfg, dag_id, run_id, task_id, try_number)
        return path.read_text(errors="replace") if path.is_file() else f"(no log file at {path})"

    def failed_task_logs(self) -> list[Path]:
        """Log files of every failed task instance of every DAG."""
        try:
            tis = airflow_api.task_instances(self.cfg, "~", "~", state="failed")
        except config.StackError:
            return []
        return [
            airflow_api.task_log_path(
                self.cfg,
                ti["dag_id"],
                ti["dag_run_id"],
                ti["task_id"],
                ti.get("try_number") or 1,
                ti.get("map_index", -1),
            )
            for ti in tis
        ]

    def failure_report(self, lines: int = 30) -> str:
        """Tails of the component logs and of failed tasks' logs, for assertion messages and teardown."""
        parts = []
        for name in config.ALL_COMPONENTS:
            log = processes.component_log(self.cfg, name)
            if log.is_file():
                parts.append(f"----- {name}: {log} (last {lines} lines)\n{processes.tail(log, lines)}")
        for log in self.failed_task_logs():
            parts.append(f"----- failed task: {log} (last {lines} lines)\n{processes.tail(log, lines)}")
        return "\n".join(parts)

    def listening_ports(self) -> set[int]:
        """TCP ports the stack's processes (and their children) listen on."""
        return {sock["port"] for sock in processes.listeners(self.cfg)}


def _write_report(stack: Stack, reporter: Any) -> None:
    out = ARTIFACTS / stack.name
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    for log in stack.cfg.run_dir.glob("*.log"):
        shutil.copy2(log, out / log.name)
    for log in stack.failed_task_logs():
        if log.is_file():
            rel = log.relative_to(stack.cfg.log_dir)
            (out / "tasks" / rel.parent).mkdir(parents=True, exist_ok=True)
            shutil.copy2(log, out / "tasks" / rel)
    text = f"\n===== integration stack {stack.name!r} ({stack.home}); full logs in {out}\n{stack.failure_report()}"
    if reporter is not None:
        reporter.write_line(text)
    else:
        print(text)


def _mlflow_login(cfg: config.StackConfig) -> dict[str, str]:
    """The MLflow client's login for this stack (as its tasks have it); empty without basic auth."""
    if not cfg.mlflow_basic_auth:
        return {}
    return {
        "MLFLOW_TRACKING_USERNAME": config.ADMIN_USER,
        "MLFLOW_TRACKING_PASSWORD": cfg.mlflow_admin_password,
    }


@pytest.fixture(scope="session")
def stack_factory(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Any]:
    """`stack_factory(name="default", mlflow_mode="server", dags=True, extra_env=None)` -> a started Stack.

    Stacks are cached by name and stopped after the last test of the group that started them (tests/
    scheduling.py), or at the end of the session; while none runs, os.environ is as it was before.
    """
    started: dict[str, Stack] = {}
    mp = pytest.MonkeyPatch()  # os.environ while a stack runs; undone when none does (unit tests may follow)

    def clean_env() -> None:
        # the test process reads the same places as the tasks (e.g. ml.status): no developer overrides leak in
        for var in list(os.environ):
            if var.startswith("DRIFTWATCH__") or var in ("DRIFTWATCH_DATASETS", "DRIFTWATCH_DB_URL"):
                mp.delenv(var)
        mp.setenv("MLFLOW_DISABLE_TELEMETRY", "true")

    def make(
        name: str = "default",
        *,
        mlflow_mode: str = "server",
        dags: bool = True,
        extra_env: Mapping[str, str] | None = None,
        components: tuple[str, ...] = config.DEFAULT_COMPONENTS,
    ) -> Stack:
        if name in started:
            return started[name]
        if not started:
            clean_env()
        home = tmp_path_factory.mktemp(f"stack-{name}")
        dags_folder = home / "dags"
        dags_folder.mkdir()
        if dags:
            for src in (REPO_ROOT / "dags").glob("*.py"):
                shutil.copy2(src, dags_folder / src.name)
        lake = home / "lake"
        lake.mkdir()
        env = {"DRIFTWATCH_LAKE": str(lake), "MLFLOW_DISABLE_TELEMETRY": "true", **(extra_env or {})}
        cfg = config.StackConfig.for_tests(
            home, mlflow_mode=mlflow_mode, dags_folder=dags_folder, extra_env=env
        )
        for key, value in {
            **env,
            "DRIFTWATCH_HOME": str(home),
            "MLFLOW_TRACKING_URI": cfg.mlflow_tracking_uri,
            **_mlflow_login(cfg),
        }.items():
            mp.setenv(key, value)
        startup.init(cfg, quiet=True)
        stack = Stack(name=name, cfg=cfg, env=airflow_env(cfg), lake=lake, dags_folder=dags_folder)
        started[name] = stack  # registered first: a failed start still gets its logs reported and stopped
        scheduling.started(name)  # stopped after the last test of the group that started it
        stack.start_seconds = startup.start(cfg, components, quiet=True)
        return stack

    reporter = request.config.pluginmanager.get_plugin("terminalreporter")

    def stop(name: str) -> None:
        """Stop the stack `name` now (tests/scheduling.py: after the last test of its group)."""
        stack = started.pop(name, None)
        if stack is None:
            return
        try:
            if request.session.testsfailed > 0:
                _write_report(stack, reporter)
        finally:
            processes.stop(stack.cfg, quiet=True)
            if not started:  # the environment (and what was read from it) as before the first stack
                mp.undo()
                from ml import registry
                from ml.day import settings_for

                settings_for.cache_clear()
                registry._experiment_id.cache_clear()

    make.stop = stop  # type: ignore[attr-defined]
    scheduling.register_factory(make)
    try:
        yield make
    finally:
        for name in list(started):
            stop(name)
        mp.undo()  # a start that failed before registering its stack


@pytest.fixture(scope="session")
def stack(stack_factory: Any) -> Stack:
    """The session's default stack: repo DAGs, tmp lake (`stack.lake`), MLflow server mode, free ports."""
    t0 = time.monotonic()
    s = stack_factory("default")
    s.start_seconds.setdefault("fixture_total", round(time.monotonic() - t0, 1))
    return s


# ---------------------------------------------------------------------------------------------- the scenario
# The real DAG on real flight data, shared by tests/integration/test_pipeline.py, test_ui.py and tests/e2e
# (a small variant of flights.yaml: original window Jan 1-5, holdout 2 days, no cooldown):
#   Jan 1-4  collect the original window            Jan 5  bootstrap the first champion
#   Jan 6    a real day: no retrain                  Jan 7  injected drift -> retrain
#   Jan 8    a batch missing a column -> quarantine  Jan 9  (left for a manual run by test_pipeline)

DAG_ID = "retraining_pipeline"
DAYS = [dt.date(2013, 1, d) for d in range(1, 10)]
DRIFT_DAY = dt.date(2013, 1, 7)
BAD_DAY = dt.date(2013, 1, 8)
MANUAL_DAY = dt.date(2013, 1, 9)


def _dataset_yaml(folder: Path) -> Path:
    raw = yaml.safe_load((BUNDLED_DATASETS / "flights.yaml").read_text())
    raw["original_window"] = {"start": "2013-01-01", "end": "2013-01-05"}
    raw["holdout_days"] = 2
    raw["wait"] = {"timeout_minutes": 1, "poke_seconds": 5}
    raw["thresholds"].update(
        cooldown_days=0,
        min_new_rows=0,
        min_new_days=0,
        drift_share=0.5,
        quality_drop=0.5,
        min_bootstrap_auc=0.5,
        bootstrap_resamples=300,
    )
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "flights.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _inject_drift(day_frame):
    """Move most features far from January while keeping every value physically possible."""
    f = day_frame.copy()
    f["temp"] = f["temp"] + 50
    f["dewp"] = f["dewp"] + 45
    f["humid"] = 100 - f["humid"]
    f["wind_speed"] = f["wind_speed"] * 3
    f["wind_dir"] = (f["wind_dir"] + 180) % 360
    f["pressure"] = f["pressure"] - 40
    f["visib"] = f["visib"] / 5
    f["precip"] = f["precip"] + 0.5
    f["hour"] = (f["hour"] + 6) % 24
    f["sched_dep_time"] = (f["sched_dep_time"] + 600) % 2400
    f["sched_arr_time"] = (f["sched_arr_time"] + 600) % 2400
    f["distance"] = f["distance"] + 900
    return f


APPROVAL_NAME = "flights_approval"
APPROVAL_DAG_ID = f"retraining_pipeline__{APPROVAL_NAME}"


def write_days(settings: Any, flights_frame: Any, days: Any) -> None:
    """The real flights of `days` as the dataset's lake partitions (a day already there is kept)."""
    for day in days:
        part = settings.partition_dir(day)
        if not part.exists():
            part.mkdir(parents=True)
            frame = flights_frame[flights_frame["date"] == day.isoformat()][settings.columns]
            frame.reset_index(drop=True).to_parquet(part / "part-0.parquet", index=False)


APPROVAL_FIRST = dt.date(2013, 1, 4)  # the approval dataset's first champion (end of its original window)
APPROVAL_TIMEOUT_S = 108.0  # its `approval_timeout_hours` (0.03)


def approval_dataset(yaml_datasets: Any, flights_frame: Any, days: Any) -> Iterator[tuple[Any, Any, Any]]:
    """For a module fixture: (stack, settings, history) of the approval dataset on the yaml-datasets stack,
    the flights of `days` in its lake and its first champion backfilled (by the first module that asks;
    the backfill must not fail)."""
    stack, folder = yaml_datasets
    mp = use_stack_env(stack, folder)
    try:
        from ml.config import load_settings
        from ml.history import History

        s = load_settings(APPROVAL_NAME)
        assert s.promotion.approval == "manual"
        write_days(s, flights_frame, days)
        h = History(s.history_url)
        stack.wait_for_dag(APPROVAL_DAG_ID, timeout=180)
        if h.champion_at(s.name, APPROVAL_FIRST) is None:
            result = stack.backfill(APPROVAL_DAG_ID, days[0], APPROVAL_FIRST, timeout=900)
            assert result["failed"] == 0, (result, stack.failure_report())
        yield stack, s, h
    finally:
        mp.undo()


def _approval_yaml(folder: Path) -> None:
    """flights with `promotion.approval: manual`: the first champion on 2013-01-04 (a backfill: approved
    automatically), then manual runs whose challengers a person approves or rejects through Airflow."""
    raw = yaml.safe_load((BUNDLED_DATASETS / "flights.yaml").read_text())
    raw.update(
        name=APPROVAL_NAME,
        dag_id=APPROVAL_DAG_ID,
        registered_model="flights-approval",
        holdout_days=1,
        original_window={"start": "2013-01-01", "end": "2013-01-04"},
        wait={"timeout_minutes": 1, "poke_seconds": 5},
        retries={"count": 0},
        # the timeout (108 s) leaves the browser test time to answer and lets test_approval.py see it pass
        promotion={"approval": "manual", "approval_timeout_hours": APPROVAL_TIMEOUT_S / 3600},
    )
    raw["thresholds"].update(min_bootstrap_auc=0.5, bootstrap_resamples=200, logloss_tolerance=10)
    raw["evaluation"] = {**(raw.get("evaluation") or {}), "segment_tolerance": 1}
    (folder / f"{APPROVAL_NAME}.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))


@pytest.fixture(scope="session")
def pipeline(stack_factory, flights_frame, tmp_path_factory):
    datasets = tmp_path_factory.mktemp("datasets")
    _dataset_yaml(datasets)
    stack = stack_factory("pipeline", extra_env={"DRIFTWATCH_DATASETS": str(datasets)})
    from ml.config import load_settings

    settings = load_settings("flights")
    assert settings.original_end == dt.date(2013, 1, 5), "the test process must read the test dataset YAML"
    for day in DAYS:
        frame = flights_frame[flights_frame["date"] == day.isoformat()][settings.columns].reset_index(
            drop=True
        )
        if day == DRIFT_DAY:
            frame = _inject_drift(frame)
        if day == BAD_DAY:
            frame = frame.drop(columns=["distance"])
        part = stack.lake / "flights" / f"date={day.isoformat()}"
        part.mkdir(parents=True, exist_ok=True)
        frame.to_parquet(part / "part-0.parquet", index=False)
    stack.wait_for_dag(DAG_ID, timeout=180)
    result = stack.backfill(DAG_ID, DAYS[0], BAD_DAY, timeout=900)
    assert result["failed"] == 0 and result["success"] == len(DAYS) - 1, (result, stack.failure_report())
    return stack, settings


# ---------------------------------------------------------------------------------------------- datasets added by YAML
# One stack for the datasets a user adds with a YAML file alone (tests/integration/test_synthetic_dag.py and
# test_label_delay.py): the synthetic stream and flights with labels arriving two days late.
SYNTHETIC_NAME = "synthetic_short"
LATE_NAME = "flights_late"
LATE_DAG_ID = f"retraining_pipeline__{LATE_NAME}"
LATE_DELAY = 2
LATE_DAYS = [dt.date(2013, 1, d) for d in range(1, 10)]


def _synthetic_yaml(folder: Path, onset: dt.date, days: int) -> None:
    raw = yaml.safe_load((BUNDLED_DATASETS / "synthetic_abrupt.yaml").read_text())
    raw["name"] = SYNTHETIC_NAME
    raw["registered_model"] = "synthetic-short"
    raw["original_window"] = {"start": "2024-01-01", "end": "2024-01-05"}
    raw["holdout_days"] = 2
    raw["synthetic"]["days"] = days
    raw["synthetic"]["drift"]["onset"] = onset.isoformat()
    raw["thresholds"].update(cooldown_days=0, min_new_rows=0, min_new_days=0)
    raw["wait"] = {"timeout_minutes": 1, "poke_seconds": 5}
    (folder / f"{SYNTHETIC_NAME}.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))


def _late_labels_yaml(folder: Path) -> None:
    """flights as the pipeline scenario has it, with the labels of day D readable from D + 2 and decisions
    from the CBPE estimate; quality_drop -0.05 so that any estimate (even slightly above the holdout AUC)
    triggers a retrain."""
    raw = yaml.safe_load((BUNDLED_DATASETS / "flights.yaml").read_text())
    raw.update(
        name=LATE_NAME,
        dag_id=LATE_DAG_ID,
        registered_model="flights-late",
        label_delay_days=LATE_DELAY,
        holdout_days=2,
        original_window={"start": "2013-01-01", "end": "2013-01-05"},
        wait={"timeout_minutes": 1, "poke_seconds": 5},
    )
    raw["thresholds"].update(
        cooldown_days=0,
        min_new_rows=0,
        min_new_days=0,
        quality_drop=-0.05,
        min_bootstrap_auc=0.5,
        bootstrap_resamples=300,
    )
    raw["monitoring"]["estimation"]["use_for_decisions"] = True
    raw["monitoring"]["attribution"]["rows"] = 500
    (folder / f"{LATE_NAME}.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))


# flights served and monitored from its capture (tests/integration/test_serving_loop.py): the real rows come
# from the lake of CAPTURE_SOURCE (a batch dataset whose DAG is never run)
CAPTURE_NAME = "flights_cap"
CAPTURE_DAG_ID = f"retraining_pipeline__{CAPTURE_NAME}"
CAPTURE_SOURCE = "flights_src"


def _capture_yamls(folder: Path) -> None:
    """flights_cap: the bundled flights_live with a 5-day original window, a 2-day holdout, quick capture
    intervals and guardrails that let a forced challenger through; flights_src: the rows it is sent."""
    raw = yaml.safe_load((BUNDLED_DATASETS / "flights.yaml").read_text())
    raw.update(
        name=CAPTURE_SOURCE, dag_id=f"retraining_pipeline__{CAPTURE_SOURCE}", registered_model="flights-src"
    )
    (folder / f"{CAPTURE_SOURCE}.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    raw = yaml.safe_load((BUNDLED_DATASETS / "flights_live.yaml").read_text())
    raw.update(
        name=CAPTURE_NAME,
        dag_id=CAPTURE_DAG_ID,
        registered_model="flights-cap",
        holdout_days=2,
        original_window={"start": "2013-01-01", "end": "2013-01-05"},
        wait={"timeout_minutes": 3, "poke_seconds": 5},
        serving={
            "traffic_from": CAPTURE_SOURCE,
            "poll_seconds": 0.5,
            "flush_seconds": 0.5,
            "settle_seconds": 3,
        },
    )
    raw["thresholds"].update(
        cooldown_days=0,
        min_new_rows=0,
        min_new_days=0,
        min_bootstrap_auc=0.5,
        bootstrap_resamples=300,
        logloss_tolerance=1.0,
    )
    raw["evaluation"]["segment_tolerance"] = 1.0
    raw["monitoring"]["attribution"]["rows"] = 500
    (folder / f"{CAPTURE_NAME}.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))


# the bundled regression and multiclass flights datasets, shortened (tests/integration/test_task_dags.py):
# an 8-day original window (6 training days: fewer lose to a constant for the regression), and a challenger every day after it (the drift check's calibration off so that
# `quality_drop: -10` reaches `decide` unfiltered) to put each task's promotion gate through the DAG
TASK_NAMES = ("flights_delay_minutes", "flights_lateness")
TASK_DAYS = [dt.date(2013, 1, d) for d in range(1, 12)]


def _task_yamls(folder: Path) -> None:
    for name in TASK_NAMES:
        raw = yaml.safe_load((BUNDLED_DATASETS / f"{name}.yaml").read_text())
        raw.update(
            holdout_days=2,
            original_window={"start": "2013-01-01", "end": "2013-01-08"},
            wait={"timeout_minutes": 1, "poke_seconds": 5},
            thresholds={
                "cooldown_days": 0,
                "min_new_days": 0,
                "quality_drop": -10,
                "bootstrap_resamples": 200,
            },
            drift={"calibrate": False},
        )
        (folder / f"{name}.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))


# a dataset whose batches never arrive (tests/integration/test_deadline.py): its runs wait, and the DAG's
# Deadline Alert fires at once (a 2013 logical date is long past its deadline)
NOBATCH_NAME = "flights_nobatch"
NOBATCH_DAG_ID = f"retraining_pipeline__{NOBATCH_NAME}"


def _nobatch_yaml(folder: Path) -> None:
    raw = yaml.safe_load((BUNDLED_DATASETS / "flights.yaml").read_text())
    raw.update(
        name=NOBATCH_NAME,
        dag_id=NOBATCH_DAG_ID,
        registered_model="flights-nobatch",
        wait={"timeout_minutes": 1.5, "poke_seconds": 5, "late_after_hours": 2},
        retries={"count": 0},
    )
    (folder / f"{NOBATCH_NAME}.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))


@pytest.fixture(scope="session")
def yaml_datasets(stack_factory, tmp_path_factory):
    """A stack whose datasets folder holds only YAML files written by the tests (no flights DAG)."""
    folder = tmp_path_factory.mktemp("yaml-datasets")
    _synthetic_yaml(folder, onset=dt.date(2024, 1, 8), days=9)
    _late_labels_yaml(folder)
    _capture_yamls(folder)
    _task_yamls(folder)
    _nobatch_yaml(folder)
    _approval_yaml(folder)
    stack = stack_factory("yaml-datasets", extra_env={"DRIFTWATCH_DATASETS": str(folder)})
    return stack, folder


def use_stack_env(stack: Stack, datasets: Path | None = None) -> pytest.MonkeyPatch:
    """Point this process at `stack` (home, lake, MLflow, datasets folder), as the stack's tasks are; the
    caller undoes it. Needed when several stacks run in one session: the last one started owns os.environ."""
    mp = pytest.MonkeyPatch()
    mp.setenv("DRIFTWATCH_HOME", str(stack.home))
    mp.setenv("DRIFTWATCH_LAKE", str(stack.lake))
    mp.setenv("MLFLOW_TRACKING_URI", stack.cfg.mlflow_tracking_uri)
    for key, value in _mlflow_login(stack.cfg).items():
        mp.setenv(key, value)
    if datasets is not None:
        mp.setenv("DRIFTWATCH_DATASETS", str(datasets))
    mp.delenv("DRIFTWATCH_DB_URL", raising=False)
    return mp


@pytest.fixture(autouse=True)
def _pipeline_env(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test on the `pipeline` stack sees that stack's home, lake, datasets and MLflow login, whichever
    stack was started last (each start points os.environ at its own: MLflow refuses another stack's login)."""
    if "pipeline" not in request.fixturenames:
        yield
        return
    stack, _ = request.getfixturevalue("pipeline")
    datasets = stack.env.get("DRIFTWATCH_DATASETS")
    from ml.day import settings_for

    mp = use_stack_env(stack, Path(datasets) if datasets else None)
    settings_for.cache_clear()
    try:
        yield
    finally:
        mp.undo()
        settings_for.cache_clear()
