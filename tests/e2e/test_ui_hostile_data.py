"""Hostile data in the Airflow UI: script payloads in categorical values and in a column name go through the real
DAG of the shared scenario (stack_fixtures.pipeline) and are shown in Debian's headless Chromium. Nothing may
run on any page, and the Evidently report must still render.

Two more days on the scenario's stack (after every other user of it, since tests/e2e runs last):
    Jan 11  real flights; `carrier` of 2% of the rows and `dest` of another 2% set to payloads: within the
            unseen-category allowance (validation.max_unseen_share 0.05), so the day is validated, scored,
            drift-checked (Evidently report) and monitored (monitoring.bias.min_rows lowered to 10 for the
            two runs, so the payload carrier is a segment of the Model monitor page);
    Jan 12  real flights plus a column whose name is a payload: an extra column, so the batch is quarantined
            and the Validation tab, the history and the "no report" pages quote the name. Its drift.html is
            then replaced by Evidently's own page of a report with payloads (as reports were written before
            driftwatch escaped them), which the plugin must serve re-rendered.

Every payload tries every channel the test watches, independently of any Content-Security-Policy: it sets
`window.top.__pwned` and `window.__pwned`, marks `<html data-pwned>`, sets `document.title`, logs
`PWNED-<tag>` to the console and calls `alert`, once from a `<script>` and once from an `<img onerror>`. The
control (Evidently's own page loaded straight into a tab, not through driftwatch) shows that these
detectors see an execution. The payload x page table is written to test-artifacts/e2e/hostile-data.md.
"""

from __future__ import annotations

import datetime as dt
import json

import pytest
import yaml
from stack_fixtures import DAG_ID

from ml.config import REPO_ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

SHOTS = REPO_ROOT / "test-artifacts" / "e2e"
HOSTILE_DAY = dt.date(2013, 1, 11)
COLUMN_DAY = dt.date(2013, 1, 12)
TAGS = ("carrier", "dest", "column", "legacy")  # legacy: the payloads of Evidently's own (old) page


def payload(tag: str) -> str:
    def js(channel: str) -> str:
        return (
            f"try{{window.top.__pwned='{channel}'}}catch(e){{}};try{{window.__pwned='{channel}'}}catch(e){{}};"
            f"document.documentElement.setAttribute('data-pwned','{channel}');document.title='PWNED';"
            f"console.log('PWNED-{channel}');alert('PWNED-{channel}')"
        )

    # the attribute unquoted (the code has no space): json.dumps would escape a double quote, and the
    # handler would not survive in Evidently's own page
    return f"</script><script>{js(tag)}</script><img src=x onerror={js(tag + '-img')}>"


COLUMN = "gate" + payload("column")


# ---------------------------------------------------------------------------------------------- the days


def _legacy_report() -> str:
    """Evidently's own page (what Snapshot.save_html wrote before driftwatch escaped it) of a small report with
    payloads in a category and a column name."""
    import numpy as np
    import pandas as pd
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    rng = np.random.default_rng(3)
    name = "legacy" + payload("legacy")
    ref = pd.DataFrame(
        {
            "temp": rng.normal(size=300),
            "carrier": rng.choice(["UA", "AA", "B6"], 300),
            name: rng.choice(["A1", "B2"], 300),
        }
    )
    cur = ref.copy()
    cur.loc[:40, ["carrier", name]] = payload("legacy")
    definition = DataDefinition(numerical_columns=["temp"], categorical_columns=["carrier", name])
    with np.errstate(all="ignore"):
        snapshot = Report([DataDriftPreset()]).run(
            current_data=Dataset.from_pandas(cur, data_definition=definition),
            reference_data=Dataset.from_pandas(ref, data_definition=definition),
        )
    return snapshot.get_html_str(as_iframe=False)


