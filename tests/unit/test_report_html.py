"""Pages show data as text, never as code (ml/report_html.py, ml/ui.py), without services.

A real Evidently report with script payloads in a category and in a column name: Evidently's own page carries
them raw inside a <script>, ours escapes them, keeps every value, allows only its own four scripts by hash and
sandboxes itself. The plugin's responses (TestClient on ml.ui.app, auth overridden) carry the headers, and
the pages driftwatch writes itself (validation, model monitor, history, the 404 page) render payloads as text.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import re
import typing
from html.parser import HTMLParser

import pytest

from ml import report_html
from ml.exceptions import ReportFormatError

# fastapi.testclient warns on import that it still uses httpx
pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")

DAY = dt.date(2013, 1, 15)
OTHER_DAY = dt.date(2013, 1, 16)
DAG = "retraining_pipeline"


def payload(tag: str) -> str:
    """A script trying every channel the browser test watches, closing a <script> first, plus an <img>."""
    js = (
        f"try{{window.top.__pwned='{tag}'}}catch(e){{}};document.title='PWNED';console.log('PWNED-{tag}');"
        f"alert('PWNED-{tag}')"
    )
    return f"</script><script>{js}</script><img src=x onerror={js}>"


CATEGORY = payload("category")
COLUMN = "gate" + payload("column")


def shown(text: str, tag: str) -> bool:
    """Whether the payload `tag` is in `text` (as it is, or quoted by a repr in a message)."""
    return (
        f"PWNED-{tag}" in text
        and "</script><script>try{window.top.__pwned=" in text
        and "<img src=x onerror=" in text
    )


class Elements(HTMLParser):
    """Start tags, attributes and text of a document; script and style contents are text of their element."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.scripts: list[str] = []
        self.text: list[str] = []
        self._in: str | None = None
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._in = tag

    def handle_endtag(self, tag):
        self._in = None

    def handle_data(self, data):
        if self._in == "script":
            self.scripts.append(data)
        elif self._in != "style":
            self.text.append(data)

    def active(self) -> list[str]:
        """What could run: script/img/iframe/object/embed elements, on* attributes, javascript: URLs."""
        found = [t for t, _ in self.tags if t in ("script", "img", "iframe", "object", "embed", "svg")]
        for tag, attrs in self.tags:
            found += [f"{tag} {k}" for k in attrs if k.startswith("on")]
            found += [
                f"{tag} {k}" for k, v in attrs.items() if v and v.strip().lower().startswith("javascript:")
            ]
        return found


def _strings(value) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (*_strings(k), *_strings(v))]
    if isinstance(value, (list, tuple)):
        return [s for v in value for s in _strings(v)]
    return []


def _directives(csp: str) -> dict[str, list[str]]:
    return {d.split()[0]: d.split()[1:] for d in (p.strip() for p in csp.split(";")) if d}


# ---------------------------------------------------------------------------------------------- Evidently


@pytest.fixture(scope="module")
def snapshot():
    """A small real Evidently report: payloads in a category of 'carrier' and as a column name."""
    import numpy as np
    import pandas as pd
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    rng = np.random.default_rng(1)
    ref = pd.DataFrame(
        {
            "temp": rng.normal(size=300),
            "carrier": rng.choice(["UA", "AA", "B6"], 300),
            COLUMN: rng.choice(["A1", "B2"], 300),
        }
    )
    cur = ref.copy()
    cur.loc[:30, "carrier"] = CATEGORY
    cur.loc[:30, COLUMN] = CATEGORY
    definition = DataDefinition(numerical_columns=["temp"], categorical_columns=["carrier", COLUMN])
    with np.errstate(all="ignore"):
        return Report([DataDriftPreset()]).run(
            current_data=Dataset.from_pandas(cur, data_definition=definition),
            reference_data=Dataset.from_pandas(ref, data_definition=definition),
        )


@pytest.fixture(scope="module")
def raw(snapshot) -> str:
    """Evidently's own page (what snapshot.save_html writes)."""
    return snapshot.get_html_str(as_iframe=False)


@pytest.fixture(scope="module")
def safe(raw) -> str:
    """Our page for the same rendering (Evidently draws new widget ids on every get_html_str)."""
    return report_html.safe_evidently_html(*report_html.parse_evidently_html(raw))


def test_evidently_report_html_renders_the_snapshot_through_evidently(snapshot, safe):
    page = report_html.evidently_report_html(snapshot)
    ids = re.compile(r'"id": "[0-9a-f-]{36}"|"[0-9a-f-]{36}": ')
    assert ids.sub("", page) == ids.sub("", safe)


