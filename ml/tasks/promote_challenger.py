"""Move the registry alias `champion` to the challenger and `previous` to the version it replaces: one
transaction in the history (the audit events and the day's row), then the MLflow aliases, tags and
description mirror it; under the dataset's promotion lock, crash-safe (`ml.promotion.promote`). The alert
is raised on success, once per promotion.

With `promotion.mode: shadow` the challenger gets the alias `shadow` instead (ml/shadow.py): it scores
live beside the champion until its live evidence decides (the `watch_champion` step of later days).
The first champion of a dataset has nothing to be compared with: it is promoted at once."""

from __future__ import annotations

from typing import TypedDict

from ml import promotion
from ml.day import Day
from ml.exceptions import ModelError, StepSkipped
from ml.tasks import evaluate_challenger, train_challenger


class Output(TypedDict):
    promoted: bool
    version: int
    previous: int | None
    reason: str
    recorded_before: bool  # an earlier try or run had committed it: nothing new happened
    shadow: bool  # put in shadow (promotion.mode: shadow), not promoted yet
    run_id: str | None
    experiment_id: str | None
    model: str


def run(day: Day, trained: train_challenger.Output, evaluated: evaluate_challenger.Output) -> Output:
    s, version = day.settings, int(trained["version"])
    evaluation = evaluate_challenger.load(evaluated)
    if evaluation.get("challenger_version") != version:
        raise ModelError(f"{day}: the evaluation in {evaluated['evaluation']} is not of version {version}")
    approval = day.row().get("approval")
    if isinstance(approval, dict) and approval.get("version") == version and not approval.get("approved"):
        # promotion.approval: manual, and the reviewer said no (or nobody answered): approve_challenger
        # rejected the challenger already
        raise StepSkipped(f"version {version} was not approved by {approval.get('by')}: the champion stays")
    if (
        isinstance(approval, dict)
        and approval.get("approved")
        and not str(approval.get("by")).startswith("auto")
    ):
        # who approved it, and why, in the audit's reason and the version's description
        said = f": {approval['comment']}" if approval.get("comment") else ""
        evaluation = {**evaluation, "reason": f"{evaluation['reason']}; approved by {approval['by']}{said}"}
    if s.promotion.mode == "shadow" and day.serving_champion() is not None:  # the first champion: at once
        from ml import shadow

        started = shadow.start(day, version, evaluation)
        model = day.history.get_model(s.name, version) or {}
        return {
            "promoted": False,
            "version": version,
            "previous": day.serving_champion(),
            "reason": evaluation["reason"],
            "recorded_before": started["recorded_before"],
            "run_id": model.get("run_id"),
            "experiment_id": model.get("experiment_id"),
            "model": s.registered_model,
            "shadow": True,
        }
    out = promotion.promote(
        s, day.history, version=version, day=day.date, evaluation=evaluation, dag_run_id=day.run_id
    )
    if not out["promoted"]:  # it was the champion already: nothing moved, the day says so
        day.record(
            promotion="promoted",
            promotion_reason=f"version {version} was already the champion; nothing moved",
        )
    model = day.history.get_model(s.name, version) or {}
    return {
        "promoted": bool(out.get("promoted")),
        "version": version,
        "previous": out.get("previous"),
        "reason": evaluation["reason"],
        "recorded_before": bool(out.get("recorded_before")),
        "run_id": model.get("run_id"),
        "experiment_id": model.get("experiment_id"),
        "model": s.registered_model,
        "shadow": False,
    }
