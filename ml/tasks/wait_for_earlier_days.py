"""Wait while a run of an earlier date of this dataset is queued or running.

Day D is scored by the champion the run of D-1 left, and a challenger of D is trained and evaluated on the
days before it, so D does no model work before the runs of earlier dates finish, whatever created them
(a backfill, a manual trigger, the schedule). `max_active_runs=1` does not order a manual run against a
backfill. One case cannot be waited out: an earlier non-backfill run queued behind this non-backfill run
(it waits for this run's slot); this run then stops at once, saying so.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

from ml.day import Day

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OtherRun:
    run_id: str
    logical_date: dt.date
    state: str  # queued | running
    run_type: str  # backfill | manual | scheduled ...


class DaysOutOfOrderError(RuntimeError):
    """An earlier day's run is queued behind this one and cannot start before it ends."""


def run(day: Day, *, earlier: list[OtherRun], run_type: str) -> bool:
    """True when the day may go on; False (poke again) while an earlier run is unfinished.

    Args:
        earlier: this DAG's runs of earlier logical dates that are queued or running.
        run_type: this run's type.

    Raises:
        DaysOutOfOrderError: an earlier non-backfill run is queued behind this non-backfill run.
    """
    if not earlier:
        log.info("%s: no run of an earlier date is unfinished; the day goes on", day)
        return True
    for r in earlier:
        if r.state == "queued" and r.run_type != "backfill" and run_type != "backfill":
            raise DaysOutOfOrderError(
                f"{day}: the run {r.run_id} of an earlier date ({r.logical_date}) is queued behind this run "
                f"(max_active_runs=1) and days are processed in date order. This run stops so that it can go "
                f"first; clear this run ({day.run_id}) once it has finished."
            )
    names = ", ".join(f"{r.run_id} ({r.state}, logical date {r.logical_date}, {r.run_type})" for r in earlier)
    log.info(
        "%s: waiting for the runs of earlier dates to finish first: %s. Days are processed in date order "
        "(each is scored by the champion the day before left); this sensor pokes again in a while.",
        day,
        names,
    )
    return False
