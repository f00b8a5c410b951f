"""Playwright + Debian's chromium: /reports → live progress page → back to the cached report."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from web_fixtures import WebStack

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "artifacts")

PERCENT = "Number(document.querySelector('[role=progressbar]').getAttribute('aria-valuenow'))"

playwright_sync = pytest.importorskip("playwright.sync_api")


@pytest.fixture
def page() -> Iterator[Any]:
    """A fresh headless chromium page; dialogs (alert) are recorded and fail the test."""
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is not installed")
    with playwright_sync.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                     args=["--no-sandbox", "--disable-background-networking"])  # fmt: skip
        try:
            context = browser.new_context()
            new_page = context.new_page()
            new_page.set_default_timeout(15_000)
            new_page.dialogs = []
            new_page.on("dialog", lambda dialog: (new_page.dialogs.append(dialog.message), dialog.dismiss()))
            new_page.console_errors = []
            new_page.on(
                "console", lambda msg: msg.type == "error" and new_page.console_errors.append(msg.text)
            )
            yield new_page
        finally:
            browser.close()


def test_report_progress_page_then_cached_report(web_stack: WebStack, page: Any) -> None:
    path = "/reports/report?region=eu&year=2026&steps=20&step_s=0.15"
    page.goto(web_stack.url + path)
    page.wait_for_url("**/jobs/*")
    bar = page.locator('[role="progressbar"]')
    page.wait_for_function(f"() => {PERCENT} >= 20")
    values = [int(bar.get_attribute("aria-valuenow"))]
    page.wait_for_function(f"() => {PERCENT} > {values[0]}")
    values.append(int(bar.get_attribute("aria-valuenow")))
    assert values[1] > values[0]  # the bar moves
    assert page.locator(".jobcast-state").inner_text() == "Running"
    assert "/ 20" in page.locator(".jobcast-count").inner_text()
    assert "Summed" in page.locator(".jobcast-message").inner_text()
    os.makedirs(ARTIFACTS, exist_ok=True)
    page.screenshot(path=os.path.join(ARTIFACTS, "progress_page.png"), full_page=True)
    page.wait_for_url(web_stack.url + path, timeout=20_000)  # back to next= on done
    assert "Cached result." in page.locator("#report-meta").inner_text()
    assert page.locator("table.result").count() >= 1
    assert page.dialogs == []
    assert page.console_errors == []


def test_cancel_button_and_failure_message(web_stack: WebStack, page: Any) -> None:
    job = httpx.post(
        f"{web_stack.url}/api/jobs", json={"task": "slow", "args": {"seconds": 20, "steps": 200}}
    )
    page.goto(f"{web_stack.url}/jobs/{job.json()['id']}")
    page.wait_for_selector('[data-jobcast-state="running"]')
    page.locator(".jobcast-cancel").click()
    page.wait_for_selector('[data-jobcast-state="cancelled"]')
    assert "cancelled" in page.locator(".jobcast-error").inner_text()
    failing = httpx.post(f"{web_stack.url}/api/jobs", json={"task": "fail", "args": {}})
    page.goto(f"{web_stack.url}/jobs/{failing.json()['id']}")
    page.wait_for_selector('[data-jobcast-state="failed"]')
    assert "ValueError: boom" in page.locator(".jobcast-error").inner_text()
    assert page.console_errors == []


def test_reconnects_after_the_web_server_restarts(web_stack: WebStack, page: Any) -> None:
    job = httpx.post(f"{web_stack.url}/api/jobs", json={"task": "slow", "args": {"seconds": 6, "steps": 60}})
    page.goto(f"{web_stack.url}/jobs/{job.json()['id']}")
    page.wait_for_selector('[data-jobcast-state="running"]')
    web_stack.web.proc.stop()  # the socket drops; the page must say so and keep trying
    page.wait_for_selector(".jobcast-reconnecting")
    assert "reconnecting" in page.locator(".jobcast-connection").inner_text()


def test_feeds_report_renders_untrusted_items_as_text(web_stack: WebStack, page: Any) -> None:
    feeds = "&".join(f"urls={web_stack.url}/demo/feeds/{name}" for name in ("tricky.xml", "python.xml"))
    page.goto(f"{web_stack.url}/reports/feeds?{feeds}")
    page.wait_for_selector("table.result", timeout=20_000)
    assert page.dialogs == []
    assert page.locator('a[href^="javascript"]').count() == 0
    assert page.get_by_text("<img src=x onerror=alert(1)>").count() == 1
    assert page.locator('a[href="https://docs.python.org/3.11/whatsnew/3.11.html"]').count() == 1
