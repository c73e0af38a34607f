"""The supervisor: each component a detached process with a pid file and a log file under <home>/run.

`spawn` starts a component in its own session (so it outlives the command that started it, and `stop`
finds every process it forked, task processes included, by session id), with umask 077, stdout and stderr
appended to <home>/run/<name>.log, and writes <home>/run/<name>.pid: the pid, its start time (a reused pid
does not count as alive) and the configuration it was started with (a second `start` with other ports or
stores refuses instead of mixing two stacks).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import psutil

from devstack.config import PRIVATE_UMASK, StackConfig, StackError, free_port, redact_url
from devstack.private import write_private

# the config field and environment variable of the port each component listens on
_PORT_ENV = {
    "api-server": ("airflow_port", "DRIFTWATCH_AIRFLOW_PORT"),
    "mlflow": ("mlflow_port", "DRIFTWATCH_MLFLOW_PORT"),
    "scheduler": ("worker_log_port", "DRIFTWATCH_WORKER_LOG_PORT"),
    "triggerer": ("trigger_log_port", "DRIFTWATCH_TRIGGER_LOG_PORT"),
}


def pid_file(cfg: StackConfig, name: str) -> Path:
    return cfg.run_dir / f"{name}.pid"


def component_log(cfg: StackConfig, name: str) -> Path:
    """stdout/stderr of a component: <home>/run/<name>.log"""
    return cfg.run_dir / f"{name}.log"


def tail_text(text: str, lines: int = 40) -> str:
    """The last `lines` lines of `text`."""
    return "\n".join(text.rstrip().splitlines()[-lines:])


def tail(path: Path, lines: int = 40) -> str:
    """The last lines of a file ("" when it does not exist)."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 64_000))
            text = fh.read().decode(errors="replace")
    except OSError:
        return ""
    return tail_text(text, lines)


def read_pid(cfg: StackConfig, name: str) -> dict[str, Any] | None:
    """The pid record of a component (None when there is none or it is unreadable)."""
    try:
        record: dict[str, Any] = json.loads(pid_file(cfg, name).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return record


def alive(record: Mapping[str, Any] | None) -> bool:
    """The recorded process still runs (same pid and same start time, so a reused pid does not count)."""
    if not record:
        return False
    try:
        proc = psutil.Process(int(record["pid"]))
        if abs(proc.create_time() - float(record["create_time"])) > 1.0:
            return False
        return proc.status() != psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, psutil.AccessDenied, KeyError, ValueError):
        return False


def running(cfg: StackConfig) -> dict[str, int]:
    """Components of this home whose process is alive: name -> pid."""
    out = {}
    for name in cfg.components:
        record = read_pid(cfg, name)
        if record is not None and alive(record):
            out[name] = int(record["pid"])
    return out


