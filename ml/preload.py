"""Imported once by the scheduler's forkserver (see devstack.config.PRELOAD_MODULES): every task process
is forked with these libraries already imported and their lazy parts already loaded.

Evidently, plotly, MLflow, skops and GX import much of themselves on first use (plotly alone ~230 modules
when the first report renders; MLflow's SQL stores bring alembic and mako; skops brings most of
scikit-learn). Measured in a forked process on a monitored day: the drift step 2.5 s -> 1.6 s, scoring
1.2 s -> 0.25 s.

Only third-party code is touched here, so edits to the project's own modules still apply to the next task
without restarting the scheduler. Nothing here opens a connection, a file or a thread that a fork would
copy: a tiny in-memory Evidently report and a skops round trip only, and no OpenMP code runs (see
_warm_skops).
"""

from __future__ import annotations

import importlib
import logging

from ml import warmup

log = logging.getLogger(__name__)

MODULES = (
    "pandas",
    "pyarrow.parquet",
    "pyarrow.dataset",
    "scipy.stats",
    "sklearn.ensemble",
    "sklearn.metrics",
    "sklearn.pipeline",
    "sklearn.compose",
    "sklearn.preprocessing",
    "skops.io",
    "mlflow",
    "mlflow.sklearn",
    "mlflow.models",
    "mlflow.tracking",
    "mlflow.artifacts",
    "mlflow.store.tracking.sqlalchemy_store",
    "mlflow.store.model_registry.sqlalchemy_store",
    "mlflow.store.tracking.rest_store",
    "alembic.runtime.migration",
    "alembic.script",
    "mako.template",
    "plotly.graph_objects",
    "plotly.subplots",
    "plotly.io",
    "plotly.offline",
    "evidently",
    "evidently.presets",
    "evidently.metrics",
    "great_expectations",
    "great_expectations.core",
    "great_expectations.expectations",
    "matplotlib",
    # Airflow loads the plugins in every task process, and the driftwatch plugin's pages need the API
    # server's security dependencies: 0.37 s of imports per task otherwise
    "airflow.sdk.execution_time.task_runner",
    "airflow.api_fastapi.core_api.security",
    # what every task process imports to parse the DAG file and run a task (~20 ms a task otherwise)
    "airflow.dag_processing.dagbag",
    "airflow.dag_processing.bundles.manager",
    "airflow.providers.standard.decorators.python",
    "airflow.providers.standard.decorators.branch_python",
    "airflow.providers.standard.decorators.sensor",
    "airflow.providers.standard.operators.empty",
)


def _warm_skops() -> None:
    # never fit or predict with an OpenMP estimator (HistGradientBoosting) here: GNU OpenMP's thread pool
    # does not survive fork, and every forked task would hang on its first prediction
    import numpy as np
    import skops.io as sio
    from sklearn.preprocessing import StandardScaler

    model = StandardScaler().fit(np.arange(20.0).reshape(-1, 1))
    sio.loads(sio.dumps(model), trusted=sio.get_untrusted_types(data=sio.dumps(model)))


def warm() -> list[str]:
    """Import MODULES and exercise the lazy paths; returns what failed (never raises)."""
    failed = []
    for name in MODULES:
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - a missing optional module only costs speed
            failed.append(f"{name}: {exc}")
    for warmer in (warmup.evidently_report, _warm_skops):
        try:
            warmer()
        except Exception as exc:  # noqa: BLE001 - same: a warm-up that fails is skipped
            failed.append(f"{warmer.__name__}: {type(exc).__name__}: {exc}")
    if failed:
        log.warning("driftwatch preload: skipped %s", failed)
    return failed


FAILED = warm()
