"""What the platform has done for a dataset, from the history database (and the registry when reachable)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ml.config import Settings
from ml.history import History


@contextmanager
def _fail_fast_http() -> Iterator[None]:
    """MLflow's HTTP client retries a refused connection for minutes; status must answer in seconds."""
    defaults = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}
    added = [k for k in defaults if k not in os.environ]
    os.environ.update({k: defaults[k] for k in added})
    try:
        yield
    finally:
        for k in added:
            os.environ.pop(k, None)


def status(settings: Settings, *, registry: bool = True) -> dict[str, Any]:
    """Champion and counts.

    The audit log names the champion; the MLflow aliases should mirror it. `alias_drift` lists where they do
    not ([{"alias", "audit", "mlflow", "since", "reason"}]; `driftwatch repair` fixes it).

    Returns: {"dataset", "registered_model", "champion": {"version", "alias_version", "alias_drift",
    "holdout_metrics", "trained_on", "promoted_on"} | None, "last_processed", "days_run", "accepted", "quarantined",
    "drift_days", "retrains", "promotions", "rejections", "bootstrap", "failures"}: retrains, promotions
    and rejections leave out the first champion's training (the bootstrap day), as the replay does.
    """
    h = History(settings.history_url)
    rows = h.days(settings.name)
    champion_events = h.alias_events(settings.name, "champion")
    champion = None
    if champion_events:
        last = max(champion_events, key=lambda e: (e["logical_date"], e["id"]))
        version = last["after_version"]
        model = h.get_model(settings.name, version) or {}
        champion = {
            "version": version,
            "holdout_metrics": model.get("holdout_metrics"),
            "trained_on": model.get("trained_on"),
            "task": settings.task,
            "promoted_on": last["logical_date"],
            "alias_version": None,
        }
        if registry:
            try:
                from ml.promotion import alias_drift, champion_alias

                with _fail_fast_http():
                    champion["alias_version"] = champion_alias(settings)
                    champion["alias_drift"] = alias_drift(settings, h)
            except Exception as exc:  # noqa: BLE001 - status must answer even when MLflow is down
                champion["alias_error"] = f"{type(exc).__name__}: {exc}"[:300]
    held = [
        {
            "name": r["name"],
            "holder": r["holder"],
            "host": r.get("host"),
            "pid": r.get("pid"),
            "since": r["acquired_at"],
        }
        for r in h.locks()
        if r["name"].endswith(f":{settings.name}")
    ]
    return {
        "locks": held,
        "dataset": settings.name,
        "registered_model": settings.registered_model,
        "champion": champion,
        "last_processed": rows[-1]["day"] if rows else None,
        "days_run": len(rows),
        "accepted": sum(r["status"] == "accepted" for r in rows),
        "quarantined": sum(r["status"] == "quarantined" for r in rows),
        "drift_days": sum(bool(r.get("dataset_drift")) for r in rows),
        # as the replay counts them: the first champion's training (the bootstrap) is not a retrain
        "retrains": sum(r.get("decision") == "retrain" for r in rows),
        "promotions": sum(r.get("decision") == "retrain" and r.get("promotion") == "promoted" for r in rows),
        "rejections": sum(r.get("decision") == "retrain" and r.get("promotion") == "rejected" for r in rows),
        "bootstrap": next((r["day"] for r in rows if r.get("decision") == "bootstrap"), None),
        "failures": sum(bool(r.get("error")) for r in rows),
        # the watch of a new champion (ml/tasks/watch_champion.py): the last processed day's judgement
        "watch": {"day": rows[-1]["day"], **rows[-1]["watch"]} if rows and rows[-1].get("watch") else None,
        "rollbacks": sum(r.get("watch_verdict") == "roll_back" for r in rows),
    }


def format_status(st: dict[str, Any]) -> str:
    lines = [f"dataset            {st['dataset']}  (registered model {st['registered_model']})"]
    ch = st["champion"]
    if ch:
        m = ch.get("holdout_metrics") or {}
        auc = m.get("roc_auc")
        lines.append(
            f"champion           version {ch['version']} (trained {ch['trained_on']}, promoted {ch['promoted_on']}"
            + (f", MLflow alias -> v{ch['alias_version']}" if ch.get("alias_version") else "")
            + ")"
        )
        for d in ch.get("alias_drift") or []:
            lines.append(
                f"  WARNING          MLflow alias '{d['alias']}' -> "
                f"{'v' + str(d['mlflow']) if d['mlflow'] is not None else 'nothing'}, but the audit log names "
                f"v{d['audit']} (since {d['since']}): the registry does not mirror the audit log. "
                f"`driftwatch repair` moves it back (the next run does too)"
            )
        if ch.get("alias_error"):
            lines.append(f"  WARNING          MLflow registry not reachable: {ch['alias_error']}")
        if ch.get("task", "binary") != "binary":
            shown = "  ".join(f"{k} {v:.4f}" for k, v in m.items() if isinstance(v, float))
            lines.append(f"  holdout          {shown}  ({m.get('rows')} rows)")
        elif auc is not None:
            lines.append(
                f"  holdout          AUC {auc:.4f}  log loss {m.get('log_loss', float('nan')):.4f}  "
                f"accuracy {m.get('accuracy', float('nan')):.4f}  ({m.get('rows')} rows)"
            )
    else:
        lines.append("champion           none yet")
    for lock in st.get("locks") or []:
        lines.append(
            f"lock               {lock['name']} held by {lock['holder']} (pid {lock['pid']} on "
            f"{lock['host']}, since {lock['since']}; taken over at once if that process is gone)"
        )
    watch = st.get("watch")
    if watch:
        lines.append(f"watch              {watch['day']} ({watch['verdict']}): {watch['reason']}")
    lines += [
        f"last processed     {st['last_processed']}",
        f"days run           {st['days_run']}  (accepted {st['accepted']}, quarantined {st['quarantined']})",
        f"drift days         {st['drift_days']}",
        f"retrains           {st['retrains']}  (promoted {st['promotions']}, rejected {st['rejections']}"
        + (f", rolled back by the watch {st['rollbacks']}" if st.get("rollbacks") else "")
        + (
            f"; the first champion, trained on {st['bootstrap']}, is not counted)"
            if st.get("bootstrap")
            else ")"
        ),
        f"failed runs        {st['failures']}",
    ]
    return "\n".join(lines)
