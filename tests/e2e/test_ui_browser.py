"""The Airflow UI in Debian's headless Chromium (Playwright, no browser download): log in, open the DAG, open a
run's "Drift report" tab and see the Evidently report rendered, open "Model history" and see the plot.

Screenshots are saved to test-artifacts/e2e/ (kept whether the test passes or fails).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from stack_fixtures import DAG_ID, DRIFT_DAY

from ml.config import REPO_ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SHOTS = REPO_ROOT / "test-artifacts" / "e2e"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-dev-shm-usage"]


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Debian's chromium is not installed at {CHROMIUM}: apt-get install chromium (make e2e-deps)")
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def page(browser, pipeline):
    stack, _ = pipeline
    context = browser.new_context(viewport={"width": 1500, "height": 1000})
    context.set_default_timeout(60_000)
    p = context.new_page()
    p.goto(f"{stack.cfg.airflow_url}/")
    p.wait_for_selector("input[name=username], input#username, input[type=text]")
    p.locator("input[name=username], input#username, input[type=text]").first.fill("admin")
    p.locator("input[type=password]").first.fill(stack.cfg.admin_password)
    p.screenshot(path=SHOTS / "01-login.png")
    p.locator("button[type=submit], button:has-text('Sign in'), button:has-text('Login')").first.click()
    p.wait_for_url(lambda url: "/auth/login" not in url and "login" not in url.split("?")[0])
    yield p
    context.close()


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


def _open_run_tab(page, stack, tab: str, route: str):
    """Open the drift day's run page, click a plugin tab, return the tab's iframe."""
    from ml import stack as st

    page.goto(f"{stack.cfg.airflow_url}/dags/{DAG_ID}/runs/{st._q(_run_id(stack, DRIFT_DAY))}")
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
    frame = _open_run_tab(page, pipeline[0], "Drift report", "driftwatch_drift")
    # Evidently renders its widgets client-side: wait for a drawn plotly chart inside the report
    frame.wait_for_selector("svg.main-svg", timeout=90_000)
    assert frame.locator("svg.main-svg").count() > 0
    assert "temp" in frame.content()
    page.wait_for_timeout(1500)
    page.screenshot(path=SHOTS / "03-drift-report-tab.png", full_page=True)


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
