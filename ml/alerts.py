"""Alerts: one configurable target, chosen by the dataset YAML's `alerts.target` or else, for every dataset,
DRIFTWATCH_ALERT_TARGET.

    (unset)                  a JSON line per alert in $DRIFTWATCH_HOME/alerts.log (the default)
    file:///abs/path.log     a JSON line per alert in that file
    https://hooks.example/x  the JSON event POSTed to a webhook (Slack/Teams/PagerDuty bridges, ...)
    mailto:ops@example.com   an e-mail through Airflow's SMTP notifier and its `smtp_default` connection
                             (delivered by `ml.airflow_ext.DriftwatchNotifier`; outside Airflow the event
                             falls back to the log file)
    apprise:CONN_ID          Airflow's Apprise provider: the services of the Airflow connection CONN_ID (type
                             apprise; Slack, Teams, Discord, ntfy, e-mail, JSON... one or several), from
                             Airflow's connections in a task, from AIRFLOW_CONN_CONN_ID elsewhere

In the DAG, alerts are raised by Airflow callbacks (`ml.airflow_ext.DriftwatchNotifier`): on a quarantined
batch, on each promotion, on a watch's rollback, on a model-monitor violation and on a failed run; the `record` step alerts when it
had to repair the MLflow aliases; the model server (`driftwatch serve`) alerts when the version its alias names
cannot be served. Each alert is sent once per dataset, day and event (`send_once`, recorded
in the history's dw_alerts table): re-running a day, or a retry, does not send it again. An alert that
cannot be delivered is logged, never raised (alerting must not fail the step that raised it), and is not
marked sent, so the next run of the day tries again.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ml.config import Settings
from ml.exceptions import ConfigError

log = logging.getLogger(__name__)

KINDS = (
    "quarantine",
    "promotion",
    "failure",
    "monitor",
    "registry",
    "serving",
    "novelty",
    "rollback",
    "late",
    "shadow",
)
TARGET_ENV = "DRIFTWATCH_ALERT_TARGET"


def target(settings: Settings, environ: dict[str, str] | None = None) -> tuple[str, str]:
    """The alert target as (scheme, where): ("file", path) | ("webhook", url) | ("mailto", addrs) |
    ("apprise", Airflow connection id). The dataset's `alerts.target` first, then DRIFTWATCH_ALERT_TARGET,
    else the alerts file under the home.

    Raises:
        ConfigError: the target is none of those (naming where it was set).
    """
    if settings.alerts.target:
        return parse_target(str(settings.alerts.target), f"{settings.yaml_path}: alerts.target")
    raw = (os.environ if environ is None else environ).get(TARGET_ENV, "").strip()
    if not raw:
        return "file", str(settings.paths.alerts)
    return parse_target(raw, TARGET_ENV)


def parse_target(raw: str, where: str) -> tuple[str, str]:
    parts = urlsplit(raw.strip())
    if parts.scheme == "file" and parts.netloc in ("", "localhost") and parts.path.startswith("/"):
        return "file", parts.path
    if parts.scheme in ("http", "https") and parts.netloc:
        return "webhook", raw
    if parts.scheme == "mailto" and "@" in parts.path:
        return "mailto", parts.path
    if parts.scheme == "apprise" and re.fullmatch(r"[A-Za-z0-9_.-]+", parts.path or ""):
        return "apprise", parts.path
    raise ConfigError(
        f"{where}: expected file:///absolute/path, http(s)://host/path, mailto:someone@example.com or "
        f"apprise:CONN_ID (an Airflow connection of type apprise). Got {raw!r}."
    )


def event(settings: Settings, kind: str, message: str, **details: Any) -> dict[str, Any]:
    if kind not in KINDS:
        raise ValueError(f"alert kind: expected one of {list(KINDS)}. Got {kind!r}.")
    return {
        "kind": kind,
        "dataset": settings.name,
        "message": message,
        "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        **details,
    }


def _append(path: str | Path, line: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fh.write(line + "\n")


def deliver(settings: Settings, alert: dict[str, Any]) -> str:
    """Send one event to the file or webhook target. Returns where it went ("file:..." / "webhook" /
    "undelivered"). A mailto target is delivered by the Airflow notifier; here it falls back to the file."""
    line = json.dumps(alert, default=str, sort_keys=True)
    log.warning("ALERT %s", line)
    try:
        scheme, where = target(settings)
    except ConfigError as exc:
        log.error("alert not delivered: %s", exc)
        scheme, where = "file", str(settings.paths.alerts)
    if scheme == "mailto":
        scheme, where = "file", str(settings.paths.alerts)
    try:
        if scheme == "apprise":
            if _apprise(where, alert):
                return f"apprise:{where}"
            log.error("alert to apprise:%s not delivered: Apprise reported a failure", where)
            return "undelivered"
        if scheme == "webhook":
            req = urllib.request.Request(
                where, data=line.encode(), headers={"Content-Type": "application/json"}
            )
            urllib.request.urlopen(req, timeout=10).close()  # noqa: S310 - the scheme is checked in target()
            return "webhook"
        _append(where, line)
        return f"file:{where}"
    except Exception as exc:  # noqa: BLE001 - delivery problems are reported, not raised
        log.error(
            "alert to %s %s not delivered: %s", scheme, "(webhook)" if scheme == "webhook" else where, exc
        )
        return "undelivered"


# how an Apprise service shows the alert (its colour / icon): Apprise's notify types
_APPRISE_TYPES = {
    "promotion": "success",
    "failure": "failure",
    "quarantine": "failure",
    "rollback": "failure",
}


def _apprise(conn_id: str, alert: dict[str, Any]) -> bool:
    """Send through Airflow's Apprise provider: the services of the Airflow connection `conn_id` (type
    apprise, extra {"config": {"path": "slack://...", "tag": ...}} or a list of them), in a task from
    Airflow's connections, elsewhere (run-day, the replay) from AIRFLOW_CONN_<ID>. Plain text: a value
    from a batch in the message is never interpreted as markup. True when Apprise reports it delivered."""
    import apprise
    from airflow.providers.apprise.hooks.apprise import AppriseHook

    hook = AppriseHook(apprise_conn_id=conn_id)
    services = apprise.Apprise()
    hook.set_config_from_conn(conn=hook.get_connection(conn_id), apprise_obj=services)
    details = {k: v for k, v in alert.items() if k not in ("message", "kind", "dataset")}
    return bool(
        services.notify(
            title=f"[driftwatch] {alert['dataset']} {alert['kind']}",
            body=f"{alert['message']}\n\n{json.dumps(details, default=str, sort_keys=True)}",
            notify_type=_APPRISE_TYPES.get(alert["kind"], "warning"),
            body_format=apprise.NotifyFormat.TEXT,
        )
    )


def event_key(alert: dict[str, Any]) -> str:
    """What makes an alert the same event on a re-run of its day: the promoted version, the violations, the
    failed steps and their errors, the repaired aliases; never the run id or the time."""
    import hashlib

    kind = alert["kind"]
    if kind in ("quarantine", "novelty", "late"):
        return kind
    if kind in ("promotion", "serving"):
        return f"v{alert.get('version')}"
    if kind == "shadow":
        return f"v{alert.get('version')}-{alert.get('verdict')}"
    if kind == "rollback":
        return f"v{alert.get('rolled_back')}-v{alert.get('version')}"
    what = {
        "monitor": alert.get("violations"),
        "failure": alert.get("failed_tasks"),
        "registry": alert.get("repaired"),
    }.get(kind, alert.get("message"))
    return hashlib.sha256(json.dumps(what, default=str, sort_keys=True).encode()).hexdigest()[:16]


def _claim(
    history: Any, dataset: str, day: str, kind: str, event: str, *, dag_run_id: str | None, message: str
) -> bool:
    """Mark an alert as sent in the history (dw_alerts); False when this day's event was alerted before."""
    import sqlalchemy as sa

    from ml.history import alerts_sent

    try:
        with history.engine.begin() as conn:
            conn.execute(
                alerts_sent.insert().values(
                    dataset=dataset,
                    day=day,
                    kind=kind,
                    event=event,
                    dag_run_id=dag_run_id,
                    message=message[:4000],
                    sent_at=dt.datetime.now(dt.UTC),
                )
            )
    except sa.exc.IntegrityError:
        return False
    return True


