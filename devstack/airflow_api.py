"""Airflow's REST API as the stack's admin, through the official client (apache-airflow-client, the same
version as Airflow): DAGs, runs, task instances, backfills, import errors, health and version.

Results are returned as the JSON the API sends (`dict`s with the API's field names, datetimes as ISO
strings), so callers and tests read them the same way whatever the client's model classes are. Errors
come back as ApiError (the API answered 4xx/5xx) or StackError (nothing answers).
"""

from __future__ import annotations

import datetime as dt
import json as jsonlib
import time
import urllib.parse
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import urllib3

from devstack.config import ADMIN_USER, StackConfig, StackError
from devstack.processes import component_log, tail_text

if TYPE_CHECKING:  # imported where used: the client's ~1 s of imports is not paid by `down` or `clean`
    from airflow_client import client as af

T = TypeVar("T")
_clients: dict[tuple[str, str], af.ApiClient] = {}


class ApiError(StackError):
    """The Airflow REST API answered with an error status."""

    def __init__(self, what: str, status: int, body: str) -> None:
        super().__init__(f"{what}: HTTP {status}: {body[:500]}")
        self.status = status
        self.body = body


def _unreachable(method: str, url: str, exc: Exception) -> StackError:
    return StackError(
        f"{method} {url}: the Airflow API server does not answer ({exc}). Is the stack up? (`make up`)"
    )


def _anonymous(cfg: StackConfig, **settings: Any) -> af.ApiClient:
    """A client without a login, for the endpoints that need none (token, health, version)."""
    from airflow_client import client as af

    return af.ApiClient(af.Configuration(host=cfg.airflow_url, **settings))


def _send(api_client: af.ApiClient, method: str, url: str, body: Any = None, timeout: float = 30.0) -> Any:
    """One request through the client's HTTP pool; the decoded JSON body (None when empty)."""
    headers = {"Accept": "application/json", **api_client.default_headers}
    if body is not None:
        headers["Content-Type"] = "application/json"
    token = api_client.configuration.access_token
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        resp = api_client.call_api(method, url, headers, body, _request_timeout=timeout)
        raw = resp.read()
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise _unreachable(method, url, exc) from None
    if not 200 <= resp.status <= 299:
        raise ApiError(f"{method} {url}", resp.status, raw.decode(errors="replace"))
    return jsonlib.loads(raw) if raw else None


def fetch_token(cfg: StackConfig, *, password: str | None = None) -> str:
    """A bearer token for the admin user (POST /auth/token, SimpleAuthManager's endpoint, which the
    generated client does not cover).

    Raises:
        ApiError: refused (401 for a wrong password).
    """
    body = {"username": ADMIN_USER, "password": cfg.admin_password if password is None else password}
    reply = _send(_anonymous(cfg), "POST", f"{cfg.airflow_url}/auth/token", body)
    return str(reply["access_token"])


def client(cfg: StackConfig, *, refresh: bool = False) -> af.ApiClient:
    """The API client of this stack, logged in as admin; cached per API server and home."""
    from airflow_client import client as af

    key = (cfg.airflow_url, str(cfg.home))
    if refresh or key not in _clients:
        _clients[key] = af.ApiClient(af.Configuration(host=cfg.airflow_url, access_token=fetch_token(cfg)))
    return _clients[key]


def api_token(cfg: StackConfig) -> str:
    """The admin's current bearer token (for requests the client does not make, e.g. a plugin's pages)."""
    return str(client(cfg).configuration.access_token)


