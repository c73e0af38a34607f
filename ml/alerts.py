"""Alerts: one configurable target. A JSON line in $DRIFTWATCH_HOME/alerts.log by default; a webhook when
DRIFTWATCH_ALERT_WEBHOOK is set (the JSON is POSTed as is). An alert that cannot be delivered is logged,
never raised: alerting must not fail the step that raised it."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import urllib.request
from typing import Any

from ml.config import Settings

log = logging.getLogger(__name__)


def notify(settings: Settings, kind: str, message: str, **details: Any) -> dict[str, Any]:
    event = {
        "kind": kind,  # quarantine | failure | promotion | rejection
        "dataset": settings.name,
        "message": message,
        "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        **details,
    }
    line = json.dumps(event, default=str)
    log.warning("ALERT %s", line)
    try:
        settings.paths.alerts.parent.mkdir(parents=True, exist_ok=True)
        with settings.paths.alerts.open("a") as fh:
            fh.write(line + "\n")
    except OSError as exc:
        log.error("could not write alert to %s: %s", settings.paths.alerts, exc)
    url = os.environ.get("DRIFTWATCH_ALERT_WEBHOOK")
    if url:
        try:
            req = urllib.request.Request(url, data=line.encode(), headers={"Content-Type": "application/json"})
            urllib.request.urlopen(req, timeout=10).close()
        except Exception as exc:  # noqa: BLE001 - delivery problems are reported, not raised
            log.error("alert webhook failed: %s", exc)
    return event