def _port_busy(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return True
    return False


def fingerprint(cfg: StackConfig) -> dict[str, Any]:
    """What a running component was started with and cannot change without a restart (no password)."""
    values: dict[str, Any] = {
        **cfg.ports,
        "mlflow_mode": cfg.mlflow_mode,
        "mlflow_tracking_uri": redact_url(cfg.mlflow_tracking_uri),
        "mlflow_basic_auth": cfg.mlflow_basic_auth,  # a stack started before it was the default has none
        "dags_folder": str(cfg.dags_folder),
    }
    if cfg.executor != "LocalExecutor" or cfg.airflow_db_url or cfg.mlflow_backend_store_uri:
        values.update(
            executor=cfg.executor,
            airflow_db_url=redact_url(cfg.airflow_db_url),
            mlflow_backend_store_uri=redact_url(cfg.mlflow_backend_store_uri),
        )
    return values


def check_same_config(cfg: StackConfig, names: Iterable[str]) -> None:
    """Raises StackError when a running component of `names` was started with another configuration."""
    want = fingerprint(cfg)
    for name in names:
        had = (read_pid(cfg, name) or {}).get("config") or {}
        diff = {k: (had.get(k), v) for k, v in want.items() if had.get(k) != v}
        if diff:
            changes = ", ".join(f"{k}: running {old!r}, asked {new!r}" for k, (old, new) in diff.items())
            raise StackError(
                f"{name} of {cfg.home} is already running with another configuration ({changes}). "
                "Stop the stack first (`make down`), or use the same settings."
            )


def check_ports(cfg: StackConfig, name: str) -> None:
    """Raises StackError, naming the variable to change, when the port `name` listens on is taken."""
    attr, var = _PORT_ENV.get(name, (None, None))
    if attr:
        port = getattr(cfg, attr)
        if _port_busy(port):
            raise StackError(
                f"start {name}: port {port} is already in use by another program. "
                f"Pick a free port: {var}=<port> (e.g. {var}={free_port()})."
            )
    if name in cfg.celery_worker_names and _port_busy(port := cfg.ports[f"{name}-log-server"]):
        raise StackError(
            f"start {name}: its log server port {port} is already in use by another program. "
            f"Pick free ports: StackConfig.celery_log_ports (e.g. ({free_port()},))."
        )


def spawn(cfg: StackConfig, name: str, cmd: Sequence[str], env: Mapping[str, str]) -> dict[str, Any]:
    """Start component `name` as `cmd` detached (own session, umask 077, cwd the home, output appended to
    its log) and write its pid file; returns the pid record.

    Raises:
        StackError: its port is taken (check_ports).
    """
    check_ports(cfg, name)
    log = component_log(cfg, name)
    log.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with os.fdopen(os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab") as out:
        out.write(
            f"\n==== {dt.datetime.now().isoformat(timespec='seconds')} start: {' '.join(cmd)}\n".encode()
        )
        out.flush()
        proc = subprocess.Popen(
            list(cmd),
            env=dict(env),
            cwd=cfg.home,  # a stray relative path (e.g. MLflow's ./mlruns) lands under home, not in the repo
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            umask=PRIVATE_UMASK,
        )
    record = {
        "pid": proc.pid,
        "create_time": psutil.Process(proc.pid).create_time(),
        "cmd": list(cmd),
        "config": fingerprint(cfg),
    }
    write_private(pid_file(cfg, name), json.dumps(record) + "\n")
    return record


def _session_members(leader: int) -> list[int]:
    """Every process of the session `leader` started (task processes set their own process group)."""
    members = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if os.getsid(proc.pid) == leader:
                members.append(proc.pid)
        except OSError:
            continue
    return members


def _signal_all(pids: Iterable[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def _not_zombie(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def stop(
    cfg: StackConfig, *, only: Sequence[str] | None = None, grace: float = 20.0, quiet: bool = False
) -> list[str]:
    """Stop the components started from this home: SIGTERM to each one's whole session, wait, SIGKILL.

    Idempotent: stale or missing pid files are ignored and removed. Returns the names that were running.
    """
    names = list(cfg.components if only is None else only)
    leaders: dict[str, int] = {}
    targets: dict[str, list[int]] = {}
    for name in names:
        record = read_pid(cfg, name)
        if record is not None and alive(record):
            leader = leaders[name] = int(record["pid"])
            pids = {leader, *_session_members(leader)}
            try:
                pids |= {c.pid for c in psutil.Process(leader).children(recursive=True)}
            except psutil.NoSuchProcess:
                pass
            targets[name] = sorted(pids)
    if targets and not quiet:
        print(f"Stopping {', '.join(targets)} ...", flush=True)
    for name, members in targets.items():
        try:
            os.killpg(leaders[name], signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            pass
        _signal_all(members, signal.SIGTERM)
    all_pids = [p for pids in targets.values() for p in pids]
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(psutil.pid_exists(p) and _not_zombie(p) for p in all_pids):
        time.sleep(0.2)
    _signal_all([p for p in all_pids if psutil.pid_exists(p) and _not_zombie(p)], signal.SIGKILL)
    for name in names:
        pid_file(cfg, name).unlink(missing_ok=True)
    return list(targets)


def _trees(cfg: StackConfig) -> Iterable[tuple[str, list[psutil.Process]]]:
    """(component, [its process and every descendant]) for each running component."""
    for name, pid in running(cfg).items():
        try:
            root = psutil.Process(pid)
            yield name, [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue


def listeners(cfg: StackConfig) -> list[dict[str, Any]]:
    """Every TCP socket listening in a running component's process tree:
    [{"component", "pid", "process", "address", "port"}] (IPv4 and IPv6; from /proc through psutil)."""
    out = []
    for name, tree in _trees(cfg):
        for proc in tree:
            try:
                conns = proc.net_connections(kind="inet")
                pname = proc.name()
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            out += [
                {"component": name, "pid": proc.pid, "process": pname, "address": c.laddr.ip,
                 "port": c.laddr.port}
                for c in conns
                if c.status == psutil.CONN_LISTEN
            ]  # fmt: skip
    return out


def memory(cfg: StackConfig) -> dict[str, float]:
    """Memory (MiB) of each running component: PSS summed over its process tree, so pages shared by
    forked workers are counted once (RSS when PSS is not readable)."""
    out = {}
    for name, tree in _trees(cfg):
        total = 0
        for proc in tree:
            try:
                info = proc.memory_full_info()
                total += getattr(info, "pss", info.rss)
            except psutil.AccessDenied:
                total += proc.memory_info().rss
            except psutil.NoSuchProcess:
                pass
        out[name] = total / 2**20
    return out
