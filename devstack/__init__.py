"""driftwatch's local stack: Airflow (scheduler, dag-processor, API server) and MLflow as local processes.

An operations tool beside the ML library, never imported by it (`ml` runs without it). Everything lives
under DRIFTWATCH_HOME (default <repo>/var):

    airflow/   AIRFLOW_HOME: airflow.db (SQLite), logs/, the admin password file, generated secrets
    mlflow/    mlflow.db (SQLite tracking + registry) and artifacts/
    run/       one pid file and one log file per component (scheduler.pid, scheduler.log, ...)
    lake/      daily partitions (unless DRIFTWATCH_LAKE points elsewhere)
    reports/   drift reports written by the tasks

Modules, one concern each (no module imports the heavier ones below it at import time):

    config        StackConfig: the environment knobs, ports, paths and URLs (`from_env`, `for_tests`)
    private       secrets generated once per home (0600) and the home's file modes (0600 / 0700)
    components    each component's command line and environment (LocalExecutor or the production shape)
    launch        entry points run inside Airflow's processes: loopback log servers, preloaded workers,
                  the BEGIN IMMEDIATE backfill CLI, the hostname callable
    processes     the supervisor: pid files, spawn detached, stop whole process trees, listeners, memory
    startup       Airflow DB migration, `start`, waiting until every component is healthy
    airflow_api   Airflow's REST API through the official apache-airflow-client
    backfill      `airflow backfill create` and following its runs (progress bar, summary), `trigger`
    cli           `python -m devstack up|down|demo|backfill|serve` (console script `driftwatch-stack`)

Nothing is open that need not be: every listener is on 127.0.0.1, MLflow runs its basic-auth app, and
every process of the stack runs with umask 077 (see config, private and launch).
"""