def call(cfg: StackConfig, operation: Callable[[af.ApiClient], T], what: str = "Airflow API") -> T:
    """Run `operation(api_client)` as admin; an expired token (401) is renewed once.

    Raises:
        ApiError: the API answered 4xx/5xx (`.status`, `.body`).
        StackError: the API server cannot be reached.
    """
    from airflow_client.client.exceptions import ApiException, UnauthorizedException

    for attempt in (1, 2):
        try:
            return operation(client(cfg, refresh=attempt == 2))
        except UnauthorizedException:
            if attempt == 2:
                raise ApiError(what, 401, "the admin token was refused twice") from None
        except ApiException as exc:
            raise ApiError(what, int(exc.status or 0), str(exc.body or exc.reason)) from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise _unreachable(what, f"at {cfg.airflow_url}", exc) from None
    raise AssertionError("unreachable")


# How long an idempotent write is retried while the API server answers "Database error" (seconds).
DATABASE_BUSY_RETRY_S = 60.0


def is_database_busy(exc: ApiError) -> bool:
    """True for the API server's 500 "Database error": on the embedded SQLite metadata DB, a write whose
    deferred transaction another process (the scheduler) overtook fails at once with "database is locked"
    (the busy timeout does not cover that case; see devstack.launch.airflow_cli_immediate). Transient."""
    return exc.status == 500 and "Database error" in exc.body


def call_idempotent(cfg: StackConfig, operation: Callable[[af.ApiClient], T], what: str) -> T:
    """`call` for a write that may safely be sent again: retried with backoff while the metadata DB is busy
    (is_database_busy), up to DATABASE_BUSY_RETRY_S; any other error is raised at once."""
    deadline = time.monotonic() + DATABASE_BUSY_RETRY_S
    pause = 0.5
    while True:
        try:
            return call(cfg, operation, what)
        except ApiError as exc:
            if not is_database_busy(exc) or time.monotonic() + pause > deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 8.0)


def api(
    cfg: StackConfig,
    method: str,
    path: str,
    json: Any = None,
    *,
    params: Mapping[str, Any] | None = None,
    auth: bool = True,
    timeout: float = 30.0,
) -> Any:
    """Any REST call (`path` like /api/v2/plugins) as admin, or anonymously; returns the decoded JSON body.

    For endpoints this module has no function for (tests use it for plugins, XCom, extra links).

    Raises:
        ApiError: the API answered 4xx/5xx (`.status`, `.body`).
        StackError: the API server cannot be reached.
    """
    url = cfg.airflow_url + path + ("?" + urllib.parse.urlencode(params, doseq=True) if params else "")
    if not auth:
        return _send(_anonymous(cfg), method, url, json, timeout)
    try:
        return _send(client(cfg), method, url, json, timeout)
    except ApiError as exc:
        if exc.status != 401:
            raise
    return _send(client(cfg, refresh=True), method, url, json, timeout)  # expired token: a new one once


def _plain(model: Any) -> dict[str, Any]:
    """A client model as the API's JSON object."""
    return dict(model.model_dump(mode="json", by_alias=True))


def health(cfg: StackConfig) -> dict[str, Any]:
    """GET /api/v2/monitor/health (no login): status and latest heartbeat per Airflow component.

    Raises:
        StackError: the API server does not answer, or answers with an error.
    """
    from airflow_client import client as af
    from airflow_client.client.exceptions import ApiException

    try:
        return _plain(af.MonitorApi(_anonymous(cfg, retries=0)).get_health(_request_timeout=5))
    except ApiException as exc:
        raise ApiError("GET /api/v2/monitor/health", int(exc.status or 0), str(exc.body)) from None
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise _unreachable("GET", f"{cfg.airflow_url}/api/v2/monitor/health", exc) from None


def version(cfg: StackConfig, timeout: float = 3.0) -> str | None:
    """The API server's Airflow version (GET /api/v2/version, no login); None while it does not answer."""
    from airflow_client import client as af
    from airflow_client.client.exceptions import ApiException

    try:
        return str(af.VersionApi(_anonymous(cfg, retries=0)).get_version(_request_timeout=timeout).version)
    except (ApiException, urllib3.exceptions.HTTPError, OSError, ValueError):
        return None


