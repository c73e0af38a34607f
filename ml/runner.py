"""The daily flow in one process (`driftwatch run-day`, the replay): the steps of `ml.flow` in their declared
order, with Airflow's semantics for the parts the flow uses: a branch skips the steps it did not choose and
what only follows them; a step runs when every step before it succeeded; `all_done` steps run whatever
happened; a failing step's error is kept in the day's row (as the DAG's failure callback does) and fails the
run at `record`. The DAG stays the way to run in production.

Sensors: in one process the days run one after the other, so no earlier day can be unfinished
(`wait_for_earlier_days` is given none), and a day whose batch is not in the lake is `missing`: nothing else
runs (Airflow would wait for it until the sensor's timeout).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from ml import alerts, flow
from ml.day import Day, RunParams
from ml.exceptions import BatchMissingError, StepSkipped

log = logging.getLogger(__name__)


@dataclass
class DayRun:
    """What one day's run did: every step's state (success, skipped, failed, upstream_failed) and output."""

    day: dt.date
    states: dict[str, str] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, BaseException] = field(default_factory=dict)
    cpu_s: dict[str, float] = field(default_factory=dict)  # CPU seconds of each step that ran
    wall_s: dict[str, float] = field(default_factory=dict)  # wall seconds of each step that ran
    missing: bool = False

    @property
    def failed(self) -> list[str]:
        return [step for step, state in self.states.items() if state == "failed"]

    def output(self, step: str) -> Any:
        return self.outputs.get(step)


def run_day(
    dataset: str,
    date: dt.date,
    *,
    run_id: str | None = None,
    params: RunParams | None = None,
    skip: Collection[str] = (),
    send_alerts: bool = True,
) -> DayRun:
    """Run one day's flow in this process.

    Args:
        skip: steps not to run; they count as succeeded without an output (a replay's policy that reads no
            drift signal skips `flow.SIGNAL_STEPS`).
        send_alerts: raise the steps' alerts (once per event, as the DAG's notifiers do).

    Returns the `DayRun`; a step's failure does not raise here (see `DayRun.failed`, `record`'s error).
    """
    day = Day.of(dataset, date, run_id or f"local__{date.isoformat()}", params=params)
    out = DayRun(day.date)
    chosen: dict[str, set[str]] = {}  # branch -> the steps it chose
    for step in flow.steps(day.settings.promotion.approval == "manual"):
        state = _state_before(step, out.states, chosen)
        if state is not None:
            out.states[step.id] = state
            continue
        if step.id in skip or step.kind == "empty":
            out.states[step.id] = "success"
            continue
        cpu, wall = time.process_time(), time.perf_counter()
        try:
            result = _call(step, day, out)
        except StepSkipped as exc:  # nothing to do today (e.g. a promotion not approved)
            out.states[step.id] = "skipped"
            log.info("%s: %s skipped: %s", day, step.id, exc)
            continue
        except Exception as exc:  # noqa: BLE001 - a failed step is a state, as in Airflow
            out.cpu_s[step.id], out.wall_s[step.id] = time.process_time() - cpu, time.perf_counter() - wall
            out.states[step.id], out.errors[step.id] = "failed", exc
            if step.id != "record":
                log.error("%s: %s failed: %s: %s", day, step.id, type(exc).__name__, exc)
                flow.BY_ID["record"].module.on_failure(day, step.id, f"{type(exc).__name__}: {exc}")
            continue
        out.cpu_s[step.id], out.wall_s[step.id] = time.process_time() - cpu, time.perf_counter() - wall
        if step.kind == "sensor" and not result:
            out.missing = True
            log.warning("%s: %s: the day cannot run now; nothing else runs", day, step.id)
            return out
        out.states[step.id], out.outputs[step.id] = "success", result
        if step.kind in ("branch", "approval"):
            nxt = result["next"]
            chosen[step.id] = {nxt} if isinstance(nxt, str) else set(nxt)
        if step.alert and send_alerts:
            _alert(step.alert, day, result)
    return out


def _state_before(step: flow.Step, states: dict[str, str], chosen: dict[str, set[str]]) -> str | None:
    """None when the step runs; else the state it ends in without running (skipped / upstream_failed)."""
    if step.all_done:
        return None
    ups = [states.get(up, "skipped") for up in step.after]
    if any(s in ("failed", "upstream_failed") for s in ups):
        return "upstream_failed"
    if any(s == "skipped" for s in ups):
        return "skipped"
    if any(up in chosen and step.id not in chosen[up] for up in step.after):
        return "skipped"
    return None


def _call(step: flow.Step, day: Day, run: DayRun) -> Any:
    module = step.module
    if step.id == "wait_for_earlier_days":
        return module.run(day, earlier=[], run_type="local")
    if step.id == "record":
        failed = {s: st for s, st in run.states.items() if st not in ("success", "skipped")}
        return module.run(day, failed_tasks=failed)
    return module.run(day, **{arg: run.outputs.get(up) for arg, up in step.reads.items()})


def _alert(kind: str, day: Day, result: dict[str, Any]) -> None:
    alert = alerts.step_alert(day.settings, kind, day.date, result, day.run_id)
    if alert is not None:
        alerts.send_once(day.settings, alert)


def run_day_or_raise(dataset: str, date: dt.date, **kwargs: Any) -> DayRun:
    """`run_day`, raising the first failed step's error (the failure alert sent), or BatchMissingError."""
    out = run_day(dataset, date, **kwargs)
    if out.missing:
        s = Day.of(dataset, date).settings
        raise BatchMissingError(f"{s.partition_dir(out.day)}: no batch for {dataset} on {out.day}")
    if out.failed:
        day = Day.of(dataset, date, kwargs.get("run_id"))
        failed = [str(out.errors[s])[:500] for s in out.failed]
        if kwargs.get("send_alerts", True):
            alerts.send_once(day.settings, alerts.failure_alert(day.settings, day.date, failed, day.run_id))
        raise out.errors[out.failed[0]]
    return out
