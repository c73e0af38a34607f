"""The Airflow UI in Debian's headless Chromium (Playwright, no browser download): log in, open the DAG, open a
run's "Drift report" tab and see the Evidently report rendered, open "Model history" and see the plot.

Screenshots are saved to test-artifacts/e2e/ (kept whether the test passes or fails). The browser and the
login are in tests/e2e/conftest.py.
"""

from __future__ import annotations

import datetime as dt
import time

import pytest
from stack_fixtures import DAG_ID, DRIFT_DAY

from ml.config import REPO_ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

SHOTS = REPO_ROOT / "test-artifacts" / "e2e"


@pytest.fixture(scope="module")
def page(airflow_page, pipeline):
    return airflow_page(pipeline[0], shot="01-login.png")


def _run_id(stack, day) -> str:
    for run in stack.runs(DAG_ID):
        if run["logical_date"].startswith(day.isoformat()):
            return run["dag_run_id"]
    raise AssertionError(f"no run for {day}")


def _iframe(page):
    frame_el = page.wait_for_selector("iframe")
    frame = frame_el.content_frame()
    assert frame is not None
    return frame


def report_frame(tab_frame):
    """The Evidently report inside the "Drift report" tab: the tab shows a page of ours framing it."""
    inner = tab_frame.wait_for_selector("iframe#driftwatch-report").content_frame()
    assert inner is not None
    return inner


def _open_run_tab(page, stack, tab: str, route: str, day=DRIFT_DAY):
    """Open the day's run page, click a plugin tab, return the tab's iframe."""
    from devstack import airflow_api

    page.goto(f"{stack.cfg.airflow_url}/dags/{DAG_ID}/runs/{airflow_api.url_segment(_run_id(stack, day))}")
    page.get_by_text(tab, exact=True).first.click()
    page.wait_for_url(lambda url: f"/plugin/{route}" in url)
    return _iframe(page)


def test_dag_page_lists_the_pipeline(page, pipeline):
    stack, _ = pipeline
    page.goto(f"{stack.cfg.airflow_url}/dags/{DAG_ID}")
    page.get_by_text(DAG_ID).first.wait_for()
    page.get_by_text("Model history").first.wait_for()  # the DAG-level tab
    page.screenshot(path=SHOTS / "02-dag.png")


def test_drift_report_tab_renders_the_evidently_report(page, pipeline):
    frame = report_frame(_open_run_tab(page, pipeline[0], "Drift report", "driftwatch_drift"))
    # Evidently renders its widgets client-side: wait for a drawn plotly chart inside the report
    frame.wait_for_selector("svg.main-svg", timeout=90_000)
    assert frame.locator("svg.main-svg").count() > 0
    assert "temp" in frame.content()
    page.wait_for_timeout(1500)
    page.screenshot(path=SHOTS / "03-drift-report-tab.png", full_page=True)


def test_drift_report_tab_of_a_day_never_opened_renders_on_the_first_view(page, pipeline):
    """A monitored day that did not retrain keeps its drift numbers only, and the API server renders the
    report when the tab is first opened. The time from the click to a drawn chart is written to
    test-artifacts/e2e/drift-first-view.txt (docs/benchmarks.md; a measurement, not a pass/fail limit)."""
    stack, settings = pipeline
    kept = sorted(p.parent for p in (settings.paths.reports / settings.name).glob("date=*/drift.json"))
    never = [folder for folder in kept if not (folder / "drift.html").exists()]
    assert never, f"every monitored day's report was rendered already: {kept}"
    day = dt.date.fromisoformat(never[0].name.removeprefix("date="))
    html = never[0] / "drift.html"
    started = time.perf_counter()
    tab = _open_run_tab(page, stack, "Drift report", "driftwatch_drift", day=day)
    frame = report_frame(tab)
    frame.wait_for_selector("svg.main-svg", timeout=90_000)
    seconds = time.perf_counter() - started
    assert html.is_file() and "temp" in frame.content()
    (SHOTS / "drift-first-view.txt").write_text(f"{seconds:.2f} s from the click to a drawn chart\n")
    print(f"Drift report tab of a never-opened day ({day}): {seconds:.2f} s")
    page.screenshot(path=SHOTS / "06-drift-report-first-view.png", full_page=True)


def test_model_monitor_tab_shows_bias_attribution_and_estimates(page, pipeline):
    frame = _open_run_tab(page, pipeline[0], "Model monitor", "driftwatch_monitor")
    frame.get_by_text("Bias drift", exact=False).first.wait_for()
    text = frame.locator("body").inner_text()
    assert "estimated (CBPE)" in text and "nDCG" in text and "JFK" in text
    page.screenshot(path=SHOTS / "05-model-monitor-tab.png", full_page=True)


def test_model_history_nav_view_renders_the_plot(page, pipeline):
    stack, _ = pipeline
    page.goto(f"{stack.cfg.airflow_url}/")
    page.get_by_text("Model history", exact=True).first.click()
    page.wait_for_url(lambda url: "/plugin/driftwatch_history" in url)
    frame = _iframe(page)
    plot = frame.wait_for_selector("#history-plot svg")
    box = plot.bounding_box()
    assert box is not None and box["width"] > 400 and box["height"] > 200
    assert frame.locator("#history-events tbody tr").count() >= 2
    assert "quarantined" in frame.locator("#history-events").inner_text()
    page.screenshot(path=SHOTS / "04-model-history.png", full_page=True)