def dag(cfg: StackConfig, dag_id: str) -> dict[str, Any]:
    """GET /api/v2/dags/{dag_id}."""
    from airflow_client import client as af

    return _plain(call(cfg, lambda c: af.DAGApi(c).get_dag(dag_id), f"dag {dag_id}"))


def set_paused(cfg: StackConfig, dag_id: str, paused: bool) -> None:
    """Pause or unpause a DAG (runs of a paused DAG never start)."""
    from airflow_client import client as af

    body = af.DAGPatchBody(is_paused=paused)
    call_idempotent(cfg, lambda c: af.DAGApi(c).patch_dag(dag_id, body), f"patch dag {dag_id}")


def unpause(cfg: StackConfig, dag_id: str) -> None:
    set_paused(cfg, dag_id, False)


def import_errors(cfg: StackConfig) -> list[dict[str, Any]]:
    """The DAG files that fail to import: [{"filename", "stack_trace", ...}]."""
    from airflow_client import client as af

    page = call(cfg, lambda c: af.ImportErrorApi(c).get_import_errors(limit=100), "import errors")
    return [_plain(e) for e in page.import_errors]


def _lists(filters: Mapping[str, Any], *names: str) -> dict[str, Any]:
    """`filters` with the list-valued ones (state, run_type) given as one string made lists."""
    return {k: [v] if k in names and isinstance(v, str) else v for k, v in filters.items()}


def dag_runs(cfg: StackConfig, dag_id: str, **filters: Any) -> list[dict[str, Any]]:
    """All runs of a DAG matching the GET /api/v2/dags/{id}/dagRuns filters (run_type="backfill",
    logical_date_gte="2013-01-01T00:00:00Z", ...), ordered by logical date, every page."""
    from airflow_client import client as af

    runs: list[dict[str, Any]] = []
    query = _lists(filters, "run_type", "state")

    def page(c: af.ApiClient) -> af.DAGRunCollectionResponse:
        return af.DagRunApi(c).get_dag_runs(
            dag_id, limit=100, offset=len(runs), order_by=["logical_date"], **query
        )

    while True:
        found = call(cfg, page, f"runs of {dag_id}")
        runs += [_plain(r) for r in found.dag_runs]
        if not found.dag_runs or len(runs) >= (found.total_entries or 0):
            return runs


def dag_run(cfg: StackConfig, dag_id: str, run_id: str) -> dict[str, Any]:
    """GET /api/v2/dags/{dag_id}/dagRuns/{run_id}."""
    from airflow_client import client as af

    return _plain(call(cfg, lambda c: af.DagRunApi(c).get_dag_run(dag_id, run_id), f"run {run_id}"))


def trigger_run(
    cfg: StackConfig,
    dag_id: str,
    logical_date: dt.datetime,
    conf: Mapping[str, Any],
    run_id: str | None = None,
) -> dict[str, Any]:
    """POST /api/v2/dags/{dag_id}/dagRuns: one run at `logical_date` with `conf`; the run created."""
    from airflow_client import client as af

    # A run id of our own (Airflow's default form) makes the trigger safe to send again: if a "database is
    # locked" answer hid a commit, the retry gets 409 and the run is read back.
    run_id = run_id or f"manual__{logical_date.isoformat()}"
    body = af.TriggerDAGRunPostBody(logical_date=logical_date, conf=dict(conf), dag_run_id=run_id)
    attempts = 0

    def trigger(c: af.ApiClient) -> Any:
        nonlocal attempts
        attempts += 1
        return af.DagRunApi(c).trigger_dag_run(dag_id, body)

    try:
        run = call_idempotent(cfg, trigger, f"trigger {dag_id}")
    except ApiError as exc:
        if exc.status == 409 and attempts > 1:
            return dag_run(cfg, dag_id, run_id)
        raise
    return _plain(run)


