"""The DAG file: it parses, wires the pipeline as documented, and does no heavy work at parse time.

Airflow is imported only in fresh subprocesses with AIRFLOW_HOME in tmp, so this test process keeps no
Airflow configuration or logging setup, and no service (scheduler, API server, metadata DB) is needed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ml.config import REPO_ROOT

DAGS = REPO_ROOT / "dags"
DAG_ID = "retraining_pipeline"
MARKER = "DAG-SUMMARY:"
HEAVY = ("pandas", "sklearn", "mlflow", "evidently", "great_expectations")


def _env(tmp: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AIRFLOW", "DRIFTWATCH__")) and k != "DRIFTWATCH_DATASETS"
    }
    env.update(
        AIRFLOW_HOME=str(tmp / "airflow"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        DRIFTWATCH_HOME=str(tmp / "driftwatch"),
    )
    return env


def _run(code: str, tmp: Path, **extra_env: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=REPO_ROOT,
        env={**_env(tmp), **extra_env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith(MARKER)]
    assert lines, f"no summary printed; stdout:\n{proc.stdout[-2000:]}\nstderr:\n{proc.stderr[-2000:]}"
    return lines[-1][len(MARKER) :]


@pytest.fixture(scope="module")
def bag(tmp_path_factory) -> dict:
    """What a DagBag of the dags/ folder holds, summarised as JSON by a subprocess."""
    tmp = tmp_path_factory.mktemp("dagbag")
    code = f"""
        import json
        from airflow.dag_processing.dagbag import DagBag

        bag = DagBag(dag_folder={str(DAGS)!r})
        out = {{"import_errors": {{str(k): str(v) for k, v in bag.import_errors.items()}}, "dags": {{}}}}
        for dag_id, dag in bag.dags.items():
            out["dags"][dag_id] = {{
                "schedule": str(dag.schedule),
                "max_active_runs": dag.max_active_runs,
                "catchup": dag.catchup,
                "params": {{k: dag.params[k] for k in dag.params.keys()}},
                "tasks": {{t.task_id: {{"downstream": sorted(t.downstream_task_ids),
                                        "priority_weight": t.priority_weight,
                                        "trigger_rule": str(getattr(t.trigger_rule, "value", t.trigger_rule))}}
                          for t in dag.tasks}},
            }}
        print({MARKER!r} + json.dumps(out, default=str))
    """
    return json.loads(_run(code, tmp))


@pytest.fixture
def dag(bag) -> dict:
    assert DAG_ID in bag["dags"], f"DAGs found: {sorted(bag['dags'])}"
    return bag["dags"][DAG_ID]


def test_dag_folder_imports_without_errors(bag):
    assert bag["import_errors"] == {}


def test_pipeline_has_exactly_the_documented_tasks(dag):
    assert set(dag["tasks"]) == {
        "wait_for_earlier_days",
        "wait_for_batch",
        "validate_batch",
        "quarantine_batch",
        "score_batch",
        "monitor_model",
        "detect_drift",
        "watch_champion",
        "decide",
        "skip_retrain",
        "train_challenger",
        "evaluate_challenger",
        "promote_challenger",
        "reject_challenger",
        "record",
    }


@pytest.mark.parametrize(
    "task_id, downstream",
    [
        ("wait_for_earlier_days", {"validate_batch"}),
        ("wait_for_batch", {"validate_batch"}),
        ("validate_batch", {"quarantine_batch", "score_batch"}),
        ("score_batch", {"monitor_model", "detect_drift", "watch_champion"}),  # side by side
        ("monitor_model", {"decide"}),
        ("detect_drift", {"decide"}),
        ("watch_champion", {"decide"}),
        ("decide", {"train_challenger", "skip_retrain"}),
        ("evaluate_challenger", {"promote_challenger", "reject_challenger"}),
        ("quarantine_batch", {"record"}),
        ("skip_retrain", {"record"}),
        ("promote_challenger", {"record"}),
        ("reject_challenger", {"record"}),
        ("record", set()),
    ],
    ids=[
        "earlier",
        "wait",
        "validate",
        "score",
        "monitor",
        "detect",
        "watch",
        "decide",
        "evaluate",
        "quarantine",
        "skip",
        "promote",
        "reject",
        "record",
    ],
)
def test_branches_and_wiring(dag, task_id, downstream):
    assert set(dag["tasks"][task_id]["downstream"]) == downstream


def test_of_the_three_side_by_side_the_longest_gets_a_slot_first(dag):
    weight = {
        t: dag["tasks"][t]["priority_weight"] for t in ("monitor_model", "detect_drift", "watch_champion")
    }
    assert weight["monitor_model"] > weight["detect_drift"] > weight["watch_champion"]


def test_train_feeds_evaluation(dag):
    assert "evaluate_challenger" in dag["tasks"]["train_challenger"]["downstream"]


def test_record_runs_whatever_happened(dag):
    assert dag["tasks"]["record"]["trigger_rule"] == "all_done"


def test_one_run_at_a_time_daily(dag):
    assert dag["max_active_runs"] == 1
    assert dag["schedule"] == "@daily"


def test_manual_run_params(dag):
    params = dag["params"]

    assert {"force_retrain", "dry_run"} <= set(params)
    assert params["force_retrain"] is False and params["dry_run"] is False
    assert params["dataset"] == "flights"


def test_parsing_the_dag_file_imports_nothing_heavy_and_is_fast(tmp_path):
    code = f"""
        import json, sys, time
        sys.path.insert(0, "dags")
        import airflow.sdk, pendulum  # Airflow's own import cost is not the DAG file's

        started = time.perf_counter()
        import retraining_pipeline
        seconds = time.perf_counter() - started
        heavy = [m for m in {HEAVY!r} if m in sys.modules]
        print({MARKER!r} + json.dumps({{"heavy": heavy, "seconds": seconds}}))
    """
    out = json.loads(_run(code, tmp_path))

    assert out["heavy"] == []
    assert out["seconds"] < 2.0, f"importing the DAG file took {out['seconds']:.2f} s"


def test_a_task_process_builds_only_the_dag_of_its_task(tmp_path):
    # Airflow's task runner names the DAG in the parsing context; the scheduler and DAG processor do not
    code = f"""
        import json, os, sys
        sys.path.insert(0, "dags")
        os.environ["_AIRFLOW_PARSING_CONTEXT_DAG_ID"] = {DAG_ID!r}
        import retraining_pipeline
        built = sorted(k for k, v in vars(retraining_pipeline).items() if type(v).__name__ == "DAG")
        print({MARKER!r} + json.dumps(built))
    """
    assert json.loads(_run(code, tmp_path)) == [DAG_ID]


def test_the_scheduler_builds_every_datasets_dag(bag):
    assert len(bag["dags"]) >= 2 and DAG_ID in bag["dags"]


def test_a_late_batch_deadline_only_when_the_yaml_asks_for_one(tmp_path):
    """wait.late_after_hours becomes an Airflow Deadline Alert: logical date + 1 day + those hours, calling
    ml.airflow_ext.late_batch_alert in the executor (its behaviour: tests/unit/test_alerts.py)."""
    code = f"""
        import json
        from airflow.dag_processing.dagbag import DagBag

        dag = DagBag(dag_folder={str(DAGS)!r}).dags[{DAG_ID!r}]
        out = [{{"reference": type(d.reference).__name__, "interval_s": d.interval.total_seconds(),
                 "callback": d.callback.path, "kwargs": d.callback.kwargs}} for d in dag.deadline or []]
        print({MARKER!r} + json.dumps(out))
    """
    assert json.loads(_run(code, tmp_path / "off")) == []
    (deadline,) = json.loads(_run(code, tmp_path / "on", DRIFTWATCH__WAIT__LATE_AFTER_HOURS="6"))
    assert deadline == {
        "reference": "DagRunLogicalDateDeadline",
        "interval_s": (24 + 6) * 3600.0,
        "callback": "ml.airflow_ext.late_batch_alert",
        "kwargs": {"dataset": "flights"},
    }
