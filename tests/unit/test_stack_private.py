"""The embedded default keeps to itself, as configuration and file modes: no process of Airflow or MLflow is
started (tests/integration/test_stack.py checks the running stack's sockets, modes and MLflow login).

    - every process the stack starts runs with umask 077; `secure_home` tightens an older home;
    - the task-log servers are Airflow's own, run on 127.0.0.1 (`airflow_loopback`), and the hostname the
      API server fetches running tasks' logs from is 127.0.0.1;
    - MLflow runs its basic-auth app; only tasks that talk HTTP to it get the password.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import pickle
import stat
import sys
import threading
import time
from pathlib import Path

import pytest

from devstack import cli, components, config, launch, private, processes, production, startup


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def cfg(tmp_path):
    return config.StackConfig.for_tests(tmp_path / "home")


# ---------------------------------------------------------------------------------------------- MLflow login


def test_the_embedded_mlflow_runs_the_basic_auth_app_with_a_generated_admin(cfg):
    assert cfg.mlflow_basic_auth and cfg.mlflow_mode == "sqlite"
    cmd = components.mlflow_command(cfg)
    assert cmd[cmd.index("--app-name") + 1] == "basic-auth"
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1"
    env = components.component_env(cfg, "mlflow")
    password = cfg.mlflow_admin_password
    assert len(password) >= 16 and env["MLFLOW_AUTH_ADMIN_PASSWORD"] == password
    assert env["MLFLOW_FLASK_SERVER_SECRET_KEY"]
    ini = Path(env["MLFLOW_AUTH_CONFIG_PATH"]).read_text()
    assert f"database_uri = sqlite:///{cfg.mlflow_auth_db}" in ini and "admin_username = admin" in ini
    assert password not in ini and password not in " ".join(cmd)
    # generated once per home, kept 0600 beside Airflow's secrets
    assert config.StackConfig.for_tests(cfg.home).mlflow_admin_password == password
    assert json.loads(cfg.secrets_file.read_text())["mlflow_admin_password"] == password
    assert mode(cfg.secrets_file) == 0o600 and mode(Path(env["MLFLOW_AUTH_CONFIG_PATH"])) == 0o600


def test_only_tasks_that_talk_http_to_mlflow_get_its_password(tmp_path):
    sqlite = config.StackConfig.for_tests(tmp_path / "a")
    env = components.airflow_env(sqlite, base={})
    assert env["MLFLOW_TRACKING_URI"] == f"sqlite:///{sqlite.mlflow_db}"
    assert "MLFLOW_TRACKING_USERNAME" not in env and "MLFLOW_TRACKING_PASSWORD" not in env

    server = config.StackConfig.for_tests(tmp_path / "b", mlflow_mode="server")
    env = components.airflow_env(server, base={})
    assert env["MLFLOW_TRACKING_URI"] == server.mlflow_url
    assert env["MLFLOW_TRACKING_USERNAME"] == "admin"
    assert env["MLFLOW_TRACKING_PASSWORD"] == server.mlflow_admin_password
    # the links from Airflow's task instances still open the MLflow UI (which asks for the login)
    assert env["DRIFTWATCH_MLFLOW_UI_URL"] == server.mlflow_url

    anonymous = config.StackConfig.for_tests(tmp_path / "c", mlflow_mode="server", mlflow_basic_auth=False)
    assert "MLFLOW_TRACKING_PASSWORD" not in components.airflow_env(anonymous, base={})
    assert (
        "--app-name" not in components.mlflow_command(anonymous)
        and private.mlflow_auth_header(anonymous) == {}
    )


def test_auth_header_is_the_admin_login(cfg):
    import base64

    header = private.mlflow_auth_header(cfg)["Authorization"]
    assert base64.b64decode(header.removeprefix("Basic ")).decode() == f"admin:{cfg.mlflow_admin_password}"


def test_up_prints_the_mlflow_login_beside_airflows(cfg, capsys):
    cli.print_urls(cfg)
    out = capsys.readouterr().out
    assert f"Airflow  {cfg.airflow_url}   user admin   password {cfg.admin_password}" in out
    assert f"MLflow   {cfg.mlflow_url}   user admin   password {cfg.mlflow_admin_password}" in out


class _Answer(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self):  # noqa: N802 - http.server's name
        type(self).seen = self.headers.get("Authorization")
        self.send_response(self.status)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def stub_mlflow():
    """A local HTTP server answering every GET with `_Answer.status`; yields its port."""
    server = http.server.HTTPServer(("127.0.0.1", 0), _Answer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_start_checks_the_login_and_names_the_fix_when_mlflow_refuses_it(tmp_path, stub_mlflow, monkeypatch):
    cfg = config.StackConfig.for_tests(tmp_path / "home", mlflow_port=stub_mlflow)
    monkeypatch.setattr(_Answer, "status", 200)
    assert startup.mlflow_login_ok(cfg)
    assert _Answer.seen == private.mlflow_auth_header(cfg)["Authorization"]
    monkeypatch.setattr(_Answer, "status", 503)
    assert not startup.mlflow_login_ok(cfg)  # not up yet: wait_healthy tries again
    monkeypatch.setattr(_Answer, "status", 401)
    with pytest.raises(config.StackError, match=r"refuses the admin password of .*driftwatch-secrets\.json.*"
                                             r"delete .*basic_auth\.db"):  # fmt: skip
        startup.mlflow_login_ok(cfg)


def test_a_stack_started_without_basic_auth_must_be_restarted(cfg):
    old = processes.fingerprint(cfg)
    del old["mlflow_basic_auth"]  # what a stack started before basic auth was the default recorded
    private.write_private(cfg.run_dir / "mlflow.pid", json.dumps({"pid": os.getpid(), "config": old}))
    with pytest.raises(config.StackError, match=r"mlflow_basic_auth: running None, asked True.*make down"):
        processes.check_same_config(cfg, ["mlflow"])


# ---------------------------------------------------------------------------------------------- loopback


def test_every_listener_is_configured_on_loopback(cfg):
    env = components.airflow_env(cfg, base={})
    assert env["AIRFLOW__API__HOST"] == "127.0.0.1"
    assert env["AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST"] == "127.0.0.1"
    assert env["AIRFLOW__CORE__HOSTNAME_CALLABLE"] == "devstack.launch.loopback_hostname"
    from airflow._shared.module_loading import import_string

    assert import_string(env["AIRFLOW__CORE__HOSTNAME_CALLABLE"])() == "127.0.0.1"


def test_log_serving_components_run_through_airflow_loopback(tmp_path):
    cfg = config.StackConfig.for_tests(tmp_path / "home")
    for name in ("scheduler", "triggerer"):
        cmd = components.component_command(cfg, name)
        assert cmd[0] == sys.executable and "airflow_loopback()" in cmd[2] and cmd[3:] == [name], cmd
    for name in ("api-server", "dag-processor"):
        assert components.component_command(cfg, name)[1:] == [name]
    celery = dict(executor="CeleryExecutor", airflow_db_url="postgresql+psycopg2://u@127.0.0.1/a")
    preloaded = config.StackConfig.for_tests(tmp_path / "c1", **celery)
    assert "airflow_preloaded()" in production.celery_worker_command(preloaded, "celery-worker-1")[2]
    plain = config.StackConfig.for_tests(tmp_path / "c2", preload_modules=(), **celery)
    assert "airflow_loopback()" in production.celery_worker_command(plain, "celery-worker-1")[2]


def test_serve_logs_on_loopback_runs_airflows_log_server_on_127_0_0_1(monkeypatch):
    import setproctitle
    import uvicorn

    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: calls.append((app, kwargs)))
    monkeypatch.setattr(setproctitle, "setproctitle", lambda title: None)
    launch.serve_logs_on_loopback(port=18793)
    assert len(calls) == 1
    app, kwargs = calls[0]
    assert app == "airflow.utils.serve_logs.log_server:get_app"
    assert kwargs["host"] == "127.0.0.1" and kwargs["port"] == 18793  # Airflow's own call says host=""


def test_airflow_loopback_replaces_serve_logs_where_the_commands_import_it(monkeypatch):
    import airflow.__main__
    import airflow.utils.serve_logs

    monkeypatch.setattr(airflow.utils.serve_logs, "serve_logs", airflow.utils.serve_logs.serve_logs)
    monkeypatch.setattr(airflow.__main__, "main", lambda: 0)
    with pytest.raises(SystemExit) as done:
        launch.airflow_loopback()
    assert done.value.code == 0
    from airflow.utils.serve_logs import serve_logs  # as scheduler_command/triggerer_command do

    assert serve_logs is launch.serve_logs_on_loopback
    # the scheduler starts it with a forkserver: the target travels by name (the triggerer's as a partial)
    target = pickle.loads(pickle.dumps(functools.partial(serve_logs, port=1)))
    assert target.func is launch.serve_logs_on_loopback


# ---------------------------------------------------------------------------------------------- file modes


def test_every_process_the_stack_starts_runs_with_umask_077(cfg, monkeypatch):
    """The component's own files (here a probe written by the process), its log and its pid file are 0600."""
    probe = "import os; open('probe.txt', 'w').write(oct(os.umask(0)))"
    monkeypatch.setattr(components, "component_command", lambda cfg, name: [sys.executable, "-c", probe])
    monkeypatch.setattr(components, "component_env", lambda cfg, name: dict(os.environ))
    private.secure_home(cfg)
    record = startup.spawn(cfg, "dag-processor")
    deadline = time.monotonic() + 30
    while processes.alive(record) and time.monotonic() < deadline:
        time.sleep(0.05)
    written = cfg.home / "probe.txt"
    assert written.read_text() == "0o77"
    assert mode(written) == 0o600
    assert mode(processes.component_log(cfg, "dag-processor")) == 0o600
    assert mode(cfg.run_dir / "dag-processor.pid") == 0o600
    assert mode(cfg.run_dir) == 0o700


