"""docker-compose.yaml and .env.example: valid for Debian's docker-compose, secrets only from the env file,
healthchecks and restart policies everywhere, workers scalable, MLflow internal, no literal secret.

No Docker engine is needed: `docker-compose config` only parses, interpolates and validates.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from ml.config import REPO_ROOT

COMPOSE = REPO_ROOT / "docker-compose.yaml"
ENV_EXAMPLE = REPO_ROOT / ".env.example"
SECRET_NAME = re.compile(r"PASSWORD|SECRET|KEY|TOKEN", re.IGNORECASE)
# names that hold where a secret is, not the secret (AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE)
LOCATION_NAME = re.compile(r"_(FILE|PATH)$")
# a ${VAR:?message} reference: required, so compose refuses to start without it
REQUIRED_REF = re.compile(r"\$\{(\w+):\?[^}]*\}")
PLACEHOLDER = re.compile(r"^change-me[\w-]*$")
ONE_SHOT = {"airflow-init"}


def _env_example() -> dict[str, str]:
    values = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def _compose(*args: str, cwd: Path = REPO_ROOT) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("docker-compose is not installed (Debian package docker-compose; .ci/run installs it)")
    # the shell's variables would win over the env file: none of the project's may leak in
    env = {k: v for k, v in os.environ.items() if k not in _env_example() and not k.startswith("COMPOSE_")}
    return subprocess.run(
        [binary, "--project-directory", str(REPO_ROOT), "-f", str(COMPOSE), *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


@pytest.fixture(scope="module")
def raw() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def resolved() -> dict:
    proc = _compose("--env-file", str(ENV_EXAMPLE), "config")
    assert proc.returncode == 0, proc.stderr
    return yaml.safe_load(proc.stdout)


def test_config_passes_with_the_example_env_file(resolved):
    expected = {
        "postgres", "redis", "mlflow", "airflow-init", "airflow-apiserver", "airflow-scheduler",
        "airflow-dag-processor", "airflow-triggerer", "airflow-worker", "model-server",
    }  # fmt: skip
    assert set(resolved["services"]) == expected


def test_compose_refuses_to_start_without_the_secrets(tmp_path):
    empty = tmp_path / "empty.env"
    empty.write_text("")
    proc = _compose("--env-file", str(empty), "config", cwd=tmp_path)
    assert proc.returncode != 0
    assert re.search(r"set \w+ in \.env", proc.stderr), proc.stderr


def test_every_secret_is_a_required_reference_to_the_env_file(raw):
    """No password, key, secret or token is written in the compose file: every such environment value is
    (or embeds) a ${VAR:?...} reference, and every variable referenced that way is in .env.example."""
    literal = []
    referenced = set()

    def check(where: str, name: str, value: object) -> None:
        text = "" if value is None else str(value)
        refs = REQUIRED_REF.findall(text)
        referenced.update(refs)
        has_credentials = re.search(r"://[^/@\s]*:[^/@\s]+@", text)  # user:password@host in a URL
        if SECRET_NAME.search(name) and not LOCATION_NAME.search(name) and not refs and text:
            literal.append(f"{where}: {name}")
        elif has_credentials and not refs:
            literal.append(f"{where}: {name} (credentials in a URL)")

    for anchor_name, anchor in raw.items():
        if anchor_name.startswith("x-") and isinstance(anchor, dict):
            for name, value in (anchor.get("environment") or {}).items():
                check(anchor_name, name, value)
    for service, spec in raw["services"].items():
        env = spec.get("environment") or {}
        items = env.items() if isinstance(env, dict) else (e.partition("=")[::2] for e in env)
        for name, value in items:
            check(service, name, value)
        for arg in spec.get("command") or []:
            if isinstance(arg, str) and re.search(r"--?\w*(password|secret|token)\w*[= ]\S", arg, re.I):
                literal.append(f"{service}: command line {arg.split('=')[0]}")
    assert not literal, f"literal secrets in {COMPOSE.name}: {literal}"
    assert referenced <= set(_env_example()), (
        f"not in .env.example: {sorted(referenced - set(_env_example()))}"
    )


def test_no_secret_value_anywhere_in_the_compose_file():
    """Belt and braces over the whole text (commands, healthchecks, comments): nothing that looks like a
    password or key assignment with a literal value."""
    assignment = re.compile(r"^[\s-]*[\"']?(\w+)[\"']?\s*[:=]\s*(.*)$")
    for number, line in enumerate(COMPOSE.read_text().splitlines(), 1):
        code = line.split(" #", 1)[0] if not line.lstrip().startswith("#") else ""
        without_refs = re.sub(r"\$\{[^}]*\}", "", code)
        match = assignment.match(without_refs)
        if match and SECRET_NAME.search(match.group(1)) and not LOCATION_NAME.search(match.group(1)):
            assert not match.group(2).strip(" '\""), f"{COMPOSE.name}:{number}: literal {match.group(1)}"
        assert not re.search(r"://[^/@\s:]*:[^/@\s$]+@", without_refs), (
            f"{COMPOSE.name}:{number}: URL password"
        )


def test_env_example_holds_only_placeholders():
    values = _env_example()
    secrets = {k: v for k, v in values.items() if SECRET_NAME.search(k)}
    assert secrets, ".env.example lists no secret"
    not_placeholders = {k for k, v in secrets.items() if not PLACEHOLDER.match(v)}
    assert not not_placeholders, f"not a change-me placeholder in .env.example: {sorted(not_placeholders)}"
    assert len(set(secrets.values())) == len(secrets), "placeholders must differ (one per secret)"


def test_services_refuse_the_placeholders_at_start(raw):
    """postgres and airflow-init, the two that would write a placeholder into a role or a password file."""
    for service in ("postgres", "airflow-init"):
        spec = raw["services"][service]
        script = " ".join(str(p) for p in [*(spec.get("entrypoint") or []), *(spec.get("command") or [])])
        assert "change-me" in script and "exit 1" in script, service


def test_healthchecks_and_restart_policies_on_every_service(resolved):
    for name, spec in resolved["services"].items():
        assert "restart" in spec, f"{name}: no restart policy"
        if name in ONE_SHOT:
            assert spec["restart"] == "no"
            continue
        assert spec["restart"] in ("always", "unless-stopped"), name
        check = spec.get("healthcheck") or {}
        assert check.get("test") and not check.get("disable"), f"{name}: no healthcheck"


def test_workers_scale_and_internal_services_publish_nothing(resolved):
    services = resolved["services"]
    worker = services["airflow-worker"]
    assert "container_name" not in worker and "ports" not in worker
    assert "celery" in worker["command"] and "worker" in worker["command"]
    for name in ("postgres", "redis", "mlflow", "airflow-worker", "airflow-scheduler"):
        assert "ports" not in services[name], f"{name} must not publish a port"
        assert set(services[name]["networks"]) <= {"backend", "edge"}
    assert resolved["networks"]["backend"].get("internal") is True
    assert set(services["mlflow"]["networks"]) == {"backend"}
    published = services["airflow-apiserver"]["ports"]
    assert all(str(p.get("host_ip", "")).startswith("127.") for p in published if isinstance(p, dict)) or all(
        str(p).startswith("127.") for p in published if isinstance(p, str)
    ), published


def test_production_settings(resolved):
    env = resolved["services"]["airflow-scheduler"]["environment"]
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://airflow:")
    assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://redis:6379/")
    assert env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS"] == "False"
    assert env["DRIFTWATCH_DB_URL"].startswith("postgresql+psycopg2://driftwatch:")
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    mlflow = resolved["services"]["mlflow"]
    command = " ".join(mlflow["command"])
    assert "--serve-artifacts" in command and "--app-name=basic-auth" in command
    assert mlflow["environment"]["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql+psycopg2://mlflow:")
    # the MLflow server gets no Airflow secret
    assert not any(k.startswith("AIRFLOW__") for k in mlflow["environment"])


def test_image_is_built_from_the_locked_requirements_and_the_ml_package():
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM apache/airflow:3\.3\.2-python3\.11$", dockerfile, re.M)
    assert "-r /opt/driftwatch/requirements.txt" in dockerfile
    assert "pip install --no-cache-dir --no-deps /opt/driftwatch" in dockerfile
    assert "compileall" in dockerfile
    ignored = (REPO_ROOT / ".dockerignore").read_text().split()
    assert ignored[0] == "**" or "**" in ignored, "the build context is an allow-list: .env stays out"
    assert "!.env" not in ignored


def test_the_model_server_follows_the_registry_with_replicas_a_health_check_and_the_capture_volume(resolved):
    server = resolved["services"]["model-server"]
    command = " ".join(server["command"])
    assert command.startswith("driftwatch serve --dataset ") and "--host 0.0.0.0" in command
    assert int(server["deploy"]["replicas"]) >= 2 and "container_name" not in server
    assert "/health" in " ".join(server["healthcheck"]["test"])
    env = server["environment"]
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000" and env["MLFLOW_TRACKING_USERNAME"]
    assert env["DRIFTWATCH_LAKE"] == "/data/lake"
    assert not any(k.startswith("AIRFLOW__") for k in env), "the model server gets no Airflow secret"
    assert "DRIFTWATCH_DB_URL" not in env  # it reads the registry, not the history database
    # the capture lands where the DAG reads it (docker-compose 1.x prints volumes as "source:target:mode")
    mounts = {
        (v["target"] if isinstance(v, dict) else v.split(":")[1]): (
            v["source"] if isinstance(v, dict) else v.split(":")[0]
        )
        for v in server["volumes"]
    }
    assert mounts["/data/lake"].endswith("lake")
    for port in server["ports"]:
        host = port.get("host_ip", "") if isinstance(port, dict) else str(port)
        assert str(host).startswith("127."), port
    assert server["depends_on"]["mlflow"]["condition"] == "service_healthy"
