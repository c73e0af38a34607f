"""The production configuration of docker-compose.yaml, proven as local processes on loopback (no Docker).

    Airflow metadata DB, Celery result backend, driftwatch history   PostgreSQL (throwaway databases + role)
    executor                                                         CeleryExecutor, Redis broker
    workers                                                          two `airflow celery worker` processes
    MLflow tracking server                                           PostgreSQL backend store, artifacts
                                                                     served by the server, basic auth on

Two datasets (flights and a copy, flights_b: two DAGs) run the same scenario at the same time, so the two
workers share the work the way more workers do in production:
    Jan 1-4  collect the original window      Jan 5  bootstrap the first champion
    Jan 6    a real day, monitored            Jan 7  injected drift -> retrain -> promote or reject

Isolation from anything else on the machine: its own PostgreSQL role and databases (dropped at the end),
its own Redis DB number, key prefix and Celery queue (keys deleted at the end), free ports. Skips only when
PostgreSQL (127.0.0.1:5432) or Redis (127.0.0.1:6379) cannot be reached; .ci/run starts both.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import secrets
import shutil
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from devstack import airflow_api, config, private, processes, startup
from devstack import backfill as bf
from ml.config import BUNDLED_DATASETS, REPO_ROOT

pytestmark = [pytest.mark.integration, pytest.mark.postgres, pytest.mark.timeout(720)]

PG_HOST, PG_PORT, PG_ADMIN = "127.0.0.1", 5432, "postgres"
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
DAYS = [dt.date(2013, 1, d) for d in range(1, 8)]
DRIFT_DAY = dt.date(2013, 1, 7)
DATASETS = {"flights": "retraining_pipeline", "flights_b": "retraining_pipeline__flights_b"}
ARTIFACTS = REPO_ROOT / "test-artifacts" / "integration" / "production"


def _admin_connect(dbname: str = "postgres"):
    import psycopg2

    conn = psycopg2.connect(host=PG_HOST, port=PG_PORT, user=PG_ADMIN, dbname=dbname, connect_timeout=5)
    conn.autocommit = True  # CREATE/DROP DATABASE refuse to run in a transaction
    return conn


@pytest.fixture(scope="module")
def services():
    """Skip (with the reason) when PostgreSQL or Redis cannot be reached; everything after that must work."""
    import psycopg2
    import redis

    try:
        _admin_connect().close()
    except psycopg2.OperationalError as exc:
        pytest.skip(
            f"PostgreSQL is not reachable on {PG_HOST}:{PG_PORT} as {PG_ADMIN!r} ({' '.join(str(exc).split())}); "
            ".ci/run starts it (pg_ctlcluster)"
        )
    try:
        redis.Redis(host=REDIS_HOST, port=REDIS_PORT, socket_connect_timeout=5).ping()
    except redis.RedisError as exc:
        pytest.skip(f"Redis is not reachable on {REDIS_HOST}:{REDIS_PORT} ({exc}); .ci/run starts it")


def _dataset_yaml(folder: Path, name: str, dag_id: str) -> None:
    """flights.yaml with a short original window (as in test_pipeline.py), under another name if asked."""
    raw = yaml.safe_load((BUNDLED_DATASETS / "flights.yaml").read_text())
    raw.update(name=name, dag_id=dag_id, registered_model=f"{name}-delay", holdout_days=2)
    raw["original_window"] = {"start": "2013-01-01", "end": "2013-01-05"}
    raw["wait"] = {"timeout_minutes": 1, "poke_seconds": 5}
    raw["thresholds"].update(
        cooldown_days=0, min_new_rows=0, min_new_days=0, drift_share=0.5, quality_drop=0.5, min_bootstrap_auc=0.5,
        bootstrap_resamples=300,
    )  # fmt: skip
    (folder / f"{name}.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))


def _inject_drift(frame):
    f = frame.copy()
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


def _free_redis_db(client_factory) -> int:
    """An empty Redis DB number (15 downwards): other users of the server keep theirs."""
    for number in range(15, 0, -1):
        if client_factory(number).dbsize() == 0:
            return number
    raise AssertionError(f"Redis {REDIS_HOST}:{REDIS_PORT}: no empty database among 1..15")


class Production:
    def __init__(self, cfg: config.StackConfig, secret_values: dict[str, str], db_urls: dict[str, str]):
        self.cfg = cfg
        self.secret_values = secret_values
        self.db_urls = db_urls
        self.results: dict[str, dict] = {}
        self.seconds: dict[str, float] = {}

    def history(self):
        from ml.history import History

        return History(self.db_urls["history"])

    def mlflow_client(self):
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.cfg.mlflow_url, registry_uri=self.cfg.mlflow_url)

    def worker_logs(self) -> dict[str, str]:
        return {
            name: processes.component_log(self.cfg, name).read_text(errors="replace")
            for name in self.cfg.celery_worker_names
        }

    def report(self) -> str:
        parts = []
        for name in (*config.DEFAULT_COMPONENTS, *self.cfg.celery_worker_names):
            parts.append(
                f"----- {name} (last 25 lines)\n{processes.tail(processes.component_log(self.cfg, name), 25)}"
            )
        for dag_id in DATASETS.values():
            try:
                runs = airflow_api.dag_runs(self.cfg, dag_id)
            except config.StackError:
                continue
            for run in runs:
                for failed in airflow_api.failed_tasks(self.cfg, dag_id, run["dag_run_id"]):
                    parts.append(f"----- failed {failed['log']}\n{processes.tail(Path(failed['log']), 25)}")
        return "\n".join(parts)


@pytest.fixture(scope="module")
def production(services, flights_frame, tmp_path_factory, request):
    import redis

    from ml.config import load_settings

    token = secrets.token_hex(4)
    role = f"dw_test_{token}"
    db_password = secrets.token_urlsafe(18)
    databases = {kind: f"dw_test_{token}_{kind}" for kind in ("airflow", "mlflow", "history")}
    # a real password in every URL, as in docker-compose.yaml: it must never reach a log (the local server
    # may trust loopback connections, which does not matter here)
    db_urls = {
        kind: f"postgresql+psycopg2://{role}:{db_password}@{PG_HOST}:{PG_PORT}/{name}"
        for kind, name in databases.items()
    }
    redis_db = _free_redis_db(lambda n: redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=n))
    key_prefix = f"dw-test-{token}:"
    broker = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=redis_db)

    home = tmp_path_factory.mktemp("production")
    datasets = home / "datasets"
    datasets.mkdir()
    for name, dag_id in DATASETS.items():
        _dataset_yaml(datasets, name, dag_id)
    dags = home / "dags"
    shutil.copytree(REPO_ROOT / "dags", dags, ignore=shutil.ignore_patterns("__pycache__"))
    lake = home / "lake"
    env = {
        "DRIFTWATCH_LAKE": str(lake),
        "DRIFTWATCH_DATASETS": str(datasets),
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__GLOBAL_KEYPREFIX": key_prefix,
    }
    cfg = config.StackConfig.for_tests(
        home,
        dags_folder=dags,
        extra_env=env,
        executor="CeleryExecutor",
        celery_workers=2,
        celery_queue=f"dw-test-{token}",
        celery_broker_url=f"redis://{REDIS_HOST}:{REDIS_PORT}/{redis_db}",
        airflow_db_url=db_urls["airflow"],
        history_db_url=db_urls["history"],
        mlflow_mode="server",
        mlflow_backend_store_uri=db_urls["mlflow"],
        mlflow_basic_auth=True,
    )

    mp = pytest.MonkeyPatch()
    for var in list(os.environ):
        if var.startswith("DRIFTWATCH__"):
            mp.delenv(var)
    for key, value in {
        **env,
        "DRIFTWATCH_HOME": str(home),
        "DRIFTWATCH_DB_URL": db_urls["history"],
        "MLFLOW_TRACKING_URI": cfg.mlflow_tracking_uri,
        "MLFLOW_TRACKING_USERNAME": config.ADMIN_USER,
        "MLFLOW_TRACKING_PASSWORD": cfg.mlflow_admin_password,
    }.items():
        mp.setenv(key, value)

    admin = _admin_connect()
    try:
        with admin.cursor() as cur:
            cur.execute(f"CREATE ROLE {role} LOGIN PASSWORD %s", (db_password,))
            for name in databases.values():
                cur.execute(f"CREATE DATABASE {name} OWNER {role}")
        columns = load_settings(BUNDLED_DATASETS / "flights.yaml", environ={}).columns
        for name in DATASETS:
            for day in DAYS:
                frame = flights_frame[flights_frame["date"] == day.isoformat()][columns].reset_index(
                    drop=True
                )
                if day == DRIFT_DAY:
                    frame = _inject_drift(frame)
                part = lake / name / f"date={day.isoformat()}"
                part.mkdir(parents=True)
                frame.to_parquet(part / "part-0.parquet", index=False)

        keys = private.ensure_secrets(cfg)
        prod = Production(
            cfg,
            secret_values={
                "fernet key": keys["fernet_key"],
                "JWT secret": keys["jwt_secret"],
                "API secret key": keys["api_secret_key"],
                "Airflow admin password": cfg.admin_password,
                "MLflow admin password": cfg.mlflow_admin_password,
                "MLflow secret key": private.ensure_mlflow_secrets(cfg)["mlflow_secret_key"],
                "PostgreSQL password": db_password,
            },
            db_urls=db_urls,
        )
        t0 = time.monotonic()
        startup.start(cfg, (*config.DEFAULT_COMPONENTS, *cfg.celery_worker_names), quiet=True)
        prod.seconds["start"] = round(time.monotonic() - t0, 1)
        for dag_id in DATASETS.values():
            airflow_api.wait_for_dag(cfg, dag_id, timeout=180)
        t0 = time.monotonic()
        # both datasets at once: their tasks are spread over the two workers
        with ThreadPoolExecutor(max_workers=len(DATASETS)) as pool:
            futures = {
                dag_id: pool.submit(bf.backfill, cfg, dag_id, DAYS[0], DAYS[-1], progress=False, timeout=480)
                for dag_id in DATASETS.values()
            }
            prod.results = {dag_id: f.result() for dag_id, f in futures.items()}
        prod.seconds["backfill"] = round(time.monotonic() - t0, 1)
        print(
            f"\nproduction stack: start {prod.seconds['start']} s, both backfills {prod.seconds['backfill']} s"
        )
        yield prod
    finally:
        try:
            if request.session.testsfailed:
                _save_logs(cfg, prod.report() if "prod" in locals() else "")
        finally:
            processes.stop(cfg, quiet=True)
            mp.undo()
            from ml import history

            # this process's pooled connections to the history database (DROP ... FORCE ends them anyway)
            history.engine.cache_clear()
            with admin.cursor() as cur:
                for name in databases.values():
                    cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
                cur.execute(f"DROP ROLE IF EXISTS {role}")
            admin.close()
            for key in broker.scan_iter(match=f"{key_prefix}*", count=500):
                broker.delete(key)


def _save_logs(cfg: config.StackConfig, report: str) -> None:
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for log in cfg.run_dir.glob("*.log"):
        shutil.copy2(log, ARTIFACTS / log.name)
    if cfg.log_dir.is_dir():
        shutil.copytree(cfg.log_dir, ARTIFACTS / "tasks", dirs_exist_ok=True)
    (ARTIFACTS / "report.txt").write_text(report)
    print(f"\n===== production stack {cfg.home}; logs in {ARTIFACTS}\n{report}")


def test_every_day_of_both_datasets_succeeded(production):
    for dag_id, result in production.results.items():
        assert result["total"] == len(DAYS), (dag_id, result)
        assert result["success"] == len(DAYS), (dag_id, result, production.report())


def test_the_celery_workers_ran_the_tasks(production):
    """Under CeleryExecutor the scheduler runs no task: every task ran in one of the two workers, and both
    workers took part."""
    executed = {
        name: len(re.findall(r"Executing workload in Celery", text))
        for name, text in production.worker_logs().items()
    }
    tasks = 0
    for dag_id in DATASETS.values():
        for run in airflow_api.dag_runs(production.cfg, dag_id):
            tis = airflow_api.task_instances(production.cfg, dag_id, run["dag_run_id"])
            # skip_retrain is an EmptyOperator: the scheduler marks it done, no worker runs it
            tasks += sum(
                ti["state"] in ("success", "failed", "up_for_reschedule")
                and ti["operator"] != "EmptyOperator"
                for ti in tis
            )
    assert sum(executed.values()) >= tasks > 0, executed
    assert all(n > 0 for n in executed.values()), f"a worker ran nothing: {executed}"
    scheduler = processes.component_log(production.cfg, "scheduler").read_text(errors="replace")
    assert "CeleryExecutor" in scheduler


def test_history_and_alias_audit_are_in_postgres(production):
    import sqlalchemy as sa

    engine = sa.create_engine(production.db_urls["history"])
    try:
        with engine.connect() as conn:
            for dataset in DATASETS:
                rows = {
                    r.day: r
                    for r in conn.execute(
                        sa.text("SELECT day, decision, promotion FROM dw_days WHERE dataset = :d"),
                        {"d": dataset},
                    )
                }
                assert sorted(rows) == [d.isoformat() for d in DAYS], (dataset, sorted(rows))
                assert [rows[d.isoformat()].decision for d in DAYS[:4]] == ["collect"] * 4
                assert rows["2013-01-05"].decision == "bootstrap"
                assert rows["2013-01-05"].promotion == "promoted"
                assert rows["2013-01-06"].decision == "skip"
                assert rows[DRIFT_DAY.isoformat()].decision == "retrain"
                assert rows[DRIFT_DAY.isoformat()].promotion in ("promoted", "rejected")
                events = conn.execute(
                    sa.text(
                        "SELECT alias, after_version, logical_date FROM dw_alias_events "
                        "WHERE dataset = :d AND alias = 'champion' ORDER BY id"
                    ),
                    {"d": dataset},
                ).all()
                assert events and events[0].logical_date == "2013-01-05", events
    finally:
        engine.dispose()


def test_champion_alias_is_in_the_mlflow_registry_on_postgres(production):
    import sqlalchemy as sa

    client = production.mlflow_client()
    engine = sa.create_engine(production.db_urls["mlflow"])
    try:
        for dataset in DATASETS:
            model = f"{dataset}-delay"
            champion = client.get_model_version_by_alias(model, "champion")
            last = production.history().alias_events(dataset, "champion")[-1]
            assert int(champion.version) == last["after_version"]
            with engine.connect() as conn:
                stored = conn.execute(
                    sa.text(
                        "SELECT version FROM registered_model_aliases WHERE name = :m AND alias = 'champion'"
                    ),
                    {"m": model},
                ).scalar_one()
            assert int(stored) == int(champion.version)
    finally:
        engine.dispose()
    # artifacts went through the server into its artifact store, not onto the workers' disks elsewhere
    assert any(production.cfg.mlflow_artifacts.rglob("MLmodel"))


def _get_json(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")
    except OSError:
        return 0, {}


def test_model_server_replicas_serve_the_champion_through_mlflow_auth_into_one_capture(production):
    """docker-compose's `model-server`, as processes: two replicas of `driftwatch serve` with the environment
    the stack gives its clients (the MLflow server's URL and login, the history on PostgreSQL) serve the
    champion of the registry on PostgreSQL and capture into the same lake, each in files of its own; a
    replica without the MLflow login serves nothing and says why."""
    import signal
    import subprocess

    from devstack.components import client_env, executable
    from ml import capture
    from ml.config import load_settings
    from ml.data import read_batch
    from ml.traffic import Client, requests_of

    cfg = production.cfg
    champion = int(production.mlflow_client().get_model_version_by_alias("flights-delay", "champion").version)
    env = client_env(cfg)
    anonymous = {k: v for k, v in env.items() if k != "MLFLOW_TRACKING_PASSWORD"}
    servers = {}
    try:
        for name, environ in (("a", env), ("b", env), ("anonymous", anonymous)):
            port = config.free_port()
            log = (cfg.run_dir / f"model-server-{name}.log").open("w")
            cmd = [executable("driftwatch"), "serve", "--dataset", "flights", "--port", str(port)]
            servers[name] = (
                f"http://127.0.0.1:{port}",
                subprocess.Popen(cmd, env=environ, stdout=log, stderr=subprocess.STDOUT),
            )
        deadline = time.monotonic() + 120
        answers: dict[str, tuple[int, dict]] = {}
        while time.monotonic() < deadline and len(answers) < len(servers):
            for name, (url, _) in servers.items():
                status, body = _get_json(url + "/health")
                if status and (body.get("model_version") or body.get("error")):
                    answers[name] = (status, body)
            time.sleep(0.5)
        assert answers["a"][1]["model_version"] == champion and answers["b"][1]["model_version"] == champion
        status, body = answers["anonymous"]
        assert status == 503 and body["model_version"] is None and "401" in json.dumps(body), body

        s = load_settings("flights")
        day = DAYS[-1]
        frame = read_batch(s, day)
        bodies = list(requests_of(s, frame.head(40), day, batch=10))
        for i, request_body in enumerate(bodies):
            status, out = Client(servers["ab"[i % 2]][0]).post("/invocations", request_body)
            assert status == 200 and out["model_version"] == champion, out
        for name in ("a", "b"):
            servers[name][1].send_signal(signal.SIGTERM)
            # uvicorn re-raises the signal once it has shut down gracefully
            assert servers[name][1].wait(timeout=30) in (0, -signal.SIGTERM)
        captured = capture.read_capture(s, day)
        assert sorted(captured[capture.INFERENCE_ID]) == sorted(i for b in bodies for i in b["inference_ids"])
        assert set(captured[capture.VERSION]) == {champion}
        writers = {f.stem.rsplit("-", 2)[0] for f in s.capture_dir.rglob("part-*.parquet")}
        assert len(writers) == 2, f"expected the files of two writers: {writers}"
    finally:
        for _, process in servers.values():
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)


def test_mlflow_and_airflow_refuse_anonymous_requests(production):
    cfg = production.cfg
    with pytest.raises(urllib.error.HTTPError) as mlflow_err:
        urllib.request.urlopen(f"{cfg.mlflow_url}/api/2.0/mlflow/registered-models/search", timeout=10)
    assert mlflow_err.value.code == 401
    with pytest.raises(urllib.error.HTTPError) as airflow_err:
        urllib.request.urlopen(f"{cfg.airflow_url}/api/v2/dags", timeout=10)
    assert airflow_err.value.code == 401


def test_every_listener_is_on_loopback(production):
    """The API server, MLflow and each Celery worker's task-log server (which Airflow would bind to every
    interface), on their configured ports and 127.0.0.1 only."""
    cfg = production.cfg
    sockets = processes.listeners(cfg)
    expected = {("api-server", cfg.airflow_port), ("mlflow", cfg.mlflow_port)}
    expected |= {(name, cfg.ports[f"{name}-log-server"]) for name in cfg.celery_worker_names}
    assert {(sock["component"], sock["port"]) for sock in sockets} == expected, sockets
    assert {sock["address"] for sock in sockets} == {"127.0.0.1"}, sockets


def test_no_secret_is_written_to_any_log(production):
    """Task logs, component logs (scheduler, API server, workers, MLflow) and every other file the stack
    wrote, except the two private files the secrets live in."""
    cfg = production.cfg
    secret_files = {cfg.secrets_file, cfg.password_file}
    task_logs = list(cfg.log_dir.rglob("*.log"))
    assert len(task_logs) >= 2 * len(DAYS), "expected the task logs of the integration run"
    leaks = []
    scanned = 0
    for path in cfg.home.rglob("*"):
        if not path.is_file() or path in secret_files:
            continue
        data = path.read_bytes()
        scanned += 1
        leaks += [
            f"{what} in {path}" for what, value in production.secret_values.items() if value.encode() in data
        ]
    assert scanned > len(task_logs)
    assert not leaks, "secrets written in plain text:\n" + "\n".join(leaks)


def test_the_worker_command_lines_carry_no_secret(production):
    """What `ps` shows to every user of the machine: the pid files record each component's command."""
    for name in (*config.DEFAULT_COMPONENTS, *production.cfg.celery_worker_names):
        record = json.loads((production.cfg.run_dir / f"{name}.pid").read_text())
        line = " ".join(record["cmd"])
        for what, value in production.secret_values.items():
            assert value not in line, f"{what} on the command line of {name}"