def task_instances(cfg: StackConfig, dag_id: str, run_id: str, **filters: Any) -> list[dict[str, Any]]:
    """Task instances of a run (`dag_id` and `run_id` may be "~" for all), e.g. state="failed"."""
    from airflow_client import client as af

    query = _lists(filters, "state")
    page = call(
        cfg,
        lambda c: af.TaskInstanceApi(c).get_task_instances(dag_id, run_id, limit=100, **query),
        f"task instances of {run_id}",
    )
    return [_plain(ti) for ti in page.task_instances]


def task_log_path(
    cfg: StackConfig, dag_id: str, run_id: str, task_id: str, try_number: int, map_index: int = -1
) -> Path:
    """Where Airflow's default log_filename_template puts a task attempt's log."""
    path = cfg.log_dir / f"dag_id={dag_id}" / f"run_id={run_id}" / f"task_id={task_id}"
    if map_index >= 0:
        path = path / f"map_index={map_index}"
    return path / f"attempt={max(1, try_number)}.log"


def failed_tasks(cfg: StackConfig, dag_id: str, run_id: str) -> list[dict[str, Any]]:
    """Failed task instances of a run with their log files: [{"task_id", "try_number", "log"}]."""
    out = []
    for ti in task_instances(cfg, dag_id, run_id, state="failed"):
        try_number = ti.get("try_number") or 1
        log = task_log_path(cfg, dag_id, run_id, ti["task_id"], try_number, ti.get("map_index", -1))
        out.append({"task_id": ti["task_id"], "try_number": ti.get("try_number"), "log": str(log)})
    return out


def backfills(cfg: StackConfig, dag_id: str) -> list[dict[str, Any]]:
    """The backfills of a DAG, newest first: [{"id", "from_date", "to_date", "completed_at", ...}]."""
    from airflow_client import client as af

    page = call(
        cfg,
        lambda c: af.BackfillApi(c).list_backfills(dag_id, limit=100, order_by=["-id"]),
        f"backfills of {dag_id}",
    )
    return [_plain(b) for b in page.backfills]


def cancel_backfill(cfg: StackConfig, backfill_id: int) -> None:
    from airflow_client import client as af

    call(cfg, lambda c: af.BackfillApi(c).cancel_backfill(backfill_id), f"cancel backfill {backfill_id}")


def parse_time(value: str | None) -> dt.datetime | None:
    """An API timestamp ("2013-01-01T00:00:00Z") as an aware datetime; None when missing or unreadable."""
    if not value:
        return None
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def url_segment(value: str) -> str:
    """`value` quoted for one segment of an API or UI path (run ids hold ':' and '+')."""
    return urllib.parse.quote(value, safe="")


def _mentions(filename: str | None, needle: str) -> bool:
    if not filename:
        return False
    try:
        return needle in Path(filename).read_text(errors="replace")
    except OSError:
        return False


def wait_for_dag(cfg: StackConfig, dag_id: str, timeout: float = 120.0) -> dict[str, Any]:
    """Wait until the dag-processor has parsed `dag_id`; returns the DAG.

    Raises:
        StackError: not there within `timeout`, or the file that defines it fails to import; the message
            carries the import errors.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            return dag(cfg, dag_id)
        except ApiError as exc:
            if exc.status != 404:
                raise
        errors = import_errors(cfg)
        # fail fast when the file that mentions the DAG id does not import
        broken = [e for e in errors if _mentions(e.get("filename"), dag_id)]
        if broken or time.monotonic() > deadline:
            shown = broken or errors
            detail = "\n".join(
                f"--- {e.get('filename')}\n{tail_text(e.get('stack_trace') or '', 25)}" for e in shown
            )
            waited = timeout - max(0.0, deadline - time.monotonic())
            raise StackError(
                f"DAG {dag_id!r} is not available in Airflow after {waited:.0f} s "
                f"(dags folder {cfg.dags_folder}). "
                + (
                    f"Import errors:\n{detail}"
                    if shown
                    else f"No import errors; see {component_log(cfg, 'dag-processor')}."
                )
            )
        time.sleep(1.0)