def test_evidently_alone_writes_the_payloads_raw_into_a_script(raw):
    # the hazard this module exists for; if an Evidently upgrade escapes its data, this test says so
    assert json.dumps(CATEGORY)[1:-1] in raw and json.dumps(COLUMN)[1:-1] in raw  # as json.dumps wrote them
    tags = [t for t, _ in Elements(raw).tags]
    assert "img" in tags and tags.count("script") > 4  # the payloads became elements of the page


def test_our_page_has_only_its_own_four_scripts_and_no_elements_from_the_data(safe, raw):
    page = Elements(safe)
    assert [t for t, _ in page.tags] == [
        "html",
        "head",
        "meta",
        "meta",
        "meta",
        "style",
        "script",
        "body",
        "div",
        "script",
        "script",
        "script",
    ]
    dashboard, graphs = report_html.parse_evidently_html(raw)
    assert page.scripts == [
        report_html.data_script(dashboard, graphs),
        report_html.GLOBAL_SCRIPT,
        report_html._evidently_static()["bundle"],
        report_html.DRAW_SCRIPT,
    ]
    assert safe.lower().count("</script") == 4  # the real closers, none inside a script
    data = page.scripts[0]
    assert not set("<>&\u2028\u2029") & set(data)
    assert "\\u003c/script\\u003e\\u003cscript\\u003e" in data and "\\u003cimg src=x onerror=" in data
    assert "window.drawDashboard(" in safe  # still Evidently's dashboard renderer


def test_our_page_keeps_every_value_of_evidentlys(safe, raw):
    assert report_html.parse_evidently_html(safe) == report_html.parse_evidently_html(raw)
    strings = _strings(report_html.parse_evidently_html(safe))
    assert any(CATEGORY in s for s in strings) and any(COLUMN in s for s in strings)


def test_rendering_is_deterministic_and_old_reports_are_rerendered_the_same(safe, raw):
    page, csp = report_html.evidently_page(raw)  # a report written by Evidently itself (before this change)
    assert page == safe
    assert report_html.evidently_page(safe) == (page, csp)  # ours, re-rendered on serve, unchanged


def test_the_policy_allows_exactly_the_pages_scripts_in_a_sandbox(safe):
    _, csp = report_html.evidently_page(safe)
    d = _directives(csp)
    hashes = {
        "'sha256-" + base64.b64encode(hashlib.sha256(s.encode()).digest()).decode() + "'"
        for s in Elements(safe).scripts
    }
    assert set(d["script-src"]) == hashes and len(hashes) == 4
    assert (
        d["default-src"] == ["'none'"] and d["connect-src"] == ["'none'"] and d["form-action"] == ["'none'"]
    )
    assert d["base-uri"] == ["'none'"] and d["frame-ancestors"] == ["'self'"]
    assert d["sandbox"] == ["allow-scripts"]  # an opaque origin: no cookies, no access to the Airflow UI
    assert "unsafe" not in " ".join(d["script-src"])


def test_script_json_escapes_what_could_end_a_script():
    value = {"a": "</script><!-- <script>&amp;\u2028\u2029", "n": float("nan"), "x": 1.5}
    text = report_html.script_json(value)
    assert not set("<>&\u2028\u2029") & set(text)
    assert json.loads(text)["a"] == value["a"] and "NaN" in text


@pytest.mark.parametrize(
    "text",
    [
        "",
        "<html>report</html>",
        "<script>\n    var metric_a = {};\n    var other_b = {};\n</script>",
        '<script>\n    var metric_a = {};\n    var additional_graphs_metric_a = {"x": </script>;\n',
        "<script>\n    var metric_a = [1];\n    var additional_graphs_metric_a = {};\n</script>",
    ],
)
def test_a_file_in_neither_layout_is_refused(text):
    with pytest.raises(ReportFormatError, match="not an Evidently report"):
        report_html.evidently_page(text)