def _unclaim(history: Any, dataset: str, day: str, kind: str, event: str) -> None:
    from ml.history import alerts_sent

    with history.engine.begin() as conn:
        conn.execute(
            alerts_sent.delete().where(
                alerts_sent.c.dataset == dataset,
                alerts_sent.c.day == day,
                alerts_sent.c.kind == kind,
                alerts_sent.c.event == event,
            )
        )


def sent(settings: Settings) -> list[dict[str, Any]]:
    """The alerts sent for the dataset (one row per day and event), oldest first."""
    import sqlalchemy as sa

    from ml.history import History, alerts_sent

    with History(settings.history_url).engine.connect() as conn:
        rows = conn.execute(
            sa.select(alerts_sent)
            .where(alerts_sent.c.dataset == settings.name)
            .order_by(alerts_sent.c.sent_at)
        )
        return [dict(r._mapping) for r in rows]


def send_once(settings: Settings, alert: dict[str, Any], deliver_with=None) -> str:
    """Deliver `alert` unless the same event of the same day was alerted before. Returns where it went, or
    "already sent". `deliver_with(alert)` delivers (default: `deliver`); it returns "undelivered" or raises
    when it could not, and then the event is not marked sent."""
    from ml.history import History

    day, key = str(alert.get("day") or "?"), event_key(alert)
    history = History(settings.history_url)
    if not _claim(
        history,
        settings.name,
        day,
        alert["kind"],
        key,
        dag_run_id=alert.get("dag_run_id"),
        message=alert.get("message", ""),
    ):
        log.info(
            "alert not sent again: %s %s %s was alerted before (%s)",
            settings.name,
            day,
            alert["kind"],
            alert.get("message", "")[:200],
        )
        return "already sent"
    try:
        where = (deliver_with or (lambda a: deliver(settings, a)))(alert)
    except BaseException:
        _unclaim(history, settings.name, day, alert["kind"], key)
        raise
    if where == "undelivered":
        _unclaim(history, settings.name, day, alert["kind"], key)
    return where


