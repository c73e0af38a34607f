"""Two models on the same live rows: what the watch of a new champion and a shadow test both compare.

`version_scores` is a version's scores of a day's batch, kept beside it in a file of its own (computed
once; for a challenger in shadow on captured traffic, the scores the model server captured are used when
they cover the day). `labelled_days` gathers, over a window of days, the rows whose labels have arrived
with the serving champion's scores and the other model's on the same rows.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import TYPE_CHECKING, Any

from ml import data as lake
from ml import registry
from ml.day import Day

if TYPE_CHECKING:
    import pandas as pd

    from ml.watch import WatchDay

log = logging.getLogger(__name__)

# the challenger in shadow, scoring the same batch as the champion (ml/shadow.py)
CHALLENGER_FILE = "_challenger_predictions.parquet"


def version_scores(day: Day, on: dt.date, version: int, file: str) -> pd.DataFrame:
    """`version`'s scores of the batch of `on` (the same rows, in the same order, as the champion's
    `_predictions.parquet`), written once to `file` beside the batch."""
    s = day.settings
    found = lake.read_predictions(s, on, file)
    if found is not None and int(found["champion_version"].iloc[0]) == version:
        return found
    import pandas as pd

    frame = lake.read_batch(s, on)
    out = None
    if file == CHALLENGER_FILE and s.captured:
        from ml import capture

        out = capture.shadow_scores(s, on, frame, version)
    if out is None:
        from ml.train import predict_proba

        scores = predict_proba(registry.version_model(s, day.history, version), s, frame)
        out = s.objective.to_frame(scores)
    out = pd.concat([pd.DataFrame({"row": range(len(frame))}), out], axis=1).assign(champion_version=version)
    lake.write_predictions(s, on, out, file)
    return out


def labelled_days(
    day: Day, first: dt.date, last: dt.date, served: int | None, other: int, file: str
) -> tuple[list[WatchDay], bool]:
    """The days of [first, last] up to today whose labels are in, as WatchDay(y, new=the champion that
    served, old=`other`'s scores from `file`), with only the rows whose label has arrived; and whether the
    whole window is in (today is past `last` and its labels are known). `served`: only days served by that
    version (None: any). A quarantined or missing day has no rows."""
    from ml.watch import WatchDay

    s, h, d = day.settings, day.history, day.date
    rows = {r["day"]: r for r in h.days(s.name, until=min(d, last))}
    out = []
    on = first
    while on <= min(d, last):
        row = rows.get(on.isoformat())
        if row and row.get("status") == "accepted" and s.labels_known(on, d):
            champion = lake.read_predictions(s, on)
            if champion is not None and (
                served is None or int(champion["champion_version"].iloc[0]) == served
            ):
                theirs = version_scores(day, on, other, file)
                batch = lake.read_batch(s, on)
                # captured traffic: only the rows whose label has arrived (a lake batch: every row)
                known = batch[s.label].notna().to_numpy() if s.label in batch.columns else None
                if known is not None and known.any():
                    y = lake.model_frame(s, batch[known])[1].to_numpy()
                    mine = s.objective.from_frame(champion)[known]
                    out.append(WatchDay(on.isoformat(), y, mine, s.objective.from_frame(theirs)[known]))
        on += dt.timedelta(days=1)
    return out, d >= last and s.labels_known(last, d)


def as_evidence(judged: Any) -> dict[str, Any]:
    """A judgement's figures as MLflow version tags (`live.*`)."""
    tags: dict[str, Any] = {"live.rows": judged.rows, "live.days": judged.days}
    if judged.ci is not None:
        tags.update(
            {
                "live.gain": judged.ci["delta"],
                "live.ci_low": judged.ci["low"],
                "live.ci_high": judged.ci["high"],
            }
        )
    if judged.mean_new is not None:
        tags.update({"live.challenger": judged.mean_new, "live.champion": judged.mean_old})
    guard = getattr(judged, "guardrail", None)
    if guard is not None:
        tags[f"live.{guard['name']}_change"] = guard["change"]
    return tags