def test_airflow_writes_task_logs_private(cfg):
    env = components.airflow_env(cfg, base={})
    assert env["AIRFLOW__LOGGING__FILE_TASK_HANDLER_NEW_FILE_PERMISSIONS"] == "0o600"
    assert env["AIRFLOW__LOGGING__FILE_TASK_HANDLER_NEW_FOLDER_PERMISSIONS"] == "0o700"
    assert (
        int(env["AIRFLOW__LOGGING__FILE_TASK_HANDLER_NEW_FILE_PERMISSIONS"], 8) == 0o600
    )  # as Airflow reads it


def _older_home(home: Path, cfg: config.StackConfig) -> list[Path]:
    """A home as a release before this one left it (umask 022): files 0644, directories 0755."""
    files = [
        cfg.airflow_db, cfg.airflow_db.with_name("airflow.db-wal"), cfg.airflow_db.with_name("airflow.db-shm"),
        cfg.mlflow_db, cfg.history_db, cfg.history_db.with_name("driftwatch.db-wal"), cfg.mlflow_auth_db,
        cfg.secrets_file, cfg.password_file,
    ]  # fmt: skip
    for path in files:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")
        path.chmod(0o644)
    for d in (home, cfg.airflow_home, cfg.mlflow_home):
        d.chmod(0o755)
    (home / "reports").mkdir()
    (home / "reports" / "plot.png").write_text("x")
    return files