def notify(settings: Settings, kind: str, message: str, **details: Any) -> dict[str, Any]:
    """Build and deliver one alert (used outside Airflow)."""
    alert = event(settings, kind, message, **details)
    send_once(settings, alert)
    return alert


def quarantine_alert(
    settings: Settings, day: dt.date, result: dict[str, Any], dag_run_id: str | None
) -> dict:
    return event(
        settings,
        "quarantine",
        f"{settings.name} {day}: batch quarantined to {result.get('path')} ({result.get('summary', '')[:300]})",
        day=day.isoformat(),
        path=result.get("path"),
        dag_run_id=dag_run_id,
    )


def promotion_alert(settings: Settings, day: dt.date, result: dict[str, Any], dag_run_id: str | None) -> dict:
    if result.get("shadow"):  # promotion.mode: shadow: the alias `shadow`, not `champion` (ml/shadow.py)
        return event(
            settings,
            "shadow",
            f"{settings.name} {day}: version {result.get('version')} passed the offline gate and scores in shadow "
            f"beside champion {result.get('previous')} from {day + dt.timedelta(days=1)}: {result.get('reason', '')}",
            day=day.isoformat(),
            version=result.get("version"),
            verdict="started",
            dag_run_id=dag_run_id,
        )
    return event(
        settings,
        "promotion",
        f"{settings.name} {day}: version {result.get('version')} is the champion "
        f"(was {result.get('previous')}): {result.get('reason', '')}",
        day=day.isoformat(),
        version=result.get("version"),
        previous=result.get("previous"),
        dag_run_id=dag_run_id,
    )


def monitor_alert(settings: Settings, day: dt.date, result: dict[str, Any], dag_run_id: str | None) -> dict:
    found = result.get("alerts") or []
    return event(
        settings,
        "monitor",
        f"{settings.name} {day}: model monitor violation: " + "; ".join(str(a) for a in found)[:600],
        day=day.isoformat(),
        violations=found,
        report=result.get("report"),
        dag_run_id=dag_run_id,
    )


def novelty_alert(settings: Settings, day: dt.date, result: dict[str, Any], dag_run_id: str | None) -> dict:
    return event(
        settings,
        "novelty",
        f"{settings.name} {day}: values the champion never saw (accepted, not quarantined): "
        + str(result.get("novelty") or "")[:600],
        day=day.isoformat(),
        report=result.get("report"),
        dag_run_id=dag_run_id,
    )


