"""Wait until the day's batch is in the lake: `<lake>/<dataset>/date=YYYY-MM-DD/*.parquet` (or, when the day
is re-run, the copy an earlier run quarantined). The log names the folder it waits for.

A dataset with `source: capture` is served, not delivered: its batch is assembled from the model server's
capture of the day (`date=D/capture.parquet`, ml/capture.py) once the day is over and its capture has
settled (no file newer than `serving.settle_seconds`)."""

from __future__ import annotations

import logging

from ml import capture
from ml import data as lake
from ml.day import Day

log = logging.getLogger(__name__)


def run(day: Day) -> bool:
    """True when the day's partition is in the lake (or was quarantined by an earlier run of the day)."""
    s, d = day.settings, day.date
    folder = s.partition_dir(d)
    if lake.partition_exists(s, d):
        names = ", ".join(p.name for p in lake.batch_files(folder)[:5])
        log.info("%s: batch found in %s (%s)", day, folder, names)
        return True
    if lake.quarantined_files(s, d):
        log.info(
            "%s: no batch in %s, but the day was quarantined by an earlier run: re-checking %s",
            day,
            folder,
            s.quarantine_dir(d),
        )
        return True
    if s.captured:
        settled, why = capture.day_settled(s, d)
        if settled:
            path = capture.assemble_batch(s, d)
            log.info("%s: the capture is complete (%s): batch assembled in %s", day, why, path)
            return path is not None
        log.info("%s: waiting for the day's captured traffic: %s", day, why)
        return False
    log.info("%s: waiting for the day's batch: no *.parquet file in %s yet", day, folder)
    return False