def test_secure_home_tightens_an_older_home_and_is_idempotent(tmp_path):
    cfg = config.StackConfig.for_tests(tmp_path / "home")
    previous = os.umask(0o022)
    try:
        files = _older_home(cfg.home, cfg)
        changed = private.secure_home(cfg)
    finally:
        os.umask(previous)
    assert {mode(f) for f in files} == {0o600}
    assert {mode(d) for d in (cfg.airflow_home, cfg.mlflow_home, cfg.run_dir)} == {0o700}
    assert set(files) | {cfg.airflow_home, cfg.mlflow_home} == set(changed)
    # a home chosen with DRIFTWATCH_HOME that already existed keeps its mode (it may be shared)
    assert mode(cfg.home) == 0o755
    assert mode(cfg.home / "reports" / "plot.png") == 0o644  # not a secret; the stack's own dirs are closed
    assert private.secure_home(cfg) == []


def test_the_default_home_and_a_new_home_are_0700(tmp_path, monkeypatch):
    monkeypatch.setattr(private, "REPO_ROOT", tmp_path)
    default = config.StackConfig.for_tests(tmp_path / "var")
    default.home.mkdir(mode=0o755)
    default.home.chmod(0o755)
    assert default.home in private.secure_home(default) and mode(default.home) == 0o700
    new = config.StackConfig.for_tests(tmp_path / "elsewhere" / "home")
    private.secure_home(new)
    assert mode(new.home) == 0o700


