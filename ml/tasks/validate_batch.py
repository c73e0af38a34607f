"""Validate the day's batch (Great Expectations): schema, row count, dates, non-null shares, physical ranges,
categories seen in the champion's training data, duplicate keys, a binary label. Branch: a passing batch
goes on to `score_batch`, a failing one to `quarantine_batch`. Values outside what the champion was trained on
(its ranges, its categories) are novelty, not bad data: recorded and alerted (`validation.novelty`), a drift
signal, quarantined only when the YAML asks. The report is `validation.html`."""

from __future__ import annotations

import logging
import shutil
from typing import Literal, TypedDict

from ml import data as lake
from ml import registry
from ml.day import Day
from ml.exceptions import BatchMissingError

log = logging.getLogger(__name__)


class Output(TypedDict):
    next: Literal["score_batch", "quarantine_batch"]
    ok: bool
    rows: int
    summary: str  # what failed (or passed), naming file, column and expected value
    report: str | None
    champion_version: int | None
    requarantine: bool  # the day's batch was re-checked from the quarantine
    novelty: str | None  # values the champion never saw (not quarantined), one line each


def run(day: Day) -> Output:
    """Validate against the serving champion's reference and the dataset's rules; start the day's row."""
    from ml import validation

    s, d = day.settings, day.date
    champion = day.serving_champion()
    reference = registry.artifact(s, day.history, champion, "reference.parquet") if champion else None
    files = lake.batch_files(s.partition_dir(d))
    from_quarantine = False
    if not files:
        files = lake.quarantined_files(s, d)
        from_quarantine = bool(files)
    if not files:
        raise BatchMissingError(f"{s.partition_dir(d)}: no batch for {s.name} on {d}.")
    result = validation.validate_batch(s, d, reference=reference, files=files)
    if from_quarantine and result.success:
        # quarantined by an earlier run, passing now (rules changed): copied back into the lake so the day is
        # scored and trained on like any accepted day; the quarantined copy stays as evidence
        s.partition_dir(d).mkdir(parents=True, exist_ok=True)
        for f in files:
            shutil.copy2(f, s.partition_dir(d) / f.name)
        log.warning("%s: quarantined batch passes validation now; restored to %s", day, s.partition_dir(d))
    summary = result.summary()[:4000]
    day.history.start_day(
        s.name,
        d,
        status="accepted" if result.success else "invalid",
        rows=result.rows,
        validation=summary,
        champion_version=champion,
        dag_run_id=day.run_id,
        reports={"validation": result.html_path},
    )
    return {
        "next": "score_batch" if result.success else "quarantine_batch",
        "ok": bool(result.success),
        "rows": result.rows,
        "summary": summary,
        "report": result.html_path,
        "champion_version": champion,
        "requarantine": from_quarantine,
        "novelty": result.novelty_summary(),
    }