def test_detect_drift_writes_the_safe_page(settings, flights_frame):
    from ml import drift

    dates = flights_frame["date"]
    reference = flights_frame[(dates >= "2013-01-01") & (dates <= "2013-01-07")][settings.columns]
    current = flights_frame[dates == DAY.isoformat()][settings.columns].reset_index(drop=True)
    current.loc[: len(current) // 50, "carrier"] = CATEGORY
    current.loc[len(current) // 2 : len(current) // 2 + len(current) // 50, "dest"] = payload("dest")
    result = drift.detect_drift(settings, DAY, current=current, reference=reference, render=True)

    page = (settings.report_dir(DAY) / drift.REPORT_FILE).read_text()
    assert result["html_path"] == str(settings.report_dir(DAY) / drift.REPORT_FILE)
    assert CATEGORY not in page and "<img" not in page and page.lower().count("</script") == 4
    assert any(CATEGORY in s for s in _strings(report_html.parse_evidently_html(page)))
    assert report_html.evidently_page(page)[0] == page


# ---------------------------------------------------------------------------------------------- our pages


def test_validation_page_shows_payloads_as_text(settings):
    from ml.validation import Failure, ValidationResult, render_html

    message = f"flights/date=2013-01-16/part-0.parquet: unexpected columns [{COLUMN!r}]"
    result = ValidationResult(
        success=False,
        day=OTHER_DAY.isoformat(),
        rows=900,
        files=[f"part-{CATEGORY}.parquet"],
        failures=[
            Failure(
                file="part-0.parquet",
                column=COLUMN,
                expectation="schema",
                expected="no extra column",
                found=COLUMN,
                message=message,
            )
        ],
        checked=3,
        json_path=None,
        html_path=None,
        expectations=[
            {
                "type": "expect_column_values_to_be_in_set",
                "column": COLUMN,
                "kwargs": {"column": COLUMN, "value_set": [CATEGORY, "UA"]},
                "success": False,
                "observed": f"unexpected: [{CATEGORY!r}]",
                "source": COLUMN,
            }
        ],
    )
    page = Elements(render_html(settings, result))
    assert page.active() == [] and page.scripts == []
    text = "".join(page.text)
    assert shown(text, "column") and shown(text, "category")


def test_monitor_page_shows_payloads_as_text():
    from ml.reports import monitor_page

    bias = {
        "violation": True,
        "reasons": [f"carrier {CATEGORY!r}: gap 0.4"],
        "labels_day": None,
        "columns": {"carrier": {"violation": True, "positive_rate_gap": 0.4}},
        "segments": {"carrier": {"segments": {CATEGORY: {"rows": 60, "positive_prediction_rate": 0.5}}}},
    }
    attribution = {
        "ndcg": 0.5,
        "min_ndcg": 0.9,
        "violation": True,
        "reason": COLUMN,
        "current_rank": [COLUMN],
        "baseline_rank": [COLUMN],
        "importance": {COLUMN: 0.1},
        "baseline_importance": {COLUMN: 0.2},
    }
    html = monitor_page(
        DAY.isoformat(),
        "flights",
        champion_version=2,
        bias=bias,
        attribution=attribution,
        estimated=None,
        realized=None,
        calibration=None,
        labels_note=CATEGORY,
    )
    page = Elements(html)
    assert page.active() == [] and page.scripts == []
    text = "".join(page.text)
    assert shown(text, "column") and shown(text, "category")


def test_history_page_shows_payload_reasons_as_text():
    from ml.reports import history_page

    days = [
        {
            "day": DAY.isoformat(),
            "status": "quarantined",
            "decision": "quarantine",
            "promotion": None,
            "candidate_version": None,
            "reason": f"batch quarantined: unexpected column {COLUMN!r}",
            "promotion_reason": None,
            "error": None,
        },
        {
            "day": OTHER_DAY.isoformat(),
            "status": "accepted",
            "decision": "retrain",
            "promotion": "rejected",
            "candidate_version": 3,
            "reason": "x",
            "promotion_reason": CATEGORY,
            "error": CATEGORY,
        },
    ]
    data = {
        "dataset": "flights",
        "model": "flights-delay",
        "drift_threshold": 0.5,
        "days": days,
        "promotions": [],
    }
    page = Elements(history_page(data, "<svg><text>plot</text></svg>", links={"PNG": "/x.png"}))
    assert page.active() == ["svg"]  # the plot itself, nothing from the data
    text = "".join(page.text)
    assert shown(text, "column") and shown(text, "category")


# ---------------------------------------------------------------------------------------------- served pages


@pytest.fixture
def client(settings, raw, monkeypatch):
    """ml.ui.app with Airflow's auth and DB session overridden: run 'r1' is DAY (every report present, the
    drift report as Evidently itself wrote it), 'r2' is OTHER_DAY (nothing, a quarantine reason quoting a
    payload column), 'r3' a day whose drift.html is not a report."""
    from fastapi.testclient import TestClient

    from ml import ui
    from ml.history import History

    days = {"r1": DAY, "r2": OTHER_DAY, "r3": dt.date(2013, 1, 17)}
    monkeypatch.setattr(ui, "_settings_for_dag", lambda dag_id: settings)
    monkeypatch.setattr(ui, "_logical_day", lambda session, dag_id, run_id: days[run_id])
    session_dependency = typing.get_args(ui.SessionDep)[1].dependency
    overrides = {
        ui.CanReadRuns.dependency: lambda: None,
        ui.CanReadDags.dependency: lambda: None,
        session_dependency: lambda: None,
    }
    monkeypatch.setattr(ui.app, "dependency_overrides", overrides)
    folder = settings.report_dir(DAY)
    folder.mkdir(parents=True)
    (folder / "drift.html").write_text(raw)
    (folder / "validation.html").write_text("<html><body><script>alert(1)</script>old page</body></html>")
    (folder / "model_monitor.html").write_text("<html><body>monitor</body></html>")
    (folder / "drift.json").write_text("{}")
    (folder / "plot.svg").write_text(
        "<svg xmlns='http://www.w3.org/2000/svg'><script>alert(1)</script></svg>"
    )
    broken = settings.report_dir(days["r3"])
    broken.mkdir(parents=True)
    (broken / "drift.html").write_text(f"<script>window.drawDashboard(x)</script>{CATEGORY}")
    (broken / "drift.json").write_text("{}")
    History(settings.history_url).start_day(
        settings.name,
        OTHER_DAY,
        status="quarantined",
        reason=f"batch quarantined: unexpected column {COLUMN!r}",
    )
    with TestClient(ui.app) as c:
        yield c


def _common(response) -> dict[str, list[str]]:
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    return _directives(response.headers["content-security-policy"])


def test_the_drift_tab_frames_the_report_sandboxed(client):
    r = client.get(f"/dags/{DAG}/runs/r1/drift")
    assert r.status_code == 200 and r.headers["content-security-policy"] == report_html.WRAPPER_CSP
    d = _common(r)
    assert d["default-src"] == ["'none'"] and d["frame-src"] == ["'self'"] and "sandbox" not in d
    page = Elements(r.text)
    (frame,) = [a for t, a in page.tags if t == "iframe"]
    assert frame["sandbox"] == "allow-scripts" and frame["src"] == "drift/report"
    assert page.scripts == [] and [t for t, _ in page.tags if t == "script"] == []


def test_the_report_route_serves_an_old_report_rerendered_in_a_sandbox(client, safe):
    r = client.get(f"/dags/{DAG}/runs/r1/drift/report")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert r.text == safe and CATEGORY not in r.text
    d = _common(r)
    assert d["sandbox"] == ["allow-scripts"] and d["connect-src"] == ["'none'"] and len(d["script-src"]) == 4
    served = client.get(f"/reports/{DAG}/date={DAY}/drift.html")  # the same file through the report store
    assert (
        served.text == safe
        and served.headers["content-security-policy"] == r.headers["content-security-policy"]
    )


def test_a_drift_file_that_is_not_a_report_is_not_served(client):
    for path in (f"/dags/{DAG}/runs/r3/drift/report", f"/reports/{DAG}/date=2013-01-17/drift.html"):
        r = client.get(path)
        assert r.status_code == 500 and "cannot be shown" in r.text and CATEGORY not in r.text
        assert _common(r)["sandbox"] == ["allow-same-origin"]


@pytest.mark.parametrize(
    "path",
    [
        f"/dags/{DAG}/runs/r1/validation",
        f"/dags/{DAG}/runs/r1/monitor",
        f"/dags/{DAG}/history",
        f"/dags/{DAG}/history.json",
        f"/reports/{DAG}/date={DAY}/validation.html",
        f"/reports/{DAG}/date={DAY}/plot.svg",
        f"/reports/{DAG}/date={DAY}/drift.json",
        f"/dags/{DAG}/runs/r2/validation",
    ],
)
def test_every_other_response_runs_no_script(client, path):
    r = client.get(path)
    assert r.status_code in (200, 404), (r.status_code, r.text[:300])
    assert r.headers["content-security-policy"] == report_html.PAGE_CSP
    d = _common(r)
    assert d["default-src"] == ["'none'"] and "script-src" not in d
    assert d["sandbox"] == ["allow-same-origin"]  # scripts off even where CSP is not enforced


def test_the_missing_page_quotes_the_reason_as_text(client):
    for route in ("drift", "drift/report", "monitor", "validation"):
        r = client.get(f"/dags/{DAG}/runs/r2/{route}")
        assert r.status_code == 404 and r.headers["content-security-policy"] == report_html.PAGE_CSP
        page = Elements(r.text)
        assert page.active() == [] and shown("".join(page.text), "column")
        assert re.search(r"Status: quarantined\. batch quarantined", r.text)
