"""Who holds a lock and whether it is still alive: the holder's identity (host, pid, the process's start time)
and a heartbeat renewed from a thread. `ml.history.History.lock` uses them so that a lock whose holder died
(kill -9, the out-of-memory killer, a lost worker) is taken over at once instead of after a timeout.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

log = logging.getLogger(__name__)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def process_started(pid: int) -> str | None:
    """When process `pid` started, in clock ticks since boot (Linux /proc), or None where unknown."""
    try:
        stat = open(f"/proc/{pid}/stat").read()  # noqa: SIM115 - one short read
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses: fields after the last ')'
    return stat.rsplit(")", 1)[1].split()[19]


def this_process() -> dict[str, Any]:
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "pid_started": process_started(pid)}


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    return True


def why_dead(row: Any, stale_s: float) -> str | None:
    """Why the holder of a lock row is known to be gone, or None while it may be alive."""
    pid, host = row.get("pid"), row.get("host")
    if pid is not None and host == socket.gethostname():
        if not _pid_exists(int(pid)):
            return f"process {pid} no longer exists"
        started = process_started(int(pid))
        if row.get("pid_started") and started is not None and started != row["pid_started"]:
            return f"process {pid} no longer exists (the pid now belongs to another process)"
        return None
    beat = row.get("heartbeat_at") or row.get("acquired_at")
    if beat is not None:
        if beat.tzinfo is None:  # SQLite returns naive datetimes
            beat = beat.replace(tzinfo=dt.UTC)
        silent = (_now() - beat).total_seconds()
        if silent > stale_s:
            return f"no heartbeat for {silent:.0f} s (lease {stale_s:.0f} s)"
    return None


def describe(row: Any) -> str:
    where = f"pid {row.get('pid')} on {row.get('host')}" if row.get("pid") is not None else "an older release"
    since = row.get("acquired_at")
    since = since.isoformat(timespec="seconds") if isinstance(since, dt.datetime) else since
    return f"{row.get('holder')!r} ({where}, since {since})"


class Heartbeat:
    """Renews a held lock's heartbeat from a daemon thread until stopped (or the process dies)."""

    def __init__(self, eng: Engine, name: str, renew: sa.Update, every_s: float) -> None:
        """`renew`: the UPDATE of the held row (its `heartbeat_at` is set to now at every beat)."""
        import threading

        self._engine, self._name, self._renew, self._every = eng, name, renew, every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lock-heartbeat:{name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            try:
                with self._engine.begin() as conn:
                    conn.execute(self._renew.values(heartbeat_at=_now()))
            except sa.exc.DBAPIError as exc:  # a busy database: the next beat tries again
                log.debug("lock %r: heartbeat not written: %s", self._name, exc)