@pytest.fixture(scope="module")
def hostile(pipeline, flights_frame):
    """The two hostile days run through the DAG; returns (stack, settings, Evidently's own page)."""
    stack, settings = pipeline
    dataset_yaml = settings.yaml_path
    original = dataset_yaml.read_text()
    raw = yaml.safe_load(original)
    raw["monitoring"]["bias"]["min_rows"] = 10  # tasks load the YAML on every run: this applies to these two
    dataset_yaml.write_text(yaml.safe_dump(raw, sort_keys=False))
    try:
        for day in (HOSTILE_DAY, COLUMN_DAY):
            frame = flights_frame[flights_frame["date"] == day.isoformat()][settings.columns].reset_index(
                drop=True
            )
            if day == HOSTILE_DAY:
                share = len(frame) // 50  # 2% of the rows each
                frame.loc[: share - 1, "carrier"] = payload("carrier")
                frame.loc[len(frame) // 2 : len(frame) // 2 + share - 1, "dest"] = payload("dest")
            else:
                frame[COLUMN] = "x"
            part = stack.lake / "flights" / f"date={day.isoformat()}"
            part.mkdir(parents=True, exist_ok=True)
            frame.to_parquet(part / "part-0.parquet", index=False)
        result = stack.backfill(DAG_ID, HOSTILE_DAY, COLUMN_DAY, timeout=900)
    finally:
        dataset_yaml.write_text(original)
    assert result["failed"] == 0 and result["success"] == 2, (result, stack.failure_report())
    from ml.history import History

    rows = {d: History(settings.history_url).get_day(settings.name, d) for d in (HOSTILE_DAY, COLUMN_DAY)}
    assert rows[HOSTILE_DAY]["status"] == "accepted", rows[HOSTILE_DAY]
    assert rows[COLUMN_DAY]["status"] == "quarantined", rows[COLUMN_DAY]
    # the drift numbers; the report itself only as a retrain's evidence, else rendered when the tab opens
    assert (settings.report_dir(HOSTILE_DAY) / "drift.json").is_file()
    rendered = (settings.report_dir(HOSTILE_DAY) / "drift.html").exists()
    assert rendered == (rows[HOSTILE_DAY]["decision"] == "retrain"), rows[HOSTILE_DAY]
    legacy = _legacy_report()
    (settings.report_dir(COLUMN_DAY) / "drift.html").write_text(legacy)
    return stack, settings, legacy


# ---------------------------------------------------------------------------------------------- watching


class Watch:
    """Every sign of a payload running in a page and its frames, whatever the page's policy."""

    def __init__(self, page):
        self.page = page
        self.dialogs: list[str] = []
        self.console: list[str] = []
        self.violations: list[str] = []
        page.on("dialog", self._dialog)
        page.on("console", self._console)

    def _dialog(self, dialog) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def _console(self, message) -> None:
        if "PWNED" in message.text:
            self.console.append(message.text)
        elif "Content Security Policy" in message.text:
            self.violations.append(message.text[:300])

    def reset(self) -> None:
        self.dialogs.clear()
        self.console.clear()
        self.violations.clear()

    def executions(self) -> dict[str, list[str]]:
        """tag -> the channels through which a payload of that tag ran ("?" when a channel names no tag)."""
        self.page.wait_for_timeout(2000)  # let image errors and timers fire
        hits: dict[str, list[str]] = {}

        def hit(value, channel: str) -> None:
            text = str(value)
            tags = [t for t in TAGS if t in text] or ["?"]
            for tag in tags:
                hits.setdefault(tag, []).append(f"{channel}: {text[:60]}")

        for message in self.dialogs:
            hit(message, "alert")
        for message in self.console:
            hit(message, "console")
        top = self.page.evaluate("() => window.__pwned")
        if top:
            hit(top, "window.top.__pwned")
        for frame in self.page.frames:
            where = frame.url[-40:]
            marks = frame.locator("html[data-pwned]")
            if marks.count():
                hit(marks.first.get_attribute("data-pwned"), f"data-pwned in {where}")
            title = frame.locator("title").first.text_content() if frame.locator("title").count() else ""
            try:
                local = frame.evaluate("() => [document.title, window.__pwned]")
                title, local = f"{title} {local[0]}", local[1]
            except Exception:  # noqa: BLE001 - a sandboxed frame without scripts may refuse evaluation
                local = None
            if title and "PWNED" in title:
                hit(title, f"title of {where}")
            if local:
                hit(local, f"window.__pwned in {where}")
        return hits

    def present(self) -> set[str]:
        """Tags whose payload reached the page (in its text or its data), in any frame."""
        found = set()
        self.seen = []
        for frame in self.page.frames:
            try:
                # through a locator: frame.content() can answer an empty document for a frame without
                # scripts that the UI navigated (the Model history view)
                content = frame.locator("html").first.inner_html(timeout=10_000)
            except Exception as exc:  # noqa: BLE001 - a frame navigating away: its content is gone
                self.seen.append(f"{frame.url}: {exc}"[:300])
                continue
            self.seen.append(f"{frame.url}: {len(content)} chars")
            found |= {t for t in TAGS if f"PWNED-{t}" in content}
        return found


@pytest.fixture(scope="module")
def ui(airflow_page, hostile):
    stack, settings, legacy = hostile
    page = airflow_page(stack)
    return stack, settings, legacy, page, Watch(page)


TABLE: dict[str, dict[str, object]] = {}


def _run_id(stack, day: dt.date) -> str:
    for run in stack.runs(DAG_ID):
        if run["logical_date"].startswith(day.isoformat()):
            return run["dag_run_id"]
    raise AssertionError(f"no run for {day}")


def _tab(ui, day: dt.date, tab: str, route: str):
    """Open the day's run page in the Airflow UI, click a plugin tab, return the tab's frame."""
    from devstack import airflow_api

    stack, _, _, page, watch = ui
    page.goto(f"{stack.cfg.airflow_url}/dags/{DAG_ID}/runs/{airflow_api.url_segment(_run_id(stack, day))}")
    watch.reset()
    page.get_by_text(tab, exact=True).first.click()
    page.wait_for_url(lambda url: f"/plugin/{route}" in url)
    frame = page.wait_for_selector("iframe").content_frame()
    assert frame is not None
    frame.wait_for_load_state()
    return frame


def _report(frame):
    """The Evidently report inside the Drift report tab, once Evidently has drawn it."""
    inner = frame.wait_for_selector("iframe#driftwatch-report").content_frame()
    assert inner is not None
    inner.wait_for_selector("text=Dataset Drift", timeout=90_000)
    return inner


def _record(ui, name: str, expect_present: set[str], shot: str) -> None:
    _, _, _, page, watch = ui
    present = watch.present()
    executed = watch.executions()
    present |= watch.present()
    page.screenshot(path=SHOTS / shot, full_page=True)
    TABLE[name] = {"executed": executed, "present": sorted(present), "csp_reports": len(watch.violations)}
    _write_table()
    assert expect_present <= present, (
        f"{name}: payloads {sorted(expect_present - present)} never reached the page; frames {watch.seen}"
    )
    assert executed == {}, f"{name}: payloads ran: {executed}"


def _write_table() -> None:
    pages = list(TABLE)
    lines = ["| payload | " + " | ".join(pages) + " |", "|---|" + "---|" * len(pages)]
    for tag in (*TAGS, "?"):
        cells = []
        for name in pages:
            row = TABLE[name]
            ran = len(row["executed"].get(tag, []))
            cells.append(f"{ran}" if tag in row["present"] or ran else "–")
        lines.append(f"| {tag} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("Cells: channels through which the payload ran (goal 0); – the payload is not on that page.")
    SHOTS.mkdir(parents=True, exist_ok=True)
    (SHOTS / "hostile-data.md").write_text("\n".join(lines) + "\n")
    (SHOTS / "hostile-data.json").write_text(json.dumps(TABLE, indent=2))


# ---------------------------------------------------------------------------------------------- the pages


def test_the_detectors_see_a_payload_run_on_evidentlys_own_page(browser, hostile):
    """The control: Evidently's own page, loaded straight into a tab without driftwatch, runs the payloads."""
    context = browser.new_context()
    try:
        page = context.new_page()
        watch = Watch(page)
        page.set_content(hostile[2], wait_until="load")
        executed = watch.executions()
        TABLE["control: Evidently's own page, no driftwatch"] = {
            "executed": executed,
            "present": ["legacy"],
            "csp_reports": 0,
        }
        _write_table()
        channels = executed.get("legacy", [])
        assert {"alert", "console", "window.top.__pwned"} <= {c.split(":")[0] for c in channels}, executed
        assert any("-img" in c for c in channels), executed  # the <img onerror> too
    finally:
        context.close()


def test_drift_report_tab_runs_no_payload_and_renders(ui):
    frame = _report(_tab(ui, HOSTILE_DAY, "Drift report", "driftwatch_drift"))
    frame.wait_for_selector("svg.main-svg", timeout=90_000)
    text = frame.locator("body").inner_text()
    assert "Dataset Drift" in text and "carrier" in text and "dest" in text
    _record(ui, "Drift report tab (Jan 11)", {"carrier", "dest"}, "hostile-01-drift.png")


def test_validation_tab_runs_no_payload(ui):
    frame = _tab(ui, HOSTILE_DAY, "Validation", "driftwatch_validation")
    frame.get_by_text("PASSED", exact=False).first.wait_for()
    _record(ui, "Validation tab (Jan 11)", set(), "hostile-02-validation.png")


def test_model_monitor_tab_shows_the_payload_segment_as_text(ui):
    frame = _tab(ui, HOSTILE_DAY, "Model monitor", "driftwatch_monitor")
    frame.get_by_text("Bias drift", exact=False).first.wait_for()
    assert "PWNED-carrier" in frame.locator("body").inner_text()  # the payload carrier, as a segment value
    _record(ui, "Model monitor tab (Jan 11)", {"carrier"}, "hostile-03-monitor.png")


def test_validation_tab_of_the_quarantined_day_shows_the_column_name_as_text(ui):
    frame = _tab(ui, COLUMN_DAY, "Validation", "driftwatch_validation")
    frame.get_by_text("FAILED", exact=False).first.wait_for()
    text = frame.locator("body").inner_text()
    assert "PWNED-column" in text and "<img src=x onerror=" in text
    _record(ui, "Validation tab (Jan 12, quarantined)", {"column"}, "hostile-04-validation-quarantined.png")


def test_the_no_report_page_quotes_the_column_name_as_text(ui):
    frame = _tab(ui, COLUMN_DAY, "Model monitor", "driftwatch_monitor")
    frame.wait_for_selector("#driftwatch-missing")
    assert "PWNED-column" in frame.locator("#driftwatch-missing").inner_text()
    _record(ui, "no-report page (Jan 12 Model monitor)", {"column"}, "hostile-05-missing.png")


def test_an_old_unescaped_report_is_served_rerendered(ui):
    frame = _report(_tab(ui, COLUMN_DAY, "Drift report", "driftwatch_drift"))
    assert "carrier" in frame.locator("body").inner_text()
    _record(ui, "Drift report tab, Evidently's own page stored (Jan 12)", {"legacy"}, "hostile-06-legacy.png")


def test_model_history_runs_no_payload(ui):
    stack, _, _, page, watch = ui
    page.goto(f"{stack.cfg.airflow_url}/")
    watch.reset()
    page.get_by_text("Model history", exact=True).first.click()
    page.wait_for_url(lambda url: "/plugin/driftwatch_history" in url)
    frame = page.wait_for_selector("iframe").content_frame()
    assert frame is not None
    events = frame.wait_for_selector("#history-events")
    assert "PWNED-column" in events.inner_text() and COLUMN_DAY.isoformat() in events.inner_text()
    _record(ui, "Model history (navigation)", {"column"}, "hostile-07-history.png")


def test_the_report_route_opened_directly_is_sandboxed(ui):
    from devstack import airflow_api

    stack, _, _, page, watch = ui
    watch.reset()
    page.goto(
        f"{stack.cfg.airflow_url}/driftwatch/dags/{DAG_ID}/runs/{airflow_api.url_segment(_run_id(stack, HOSTILE_DAY))}"
        "/drift/report"
    )
    page.wait_for_selector("text=Dataset Drift", timeout=90_000)
    # an opaque origin: the report cannot read the UI's storage nor send requests with the viewer's cookies
    assert page.evaluate("() => window.origin") == "null"
    _record(ui, "report route opened directly (Jan 11)", {"carrier", "dest"}, "hostile-08-direct.png")
