"""Backfills reproduce decisions (stack_fixtures.pipeline: the real DAG, Jan 1-8 of the scenario).

1. Reprocessing the same range with `airflow backfill create --reprocess-behavior completed` leaves the
   history rows, the alias audit log, the registry's versions and the champion alias exactly as they were.
2. The same days run one by one, in order, in a fresh home without Airflow (`ml.runner.run_day_or_raise`, the DAG's
   steps in the DAG's order) reach the same decisions, the same versions and the same alias chain.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from stack_fixtures import BAD_DAY, DAG_ID, DAYS

from ml.config import REPO_ROOT

pytestmark = pytest.mark.integration

RANGE = [d for d in DAYS if d <= BAD_DAY]
DECISION_KEYS = (
    "status",
    "rows",
    "champion_version",
    "drift_share",
    "dataset_drift",
    "drifted_columns",
    "decision",
    "candidate_version",
    "promotion",
)
EXACT_KEYS = (*DECISION_KEYS, "reason", "promotion_reason", "quality", "evaluation")


def _days(settings, keys) -> dict[str, dict]:
    from ml.history import History

    rows = History(settings.history_url).days(settings.name)
    out = {r["day"]: {k: r.get(k) for k in keys} for r in rows if r["day"] <= BAD_DAY.isoformat()}
    bad = out.get(BAD_DAY.isoformat())
    if bad and bad.get("reason"):
        # a re-run validates the quarantined copy of the bad file: the same failures, at another location
        file = "part-0.parquet"
        for where in (
            settings.quarantine_dir(BAD_DAY) / file,
            settings.partition_dir(BAD_DAY) / file,
            (settings.partition_dir(BAD_DAY) / file).relative_to(settings.paths.lake),
        ):
            bad["reason"] = bad["reason"].replace(str(where), "<file>")
    return out


def _events(settings) -> list[tuple]:
    from ml.history import History

    return [
        (e["alias"], e["logical_date"], e["before_version"], e["after_version"], e["reason"])
        for e in History(settings.history_url).alias_events(settings.name)
        if e["logical_date"] <= BAD_DAY.isoformat()
    ]


def _registry(settings) -> tuple[list[int], int]:
    from mlflow import MlflowClient

    c = MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)
    versions = sorted(int(v.version) for v in c.search_model_versions(f"name='{settings.registered_model}'"))
    return versions, int(c.get_model_version_by_alias(settings.registered_model, "champion").version)


def _alerts(settings) -> list[dict]:
    path = settings.paths.alerts
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def test_reprocessing_a_backfilled_range_changes_nothing(pipeline):
    stack, settings = pipeline
    rows, events, registry = _days(settings, EXACT_KEYS), _events(settings), _registry(settings)
    assert len(rows) == len(RANGE) and events, "the scenario must have run first"
    sent = _alerts(settings)
    assert {a["kind"] for a in sent} >= {"quarantine", "promotion"}, sent

    result = stack.backfill(DAG_ID, RANGE[0], RANGE[-1], reprocess="completed", timeout=900)

    assert result["failed"] == 0 and result["success"] == len(RANGE), (result, stack.failure_report())
    assert _days(settings, EXACT_KEYS) == rows
    assert _events(settings) == events
    assert _registry(settings) == registry  # the retrain days reused their versions: nothing new registered
    assert _alerts(settings) == sent, "re-running days sent their alerts again"


REPLAY = """
import datetime as dt, json, sys
from ml.runner import run_day_or_raise
for day in json.loads(sys.argv[1]):
    run_day_or_raise("flights", dt.date.fromisoformat(day), run_id=f"replay__{day}")
"""


def test_day_by_day_runs_without_airflow_reach_the_same_decisions(pipeline, tmp_path):
    stack, settings = pipeline
    home, lake = tmp_path / "replay", tmp_path / "replay" / "lake"
    for day in RANGE:  # the same input files the DAG saw (the bad batch from its quarantine)
        source = settings.quarantine_dir(day) if day == BAD_DAY else stack.lake / "flights" / f"date={day}"
        target = lake / "flights" / f"date={day}"
        target.mkdir(parents=True)
        shutil.copy2(source / "part-0.parquet", target / "part-0.parquet")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "MLFLOW_TRACKING"))}
    env.update(
        DRIFTWATCH_HOME=str(home),
        DRIFTWATCH_LAKE=str(lake),
        PYTHONPATH=str(REPO_ROOT),
        DRIFTWATCH_DATASETS=os.environ["DRIFTWATCH_DATASETS"],
        MLFLOW_DISABLE_TELEMETRY="true",
    )
    subprocess.run(
        [sys.executable, "-c", REPLAY, json.dumps([d.isoformat() for d in RANGE])],
        env=env,
        check=True,
        timeout=600,
        capture_output=True,
    )
    replay = settings.with_overrides(
        history_url=f"sqlite:///{home / 'driftwatch.db'}",
        tracking_uri=f"sqlite:///{home / 'mlflow' / 'mlflow.db'}",
    )
    assert _days(replay, DECISION_KEYS) == _days(settings, DECISION_KEYS)
    assert [e[:4] for e in _events(replay)] == [e[:4] for e in _events(settings)]
