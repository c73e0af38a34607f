"""Tag the challenger with the reason it lost and its evidence (the registry's `driftwatch.decision`
= rejected); the champion stays."""

from __future__ import annotations

from typing import TypedDict

from ml import promotion
from ml.day import Day
from ml.tasks import evaluate_challenger, train_challenger


class Output(TypedDict):
    rejected: int
    champion: int | None


def run(day: Day, trained: train_challenger.Output, evaluated: evaluate_challenger.Output) -> Output:
    evaluation = evaluate_challenger.load(evaluated)
    version = int(trained["version"])
    champion = evaluation.get("champion_version")
    promotion.reject(day.settings, version=version, day=day.date, evaluation=evaluation, champion=champion)
    day.record(promotion="rejected", promotion_reason=evaluation["reason"])
    return {"rejected": version, "champion": champion}
