"""driftwatch in the Airflow UI.

- "Drift report", "Model monitor" and "Validation" tabs on every DAG run (the day's Evidently report, bias /
  attribution drift and estimated performance, validation result);
- "Model history" in the navigation and as a tab on each driftwatch DAG (timeline plot and events);
- "MLflow run" / "MLflow model version" buttons on train_challenger, evaluate_challenger, promote_challenger.

The pages are served by `ml.ui.app` under /driftwatch; every route checks the Airflow user (token or UI
session) itself, since plugin apps are mounted without authentication.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from ml.airflow_ext import LINKS
from ml.ui import URL_PREFIX, app


class DriftwatchPlugin(AirflowPlugin):
    name = "driftwatch"
    fastapi_apps = [{"app": app, "url_prefix": URL_PREFIX, "name": "driftwatch reports"}]
    external_views = [
        {
            "name": "Drift report",
            "href": f"{URL_PREFIX}/dags/{{DAG_ID}}/runs/{{RUN_ID}}/drift",
            "destination": "dag_run",
            "url_route": "driftwatch_drift",
        },
        {
            "name": "Model monitor",
            "href": f"{URL_PREFIX}/dags/{{DAG_ID}}/runs/{{RUN_ID}}/monitor",
            "destination": "dag_run",
            "url_route": "driftwatch_monitor",
        },
        {
            "name": "Validation",
            "href": f"{URL_PREFIX}/dags/{{DAG_ID}}/runs/{{RUN_ID}}/validation",
            "destination": "dag_run",
            "url_route": "driftwatch_validation",
        },
        {
            "name": "Model history",
            "href": f"{URL_PREFIX}/dags/{{DAG_ID}}/history",
            "destination": "dag",
            "url_route": "driftwatch_dag_history",
        },
        {
            "name": "Model history",
            "href": f"{URL_PREFIX}/history",
            "destination": "nav",
            "url_route": "driftwatch_history",
            "nav_top_level": True,
        },
    ]
    operator_extra_links = list(LINKS)