def test_secure_home_leaves_files_it_does_not_own_and_symlinks(tmp_path):
    cfg = config.StackConfig.for_tests(tmp_path / "home")
    private.secure_home(cfg)
    outside = tmp_path / "outside.db"
    outside.write_text("x")
    outside.chmod(0o644)
    cfg.airflow_db.symlink_to(outside)
    assert private.secure_home(cfg) == [] and mode(outside) == 0o644


def test_start_tightens_the_home_before_anything_runs(tmp_path, capsys):
    cfg = config.StackConfig.for_tests(tmp_path / "home")
    previous = os.umask(0o022)
    try:
        files = _older_home(cfg.home, cfg)
    finally:
        os.umask(previous)
    assert startup.start(cfg, [], quiet=False) == {"total": 0.0}
    assert {mode(f) for f in files} == {0o600}
    out = capsys.readouterr().out
    assert (
        f"Made private in {cfg.home} (files 0600, directories 0700): airflow, mlflow, airflow/airflow.db"
        in out
    )


def test_private_files_are_the_three_databases_with_their_side_files_and_the_secrets(cfg):
    names = {p.relative_to(cfg.home).as_posix() for p in private.private_files(cfg)}
    for db in ("airflow/airflow.db", "mlflow/mlflow.db", "driftwatch.db", "mlflow/basic_auth.db"):
        assert {db, f"{db}-wal", f"{db}-shm", f"{db}-journal"} <= names
    assert {f"airflow/{config.SECRETS_FILE}", f"airflow/{config.PASSWORD_FILE}"} <= names


def test_the_project_is_compiled_for_the_task_processes(tmp_path):
    """Tasks run with PYTHONDONTWRITEBYTECODE here: the stack writes the bytecode of the DAG folder (and ml/,
    devstack/) itself, and only again when a source is newer than its .pyc."""
    import importlib.util

    dags = tmp_path / "dags"
    dags.mkdir()
    dag_file = dags / "a_dag.py"
    dag_file.write_text("X = 1\n")
    cfg = config.StackConfig.for_tests(tmp_path / "home", dags_folder=dags)
    assert dags in startup.compile_project(cfg)
    pyc = Path(importlib.util.cache_from_source(str(dag_file)))
    assert pyc.is_file()
    first = pyc.stat().st_mtime_ns
    startup.compile_project(cfg)
    assert pyc.stat().st_mtime_ns == first  # unchanged source: not rewritten
    dag_file.write_text("X = 2  # edited\n")
    os.utime(dag_file, ns=(first + 10**9, first + 10**9))
    startup.compile_project(cfg)
    assert pyc.stat().st_mtime_ns != first
