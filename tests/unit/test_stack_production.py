"""devstack's production shape (CeleryExecutor, PostgreSQL, MLflow basic auth) as configuration only: no
process is started. The running stack is tests/integration/test_production.py."""

from __future__ import annotations

import pytest

from devstack import components, config, processes

PG = "postgresql+psycopg2://dw:s3cret-pw@127.0.0.1:5432/{}"


@pytest.fixture
def celery_cfg(tmp_path):
    return config.StackConfig.for_tests(
        tmp_path / "home",
        executor="CeleryExecutor",
        celery_workers=2,
        airflow_db_url=PG.format("airflow"),
        history_db_url=PG.format("history"),
        mlflow_mode="server",
        mlflow_backend_store_uri=PG.format("mlflow"),
        mlflow_basic_auth=True,
    )


def test_the_embedded_default_has_no_worker_and_keeps_its_commands(tmp_path):
    cfg = config.StackConfig.for_tests(tmp_path / "home")
    assert cfg.celery_worker_names == () and cfg.components == config.ALL_COMPONENTS
    assert set(cfg.ports) == {"api-server", "mlflow", "worker-log-server", "trigger-log-server"}
    cmd = components.mlflow_command(cfg)
    assert cmd[cmd.index("--backend-store-uri") + 1] == f"sqlite:///{cfg.mlflow_db}"
    assert cmd[cmd.index("--app-name") + 1] == "basic-auth"  # no anonymous writes (test_stack_private.py)
    env = components.airflow_env(cfg, base={})
    assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("sqlite:///")
    assert env["AIRFLOW__SCHEDULER__MP_START_METHOD"] == "forkserver"
    assert "DRIFTWATCH_DB_URL" not in env and "MLFLOW_TRACKING_PASSWORD" not in env


def test_celery_config_has_one_worker_component_and_free_log_port_each(celery_cfg, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert celery_cfg.celery_worker_names == ("celery-worker-1", "celery-worker-2")
    ports = celery_cfg.ports
    assert len(set(ports.values())) == len(ports) == 6
    env = components.component_env(celery_cfg, "celery-worker-2")
    assert env["AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT"] == str(ports["celery-worker-2-log-server"])
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == PG.format("airflow")
    assert env["DRIFTWATCH_DB_URL"] == PG.format("history")
    assert env["OMP_NUM_THREADS"] == "1"
    assert "AIRFLOW__SCHEDULER__MP_FORKSERVER_PRELOAD" not in env  # the workers preload instead
    cmd = components.component_command(celery_cfg, "celery-worker-2")
    assert cmd[cmd.index("celery") + 1] == "worker" and "celery-worker-2@%h" in cmd
    assert "airflow_preloaded()" in " ".join(cmd)


def test_no_password_on_a_command_line_or_in_repr(celery_cfg):
    for name in celery_cfg.components:
        assert "s3cret-pw" not in " ".join(components.component_command(celery_cfg, name)), name
    assert "--backend-store-uri" not in components.mlflow_command(celery_cfg)
    mlflow_env = components.component_env(celery_cfg, "mlflow")
    assert mlflow_env["MLFLOW_BACKEND_STORE_URI"] == PG.format("mlflow")
    assert mlflow_env["MLFLOW_AUTH_ADMIN_PASSWORD"] == celery_cfg.mlflow_admin_password
    assert "s3cret-pw" not in repr(celery_cfg)
    assert "s3cret-pw" not in str(processes.fingerprint(celery_cfg))


def test_redact_url():
    assert config.redact_url(PG.format("x")) == "postgresql+psycopg2://dw:***@127.0.0.1:5432/x"
    assert config.redact_url("redis://127.0.0.1:6379/3") == "redis://127.0.0.1:6379/3"
    assert config.redact_url("sqlite:////tmp/a.db") == "sqlite:////tmp/a.db"


def test_celery_needs_a_server_database(tmp_path):
    with pytest.raises(config.StackError, match="airflow_db_url: CeleryExecutor needs a server database"):
        config.StackConfig.for_tests(tmp_path, executor="CeleryExecutor")
    with pytest.raises(config.StackError, match="executor: expected 'LocalExecutor' or 'CeleryExecutor'"):
        config.StackConfig.for_tests(tmp_path, executor="KubernetesExecutor")


def test_scheduler_idle_sleep_comes_from_the_environment(tmp_path):
    home = {"DRIFTWATCH_HOME": str(tmp_path / "home")}
    default = components.airflow_env(config.StackConfig.from_env(home), base={})
    assert default["AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME"] == "0.1"
    live = config.StackConfig.from_env({**home, "DRIFTWATCH_SCHEDULER_IDLE_SLEEP": "1"})
    assert components.airflow_env(live, base={})["AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME"] == "1.0"
    for bad, said in (("soon", "a number"), ("0", r"\(0, 60\]"), ("600", r"\(0, 60\]")):
        with pytest.raises(
            config.StackError, match=f"DRIFTWATCH_SCHEDULER_IDLE_SLEEP: expected seconds.*{said}"
        ):
            config.StackConfig.from_env({**home, "DRIFTWATCH_SCHEDULER_IDLE_SLEEP": bad})
