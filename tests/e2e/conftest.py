"""The browser of the e2e tests: Debian's headless Chromium driven by Playwright (no browser download), and a
logged-in Airflow UI page (`airflow_page(stack)`), one of each per test module: Playwright's sync API keeps an
event loop running in the test process while it is open, and the unit tests that may follow on the same
`make test` worker run their own (asyncio.run refuses to start inside another)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ml.config import REPO_ROOT

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SHOTS = REPO_ROOT / "test-artifacts" / "e2e"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-dev-shm-usage",
]


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(
            f"Debian's chromium is not installed at {CHROMIUM}: apt-get install chromium (make e2e-deps)"
        )
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def airflow_page(browser):
    """`airflow_page(stack, shot=None)` -> a page of a new browser context, logged in to the stack's Airflow UI
    as admin (a screenshot of the login form is saved as `shot` when given). Closed with the module."""
    contexts = []

    def login(stack, shot: str | None = None):
        context = browser.new_context(viewport={"width": 1500, "height": 1000})
        contexts.append(context)
        context.set_default_timeout(60_000)
        p = context.new_page()
        p.goto(f"{stack.cfg.airflow_url}/")
        p.wait_for_selector("input[name=username], input#username, input[type=text]")
        p.locator("input[name=username], input#username, input[type=text]").first.fill("admin")
        p.locator("input[type=password]").first.fill(stack.cfg.admin_password)
        if shot:
            p.screenshot(path=SHOTS / shot)
        p.locator("button[type=submit], button:has-text('Sign in'), button:has-text('Login')").first.click()
        p.wait_for_url(lambda url: "/auth/login" not in url and "login" not in url.split("?")[0])
        return p

    yield login
    for context in contexts:
        context.close()
