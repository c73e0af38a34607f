"""What the stack keeps private: secrets generated once per home (0600 files) and the home's modes.

The Airflow admin password, the JWT secret, API secret key and Fernet key, and MLflow's basic-auth admin
password and CSRF secret key are generated on first use and kept in 0600 files under <home>/airflow. Every
process of the stack runs with umask 077 (config.PRIVATE_UMASK); `secure_home` tightens what an older home
left readable.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
from pathlib import Path

from devstack.config import ADMIN_USER, StackConfig, StackError
from ml.config import REPO_ROOT

_SQLITE_SIDE_FILES = ("", "-wal", "-shm", "-journal")


def write_private(path: Path, text: str) -> None:
    """Write `path` as a 0600 file (atomically), creating a missing directory 0700."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def ensure_password(cfg: StackConfig) -> str:
    """The Airflow admin password, generated once into the SimpleAuthManager password file.

    Raises:
        StackError: the password file is not a JSON object of user -> password.
    """
    path = cfg.password_file
    if path.is_file():
        try:
            password = json.loads(path.read_text()).get(ADMIN_USER)
        except (json.JSONDecodeError, AttributeError):
            raise StackError(
                f"{path}: not a JSON object of user -> password. Delete it to generate a new one."
            ) from None
        if password:
            return str(password)
    password = secrets.token_urlsafe(12)
    write_private(path, json.dumps({ADMIN_USER: password}) + "\n")
    return password


def ensure_secrets(cfg: StackConfig) -> dict[str, str]:
    """JWT secret, API secret key and Fernet key: generated once per home, kept in a 0600 file there."""
    path = cfg.secrets_file
    if path.is_file():
        values: dict[str, str] = json.loads(path.read_text())
        if {"jwt_secret", "api_secret_key", "fernet_key"} <= set(values):
            return values
    values = {
        "jwt_secret": secrets.token_urlsafe(32),
        "api_secret_key": secrets.token_urlsafe(32),
        "fernet_key": base64.urlsafe_b64encode(os.urandom(32)).decode(),
    }
    write_private(path, json.dumps(values, indent=1) + "\n")
    return values


def ensure_mlflow_secrets(cfg: StackConfig) -> dict[str, str]:
    """The basic-auth admin password and the server's CSRF secret key, added to the secrets file once."""
    values = ensure_secrets(cfg)
    if not (values.get("mlflow_admin_password") and values.get("mlflow_secret_key")):
        values["mlflow_admin_password"] = secrets.token_urlsafe(16)
        values["mlflow_secret_key"] = secrets.token_urlsafe(32)
        write_private(cfg.secrets_file, json.dumps(values, indent=1) + "\n")
    return values


def mlflow_auth_config(cfg: StackConfig) -> Path:
    """The basic-auth app's ini: users in a SQLite file beside the MLflow store. It holds no secret: the
    admin password comes from MLFLOW_AUTH_ADMIN_PASSWORD when the server creates the admin user."""
    path = cfg.mlflow_home / "basic_auth.ini"
    write_private(
        path,
        "[mlflow]\n"
        "default_permission = READ\n"
        f"database_uri = sqlite:///{cfg.mlflow_auth_db}\n"
        f"admin_username = {ADMIN_USER}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        # every request otherwise re-checks the password hash (scrypt, ~0.1 s of CPU): a task makes dozens
        "auth_cache_ttl_seconds = 60\n",
    )
    return path


def mlflow_auth_header(cfg: StackConfig) -> dict[str, str]:
    """The HTTP Authorization header of the MLflow admin ({} when basic auth is off)."""
    if not cfg.mlflow_basic_auth:
        return {}
    token = base64.b64encode(f"{ADMIN_USER}:{cfg.mlflow_admin_password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def private_files(cfg: StackConfig) -> list[Path]:
    """The files of this home that hold data or secrets and must be 0600: the three SQLite databases (Airflow,
    MLflow, history) with their -wal/-shm/-journal files, MLflow's users, the secrets and the password file."""
    files = []
    for db in (cfg.airflow_db, cfg.mlflow_db, cfg.history_db, cfg.mlflow_auth_db):
        files += [db.with_name(db.name + suffix) for suffix in _SQLITE_SIDE_FILES]
    return [*files, cfg.secrets_file, cfg.password_file, cfg.mlflow_home / "basic_auth.ini"]


def _chmod(path: Path, mode: int) -> bool:
    """Set `path`'s permission bits to `mode` when they differ and the file is ours; True when changed."""
    try:
        info = path.lstat()
    except FileNotFoundError:
        return False
    if path.is_symlink() or not (path.is_file() or path.is_dir()) or info.st_uid != os.geteuid():
        return False
    if info.st_mode & 0o7777 == mode:
        return False
    os.chmod(path, mode)
    return True


def secure_home(cfg: StackConfig) -> list[Path]:
    """Create the stack's directories 0700 and tighten what an older home left readable: the databases and
    secrets (`private_files`) to 0600, the airflow/, mlflow/ and run/ directories to 0700, and the home itself
    to 0700 when it is the default home (<repo>/var) or did not exist yet. A home chosen with DRIFTWATCH_HOME
    that already existed keeps its own mode (it may be shared): its stack directories are private anyway.

    Returns the paths whose mode was changed (creations not counted).
    """
    changed: list[Path] = []
    default_home = cfg.home == (REPO_ROOT / "var").resolve()
    if not cfg.home.exists():
        cfg.home.mkdir(mode=0o700, parents=True)
    elif default_home and _chmod(cfg.home, 0o700):
        changed.append(cfg.home)
    for d in (cfg.airflow_home, cfg.mlflow_home, cfg.run_dir):
        if d.exists():
            if _chmod(d, 0o700):
                changed.append(d)
        else:
            d.mkdir(mode=0o700, parents=True)
    changed += [f for f in private_files(cfg) if _chmod(f, 0o600)]
    return changed
