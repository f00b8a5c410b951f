"""Playwright + Debian's chromium: a queued job's page shows its place in line, then its live bar."""

from __future__ import annotations

import os
from typing import Any

import httpx
import pytest
from test_browser import ARTIFACTS, PERCENT, page  # noqa: F401  (page is a fixture)
from web_fixtures import WebStack

pytestmark = pytest.mark.browser

PLACE = "document.querySelector('.jobcast-place').textContent"


def submit(web_stack: WebStack, seconds: float, steps: int) -> str:
    response = httpx.post(
        f"{web_stack.url}/api/jobs", json={"task": "slow", "args": {"seconds": seconds, "steps": steps}}
    )
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def test_queued_job_shows_its_place_then_the_live_bar(web_stack: WebStack, page: Any) -> None:  # noqa: F811
    for seconds in (6.0, 6.1):  # both worker slots busy for a while, reporting progress (so ETAs)
        submit(web_stack, seconds=seconds, steps=60)
    submit(web_stack, seconds=1.0, steps=10)
    job_id = submit(web_stack, seconds=2.0, steps=20)
    view = httpx.get(f"{web_stack.url}/api/jobs/{job_id}").json()
    assert view["state"] == "queued" and view["position"] == 2
    page.goto(f"{web_stack.url}/jobs/{job_id}")
    page.wait_for_function(f"() => /^2nd in line, starts in ~\\d+ s$/.test({PLACE})")
    assert page.locator(".jobcast-state").inner_text() == "Queued"
    os.makedirs(ARTIFACTS, exist_ok=True)
    page.screenshot(path=os.path.join(ARTIFACTS, "queued_page.png"), full_page=True)
    page.wait_for_function(f"() => /^Next in line/.test({PLACE})", timeout=20_000)  # pushed, no reload
    page.wait_for_selector('[data-jobcast-state="running"]', timeout=20_000)
    page.wait_for_function(f"() => {PERCENT} > 0")
    assert page.evaluate(PLACE) == ""  # running: the place is gone, the bar moves
    assert page.dialogs == [] and page.console_errors == []