def step_alert(
    settings: Settings, kind: str, day: dt.date, result: dict[str, Any], dag_run_id: str | None
) -> dict | None:
    """The alert a step raises from its return value (`ml.flow.Step.alert`), or None when there is nothing
    to report: a monitor without violations, a batch without novelty (or `validation.novelty: record`)."""
    if kind == "monitor":
        return monitor_alert(settings, day, result, dag_run_id) if result.get("alerts") else None
    if kind == "novelty":
        wanted = settings.validation.novelty in ("alert", "retrain")
        return novelty_alert(settings, day, result, dag_run_id) if wanted and result.get("novelty") else None
    if kind == "quarantine":
        return quarantine_alert(settings, day, result, dag_run_id)
    if kind == "promotion":
        return promotion_alert(settings, day, result, dag_run_id)
    if kind == "rollback":  # the watch step: a rollback, else the end of a shadow test
        if result.get("rolled_back"):
            return rollback_alert(settings, day, result, dag_run_id)
        return shadow_alert(settings, day, result.get("shadow") or {}, dag_run_id)
    raise ValueError(
        f"step alert: expected monitor | novelty | quarantine | promotion | rollback. Got {kind!r}."
    )


def rollback_alert(settings: Settings, day: dt.date, result: dict[str, Any], dag_run_id: str | None) -> dict:
    """The watch rolled a new champion back (ml/tasks/watch_champion.py)."""
    return event(
        settings,
        "rollback",
        f"{settings.name} {day}: version {result.get('champion')} rolled back to {result.get('replaced')}, the "
        f"champion again from {day + dt.timedelta(days=1)}: {result.get('reason', '')}",
        day=day.isoformat(),
        version=result.get("replaced"),
        rolled_back=result.get("champion"),
        dag_run_id=dag_run_id,
    )


def shadow_alert(
    settings: Settings, day: dt.date, shadow: dict[str, Any], dag_run_id: str | None
) -> dict | None:
    """A shadow test ended today (ml/shadow.py): its challenger promoted or rejected; None while it runs."""
    verdict = shadow.get("verdict")
    if verdict not in ("promote", "reject") or not shadow.get("acted"):
        return None
    done = (
        "is the champion from " + str(day + dt.timedelta(days=1)) if verdict == "promote" else "was rejected"
    )
    return event(
        settings,
        "promotion" if verdict == "promote" else "shadow",
        f"{settings.name} {day}: shadow version {shadow.get('version')} {done}: {shadow.get('reason', '')}",
        day=day.isoformat(),
        version=shadow.get("version"),
        previous=shadow.get("champion"),
        verdict=verdict,
        dag_run_id=dag_run_id,
    )


def failure_alert(
    settings: Settings, day: dt.date | None, failed: list[str], dag_run_id: str | None, url: str | None = None
) -> dict:
    when = day.isoformat() if day else "?"
    return event(
        settings,
        "failure",
        f"{settings.name} {when}: run {dag_run_id} failed ({', '.join(failed) or 'see the run'}); "
        "the champion is unchanged unless promote_challenger succeeded",
        day=when,
        failed_tasks=failed,
        dag_run_id=dag_run_id,
        url=url,
    )


def registry_alert(
    settings: Settings, day: dt.date, repaired: list[dict[str, Any]], dag_run_id: str | None
) -> dict:
    parts = [
        f"alias {r['alias']} named {'v' + str(r['mlflow']) if r['mlflow'] is not None else 'nothing'}, "
        f"the audit log v{r['audit']} (since {r['since']})"
        for r in repaired
    ]
    return event(
        settings,
        "registry",
        f"{settings.name} {day}: the MLflow registry did not mirror the audit log and was repaired: "
        + "; ".join(parts)
        + ". An interrupted promotion, or an alias moved outside driftwatch "
        "(change the champion with `driftwatch rollback`, not in the MLflow UI).",
        day=day.isoformat(),
        repaired=repaired,
        dag_run_id=dag_run_id,
    )


def serving_alert(settings: Settings, alias: str, version: int, serving: int | None, error: str) -> dict:
    """The model server cannot serve the version `alias` names (sent once per version and day)."""
    still = f"still serving v{serving}" if serving is not None else "serving nothing"
    return event(
        settings,
        "serving",
        f"{settings.name}: the model server cannot serve v{version} of {settings.registered_model} (alias "
        f"'{alias}'): {error[:400]}; {still}",
        day=dt.datetime.now(dt.UTC).date().isoformat(),
        version=version,
        serving=serving,
        alias=alias,
    )
