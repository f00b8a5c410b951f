"""Playwright + Debian's chromium on /dashboard: sign in, live jobs from the CLI, cancel, retry, start."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from helpers import jobcast
from test_browser import ARTIFACTS, instrument, launched_chromium, network_noise
from web_fixtures import DASHBOARD_TOKEN, WebStack

pytestmark = pytest.mark.browser

pytest.importorskip("playwright.sync_api")

ROW = '[data-job-id="{}"]'


@pytest.fixture
def browser_context() -> Iterator[Any]:
    """A fresh headless chromium context (its tabs share the dashboard's cookie)."""
    with launched_chromium() as browser:
        yield browser.new_context()


def open_dashboard(context: Any, url: str) -> Any:
    """A tab signed in to the dashboard with the form, its feed live; marked to detect reloads."""
    page = instrument(context.new_page())
    page.goto(f"{url}/dashboard")
    page.fill('input[name="token"]', DASHBOARD_TOKEN)
    page.click('button[type="submit"]')
    page.wait_for_selector('#dashboard[data-state="live"]')
    page.evaluate("window.notReloaded = true")
    return page


def cli_submit(base_url: str, task: str, *params: str) -> str:
    """``jobcast submit`` as a real process; the job id it prints."""
    done = subprocess.run(jobcast("submit", task, *params, "--broker", base_url),
                          capture_output=True, text=True, timeout=30, check=True)  # fmt: skip
    return done.stdout.strip()


def real_errors(page: Any) -> list[str]:
    """Console errors, without the 401 of the sign-in form and a browser's network noise."""
    return [text for text in page.console_errors if "401" not in text and not network_noise(text)]


def test_cli_job_appears_live_and_a_dashboard_cancel_reaches_the_job_page(
    dashboard_stack: WebStack, browser_context: Any, base_url: str
) -> None:
    url = dashboard_stack.url
    dashboard = open_dashboard(browser_context, url)
    dashboard.wait_for_function("() => document.querySelector('#fig-workers').textContent === '2'")
    job_id = cli_submit(base_url, "slow", "seconds=30", "steps=300")
    row = ROW.format(job_id)
    dashboard.wait_for_selector(f'#jobs-running {row}[data-state="running"]')  # pushed, no reload
    assert dashboard.locator(f"{row} .dashboard-job-task").inner_text() == "slow"
    bar = f"{row} [role=progressbar]"
    dashboard.wait_for_function(
        f"() => Number(document.querySelector('{bar}').getAttribute('aria-valuenow')) > 1"
    )
    dashboard.wait_for_selector('#queues tr[data-task="slow"]')
    os.makedirs(ARTIFACTS, exist_ok=True)
    dashboard.screenshot(path=os.path.join(ARTIFACTS, "dashboard.png"), full_page=True)
    job_page = instrument(browser_context.new_page())  # the job's own page, in another tab
    job_page.goto(f"{url}/jobs/{job_id}")
    job_page.wait_for_selector('[data-jobcast-state="running"]')
    dashboard.click(f"{row} .dashboard-cancel")
    job_page.wait_for_selector('[data-jobcast-state="cancelled"]')  # pushed to the job page
    assert "cancelled" in job_page.locator(".jobcast-error").inner_text()
    dashboard.wait_for_selector(f'#jobs-finished {row}[data-state="cancelled"]')
    assert dashboard.evaluate("window.notReloaded") is True
    assert httpx.get(f"{url}/api/jobs/{job_id}", timeout=10).json()["state"] == "cancelled"
    for tab in (dashboard, job_page):
        assert tab.dialogs == [] and real_errors(tab) == []


def test_retry_a_failed_job_and_start_one_from_the_dashboard(
    dashboard_stack: WebStack, browser_context: Any, base_url: str
) -> None:
    dashboard = open_dashboard(browser_context, dashboard_stack.url)
    failed_id = cli_submit(base_url, "fail")
    failed_row = ROW.format(failed_id)
    dashboard.wait_for_selector(f'#jobs-failed {failed_row}[data-state="failed"]')
    assert dashboard.locator(f"{failed_row} .dashboard-job-error").inner_text() == "ValueError: boom"
    dashboard.click(f"{failed_row} .dashboard-retry")
    dashboard.wait_for_function("() => /^Retried /.test(document.querySelector('#start-result').textContent)")
    retried_id = dashboard.locator("#start-result").inner_text().rstrip(".").rsplit(" ", 1)[1]
    assert retried_id != failed_id
    dashboard.wait_for_selector(f'#jobs-failed {ROW.format(retried_id)}[data-state="failed"]')  # it ran again
    assert dashboard.locator("#jobs-failed [data-job-id]").count() == 2
    dashboard.fill("#start-task", "echo")
    dashboard.fill("#start-args", '{"started": "from the dashboard"}')
    dashboard.click('#start-form button[type="submit"]')
    dashboard.wait_for_function("() => /^Started /.test(document.querySelector('#start-result').textContent)")
    started_id = dashboard.locator("#start-result").inner_text().rstrip(".").rsplit(" ", 1)[1]
    dashboard.wait_for_selector(f'#jobs-finished {ROW.format(started_id)}[data-state="done"]')
    assert httpx.get(f"{dashboard_stack.url}/api/jobs/{started_id}", timeout=10).json()["result"] == {
        "started": "from the dashboard"
    }
    dashboard.fill("#start-args", "[1, 2]")
    dashboard.click('#start-form button[type="submit"]')
    assert dashboard.locator("#start-result").inner_text() == "Arguments must be a JSON object."
    subprocess.run(
        jobcast("pause", "echo", "--broker", base_url), check=True, timeout=30, capture_output=True
    )
    dashboard.wait_for_selector('#queues tr[data-task="echo"] td:nth-child(4):text("paused")')  # pushed stats
    assert dashboard.evaluate("window.notReloaded") is True
    assert dashboard.dialogs == [] and real_errors(dashboard) == []
