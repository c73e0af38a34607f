"""Move a batch that failed validation to the quarantine area (never delete it) with a `_reason.json`, and
record it; the champion is untouched and the day is never trained on. The alert is raised on success."""

from __future__ import annotations

from typing import TypedDict

from ml import data as lake
from ml.day import Day
from ml.tasks import validate_batch


class Output(TypedDict):
    path: str
    summary: str


def run(day: Day, validated: validate_batch.Output) -> Output:
    s, d = day.settings, day.date
    summary = validated["summary"] or "validation failed"
    if lake.partition_exists(s, d):
        target = lake.quarantine(
            s,
            d,
            {
                "dataset": s.name,
                "day": d.isoformat(),
                "dag_run_id": day.run_id,
                "failures": summary,
                "validation_report": validated["report"],
            },
        )
    else:  # a re-run of a day quarantined before: the evidence is already there
        target = s.quarantine_dir(d)
    day.record(
        status="quarantined", decision="quarantine", reason=f"batch quarantined to {target}: {summary}"[:4000]
    )
    return {"path": str(target), "summary": summary[:1000]}
