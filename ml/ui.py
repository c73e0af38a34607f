"""The pages behind the Airflow UI plugin (plugins/driftwatch_plugin.py), mounted at /driftwatch.

    /driftwatch/dags/{dag_id}/runs/{run_id}/drift        a frame for the run's report    ("Drift report" tab)
    /driftwatch/dags/{dag_id}/runs/{run_id}/drift/report the run's Evidently report (rendered on first view), sandboxed
    /driftwatch/dags/{dag_id}/runs/{run_id}/monitor      bias/attribution/estimates      ("Model monitor" tab)
    /driftwatch/dags/{dag_id}/runs/{run_id}/validation   the run's validation result     ("Validation" tab)
    /driftwatch/dags/{dag_id}/history                     timeline plot + events          ("Model history" tab)
    /driftwatch/dags/{dag_id}/history.png | .json         the same plot as PNG, the series as JSON
    /driftwatch/history                                   every dataset's history         ("Model history" nav)
    /driftwatch/reports/{dag_id}/{path}                   any file of the dataset's report store

Airflow mounts plugin apps without authentication, so every route depends on Airflow's own security
(`requires_access_dag`): a bearer token or the UI's session cookie of a user allowed to read the DAG's runs,
else 401/403. Report files are served only from under `<reports>/<dataset>/`: a path that resolves anywhere
else (`..`, encoded variants, absolute paths, symlinks out) is refused with 404 before any file is opened.

Every page shows data as text, never as code (the UI frames these pages on its own origin, so a script in
one would act with the viewer's session). The pages driftwatch writes escape every value and are served
with a Content-Security-Policy that allows no script at all (`report_html.PAGE_CSP`). The Evidently report
is re-rendered from the stored file with its data escaped (`report_html.evidently_page`; files written by
older versions too) and served under a policy that allows only its own scripts, by hash, in a sandbox with
an opaque origin (`sandbox allow-scripts`: no cookies, no access to the UI, nothing sent anywhere); the
"Drift report" tab is a page of ours framing it with `<iframe sandbox="allow-scripts">`. Every response
carries `X-Content-Type-Options: nosniff` and `Referrer-Policy: no-referrer`.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import sys
import threading
from pathlib import Path, PurePosixPath
from typing import Annotated

from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
from airflow.api_fastapi.common.db.common import SessionDep
from airflow.api_fastapi.core_api.security import requires_access_dag
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response

from ml import report_html, reports
from ml.exceptions import ModelError, ReportFormatError

log = logging.getLogger(__name__)


def _warm_in_api_server(argv: list[str]) -> threading.Thread | None:
    """In the Airflow API server (the process that serves these pages; not the scheduler, the DAG processor
    or a task, which load the plugin too), import Evidently and build one tiny report in the background,
    so that the first Drift report opened renders without paying ~4 s of imports first (~200 MB more)."""
    if "api-server" not in argv or os.environ.get("DRIFTWATCH_UI_WARM", "1") == "0":
        return None
    from ml import warmup

    def warm() -> None:
        try:
            warmup.evidently_report()
        except Exception as exc:  # noqa: BLE001 - only the first report's speed depends on it
            log.warning("driftwatch: Evidently warm-up skipped: %s", exc)

    thread = threading.Thread(target=warm, name="driftwatch-warm-evidently", daemon=True)
    thread.start()
    return thread


_warm_in_api_server(sys.argv)

URL_PREFIX = "/driftwatch"
SERVED_SUFFIXES = {
    ".html": "text/html",
    ".json": "application/json",
    ".png": "image/png",
    ".svg": "image/svg+xml",
}

app = FastAPI(
    title="driftwatch",
    description="driftwatch reports inside the Airflow UI",
    docs_url=None,
    redoc_url=None,
    openapi_url=None,
)


@app.middleware("http")
async def security_headers(request: Request, call_next):
    """Every response (pages, files, errors, 401s): no MIME sniffing, no referrer, and the no-script policy
    unless the route set its own (the Evidently report, the frame around it)."""
    response = await call_next(request)
    for name, value in report_html.COMMON_HEADERS.items():
        response.headers[name] = value
    response.headers.setdefault("Content-Security-Policy", report_html.PAGE_CSP)
    return response


CanReadRuns = Depends(requires_access_dag("GET", DagAccessEntity.RUN))
CanReadDags = Depends(requires_access_dag("GET"))
DagId = Annotated[str, PathParam(max_length=250, pattern=r"^[A-Za-z0-9_.\-]+$")]


def _settings_for_dag(dag_id: str):
    from ml.catalog import dag_specs
    from ml.config import load_settings

    for spec in dag_specs():
        if spec.dag_id == dag_id:
            return load_settings(spec.dataset)
    raise HTTPException(404, f"{dag_id!r} is not a driftwatch DAG")


def _logical_day(session, dag_id: str, run_id: str) -> dt.date:
    from airflow.models.dagrun import DagRun
    from sqlalchemy import select

    logical = session.scalar(
        select(DagRun.logical_date).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id)
    )
    if logical is None:
        raise HTTPException(404, f"{dag_id}: no run {run_id!r} with a logical date")
    return dt.date(logical.year, logical.month, logical.day)


def safe_report_path(root: Path, relative: str) -> Path:
    """`root / relative` when it names a served file inside `root`; HTTPException(404) otherwise.

    Refused before touching the file system: empty, absolute, backslashes, NUL, any `..` or `.` segment
    (after the URL decoding done by the server); then the resolved path (symlinks followed) must still lie
    under the resolved root and be a regular file with a served suffix.
    """
    refuse = HTTPException(404, "no such report")
    if not relative or "\x00" in relative or "\\" in relative or relative.startswith("/"):
        raise refuse
    parts = PurePosixPath(relative).parts
    if any(p in ("..", ".", "") for p in relative.split("/")) or not parts:
        raise refuse
    base = root.resolve()
    target = (base / relative).resolve()
    if not target.is_relative_to(base) or target.suffix not in SERVED_SUFFIXES or not target.is_file():
        raise refuse
    return target


def _missing_page(title: str, text: str, status_code: int = 404) -> HTMLResponse:
    return HTMLResponse(reports.missing_page(title, text), status_code=status_code)


def _day_file(
    dag_id: str, run_id: str, session, name: str, what: str
) -> tuple[Path | None, HTMLResponse | None]:
    """(the day's report file, None), or (None, the page saying why there is none)."""
    s = _settings_for_dag(dag_id)
    day = _logical_day(session, dag_id, run_id)
    path = s.report_dir(day) / name
    if path.is_file():
        return path, None
    from ml.history import History

    row = History(s.history_url).get_day(s.name, day) or {}
    why = row.get("reason") or row.get("error") or "the run has not reached this step yet"
    return None, _missing_page(
        f"No {what} for {s.name} {day}", f"Status: {row.get('status') or 'not run'}. {why}"
    )


def _day_report(dag_id: str, run_id: str, session, name: str, what: str):
    path, missing = _day_file(dag_id, run_id, session, name, what)
    return missing if path is None else FileResponse(path, media_type="text/html")


def _evidently_response(path: Path) -> HTMLResponse:
    """A stored Evidently report, re-rendered with its data escaped, under the report's sandbox policy."""
    try:
        page, csp = report_html.evidently_page(path.read_text(encoding="utf-8", errors="replace"))
    except ReportFormatError as exc:
        log.warning("%s: not served: %s", path, exc)
        return _missing_page("This report cannot be shown", f"{path.name}: {exc}", status_code=500)
    return HTMLResponse(page, headers={"Content-Security-Policy": csp})


@app.get("/dags/{dag_id}/runs/{run_id}/drift", dependencies=[CanReadRuns], response_class=HTMLResponse)
def drift_report(dag_id: DagId, run_id: str, session: SessionDep):
    """The "Drift report" tab: a frame of ours around the report route, sandboxed to scripts only. The
    drift step keeps the day's numbers (drift.json); the report itself is rendered by the framed route."""
    from ml.drift import REPORT_FILE, SUMMARY_FILE

    path, missing = _day_file(dag_id, run_id, session, REPORT_FILE, "drift report")
    if path is None:
        path, missing = _day_file(dag_id, run_id, session, SUMMARY_FILE, "drift report")
    if path is None:
        return missing
    page = report_html.wrapper_page(f"Drift report {dag_id} {run_id}", "drift/report")
    return HTMLResponse(page, headers={"Content-Security-Policy": report_html.WRAPPER_CSP})


@app.get("/dags/{dag_id}/runs/{run_id}/drift/report", dependencies=[CanReadRuns], response_class=HTMLResponse)
def drift_report_document(dag_id: DagId, run_id: str, session: SessionDep):
    """The run's Evidently report itself (framed by `drift_report`; sandboxed by its own headers as well),
    rendered from the kept batch and reference the first time it is asked for, then served from the file."""
    from ml import drift_report as reports_of_drift
    from ml.drift import REPORT_FILE, SUMMARY_FILE
    from ml.history import History

    path, missing = _day_file(dag_id, run_id, session, REPORT_FILE, "drift report")
    if path is not None:
        return _evidently_response(path)
    path, missing = _day_file(dag_id, run_id, session, SUMMARY_FILE, "drift report")
    if path is None:
        return missing
    s = _settings_for_dag(dag_id)
    day = _logical_day(session, dag_id, run_id)
    try:
        rendered = reports_of_drift.render_day(s, History(s.history_url), day)
    except (FileNotFoundError, ModelError) as exc:
        return _missing_page(f"The drift report of {s.name} {day} cannot be rendered", str(exc))
    return _evidently_response(rendered)


@app.get("/dags/{dag_id}/runs/{run_id}/monitor", dependencies=[CanReadRuns], response_class=HTMLResponse)
def monitor_report(dag_id: DagId, run_id: str, session: SessionDep):
    from ml.tasks.monitor_model import HTML

    return _day_report(dag_id, run_id, session, HTML, "model monitor report")


@app.get("/dags/{dag_id}/runs/{run_id}/validation", dependencies=[CanReadRuns], response_class=HTMLResponse)
def validation_report(dag_id: DagId, run_id: str, session: SessionDep):
    from ml.validation import HTML_NAME

    return _day_report(dag_id, run_id, session, HTML_NAME, "validation result")


@app.get("/dags/{dag_id}/history", dependencies=[CanReadRuns], response_class=HTMLResponse)
def dag_history(dag_id: DagId):
    from ml import plots

    s = _settings_for_dag(dag_id)
    links = {
        "PNG": f"{URL_PREFIX}/dags/{dag_id}/history.png",
        "JSON": f"{URL_PREFIX}/dags/{dag_id}/history.json",
    }
    return HTMLResponse(plots.history_html(s, links=links))


@app.get("/dags/{dag_id}/history.png", dependencies=[CanReadRuns])
def dag_history_png(dag_id: DagId):
    from ml import plots

    s = _settings_for_dag(dag_id)
    return Response(plots.render(plots.timeline(s), "png"), media_type="image/png")


@app.get("/dags/{dag_id}/history.json", dependencies=[CanReadRuns])
def dag_history_json(dag_id: DagId):
    from ml import plots

    return JSONResponse(plots.timeline(_settings_for_dag(dag_id)))


@app.get("/history", dependencies=[CanReadDags], response_class=HTMLResponse)
def all_history():
    """The navigation view: the one dataset's page, or every dataset's timeline one under the other."""
    from ml.catalog import dag_specs

    specs = dag_specs()
    if len(specs) == 1:
        return dag_history(specs[0].dag_id)
    from ml import plots
    from ml.config import load_settings

    return HTMLResponse(
        plots.overview_html(
            [(load_settings(sp.dataset), f"{URL_PREFIX}/dags/{sp.dag_id}/history") for sp in specs]
        )
    )


@app.get("/reports/{dag_id}/{relative:path}", dependencies=[CanReadRuns])
def report_file(dag_id: DagId, relative: str):
    """A file of the report store; an Evidently report as on its own route, every other file under the
    no-script policy (an SVG or HTML page of ours runs nothing)."""
    s = _settings_for_dag(dag_id)
    path = safe_report_path(s.paths.reports / s.name, relative)
    if path.suffix == ".html" and report_html.is_evidently_html(
        path.read_text(encoding="utf-8", errors="replace")
    ):
        return _evidently_response(path)
    return FileResponse(path, media_type=SERVED_SUFFIXES[path.suffix])
