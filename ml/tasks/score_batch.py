"""Score the batch with the serving champion (the one in force after yesterday's run) and store the scores
beside it as `_predictions.parquet`: the day's data capture, read by the monitors and the drift check."""

from __future__ import annotations

from typing import TypedDict

from ml import data as lake
from ml import registry
from ml.day import Day


class Output(TypedDict):
    champion_version: int | None  # None before the first champion: nothing scored
    rows: int
    path: str | None


def run(day: Day) -> Output:
    import pandas as pd

    from ml.train import predict_proba

    s, d = day.settings, day.date
    champion = day.serving_champion()
    if champion is None:
        return {"champion_version": None, "rows": 0, "path": None}
    frame = lake.read_batch(s, d)
    scores = predict_proba(registry.version_model(s, day.history, champion), s, frame)
    out = pd.concat([pd.DataFrame({"row": range(len(frame))}), s.objective.to_frame(scores)], axis=1).assign(
        champion_version=champion
    )
    path = lake.write_predictions(s, d, out)
    return {"champion_version": champion, "rows": len(frame), "path": str(path)}
