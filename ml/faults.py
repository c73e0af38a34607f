"""Crash points for fault-injection tests: kill the running process at a named step, once.

The promotion and the training of a challenger must converge after a crash at any point (a task killed by
the OOM killer, a worker lost, `kill -9`). To prove it on the real scheduler, the code calls
`faults.point("promote.after_audit", dataset)` at each boundary; nothing happens unless DRIFTWATCH_FAULTS
names a folder that holds a file called `<dataset>.<point>` or `<point>`. That file is consumed (renamed to
`*.fired`, atomically, so exactly one process fires) and the process sends itself SIGKILL: no `finally`,
no `atexit`, no callback runs, as with a real kill -9. Disabled (the default) it costs one environment look-up.

Points:
    train.after_run_start     the challenger's MLflow run is RUNNING, nothing registered
    train.before_register     the run is complete (FINISHED), the model version not created yet
    train.after_register      the version exists in the registry, the history does not know it yet
    promote.after_lock        the promotion lock row is written, nothing else
    promote.after_audit       the audit rows and the day's row are committed, MLflow untouched
    promote.after_tags        the version's tags and description are set, the aliases not moved
    promote.after_champion_alias  `champion` moved, `previous` not yet
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from pathlib import Path

ENV = "DRIFTWATCH_FAULTS"
POINTS = (
    "train.after_run_start",
    "train.before_register",
    "train.after_register",
    "promote.after_lock",
    "promote.after_audit",
    "promote.after_tags",
    "promote.after_champion_alias",
)

log = logging.getLogger(__name__)


def point(name: str, dataset: str | None = None) -> None:
    """Kill this process here if the point is armed (see the module docstring)."""
    folder = os.environ.get(ENV)
    if not folder:
        return
    if name not in POINTS:
        raise ValueError(f"faults.point: unknown point {name!r}; expected one of {list(POINTS)}")
    for armed in ([Path(folder) / f"{dataset}.{name}"] if dataset else []) + [Path(folder) / name]:
        try:
            armed.rename(armed.with_name(armed.name + ".fired"))
        except OSError:  # not armed (or another process fired it first)
            continue
        log.error(
            "fault injection: %s armed by %s, killing process %s with SIGKILL", name, armed, os.getpid()
        )
        for handler in logging.getLogger().handlers:
            handler.flush()
        sys.stdout.flush()
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)


def arm(folder: str | Path, name: str, dataset: str | None = None) -> Path:
    """Arm a point (tests): the next process that reaches it is killed."""
    if name not in POINTS:
        raise ValueError(f"faults.arm: unknown point {name!r}; expected one of {list(POINTS)}")
    path = Path(folder) / (f"{dataset}.{name}" if dataset else name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    return path


def fired(folder: str | Path, name: str, dataset: str | None = None) -> bool:
    return (Path(folder) / ((f"{dataset}.{name}" if dataset else name) + ".fired")).exists()
