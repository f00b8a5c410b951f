"""Playwright + Debian's chromium: the group page's one bar, the demo's total, a job's log as text."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from test_browser import page  # noqa: F401  (the shared chromium page fixture)
from web_fixtures import WebStack

pytestmark = pytest.mark.browser

GROUP_BAR = "[data-jobcast-kind=group] [role=progressbar]"
GROUP_PERCENT = f"Number(document.querySelector('{GROUP_BAR}').getAttribute('aria-valuenow'))"
CHILD_MOVED = "[...document.querySelectorAll('.jobcast-child-fill')].some(f => f.style.width > '0%')"
CHILDREN_DONE = "document.querySelectorAll('[data-jobcast-child][data-jobcast-state=done]').length"


def test_demo_parallel_report_one_bar_to_100_then_the_total(web_stack: WebStack, page: Any) -> None:  # noqa: F811
    page.goto(web_stack.url + "/")
    page.click("text=Parallel report")
    page.wait_for_url(f"{web_stack.url}/groups/*")
    group_id = page.url.rsplit("/", 1)[1]
    assert page.locator("[data-jobcast-child]").count() == 10
    page.wait_for_function(
        f"() => Number(document.querySelector('{GROUP_BAR}').getAttribute('aria-valuenow')) > 0"
    )
    page.wait_for_selector(".jobcast-total", timeout=60_000)  # done: the page shows the results
    assert (
        page.evaluate(f"() => document.querySelector('{GROUP_BAR}').getAttribute('aria-valuenow')") == "100"
    )
    states = page.eval_on_selector_all(
        "[data-jobcast-child]", "rows => rows.map(r => r.dataset.jobcastState)"
    )
    assert states == ["done"] * 10
    group = httpx.get(f"{web_stack.url}/api/groups/{group_id}").json()
    rows = [
        httpx.get(f"{web_stack.url}/api/jobs/{row['id']}").json()["result"]["rows"]
        for row in group["children"]
    ]
    total_row = page.inner_text(".jobcast-total")
    assert str(sum(rows)) in total_row
    assert not page.console_errors and not page.dialogs


def child_error(web_stack: WebStack, job_id: str) -> object:
    """A child's state and error, to show why a group failed."""
    view = httpx.get(f"{web_stack.url}/api/jobs/{job_id}").json()
    return view.get("state"), view.get("attempts"), view.get("error")


def test_group_page_child_bars_follow_and_a_failure_shows(web_stack: WebStack, page: Any) -> None:  # noqa: F811
    args = [{"n": i, "seconds": 1.5, "steps": 6, "fail": i == 2} for i in range(4)]
    group = httpx.post(f"{web_stack.url}/api/groups", json={"task": "step", "args": args}, timeout=10).json()
    page.goto(f"{web_stack.url}/groups/{group['id']}")
    page.wait_for_function(f"() => {CHILD_MOVED}")
    page.wait_for_selector("[data-jobcast-kind=group][data-jobcast-state=failed]", timeout=30_000)
    shown = page.inner_text("[data-jobcast-kind=group] .jobcast-error")
    assert "1 failed" in shown, [child_error(web_stack, row["id"]) for row in group["children"]]
    page.wait_for_function(
        "() => document.querySelectorAll('[data-jobcast-child][data-jobcast-state=done]').length === 3"
    )
    failed = page.locator("[data-jobcast-child][data-jobcast-state=failed]")
    assert failed.count() == 1 and failed.get_attribute("data-jobcast-child") == group["children"][2]["id"]


def test_job_log_is_shown_live_and_escaped(web_stack: WebStack, page: Any) -> None:  # noqa: F811
    say = '<script>window.pwned = 1</script><img src=x onerror="window.pwned = 2">'
    body = {"task": "chatty", "args": {"lines": 8, "seconds": 2.0, "say": say}}
    job = httpx.post(f"{web_stack.url}/api/jobs", json=body, timeout=10).json()
    page.goto(f"{web_stack.url}/jobs/{job['id']}")
    page.wait_for_selector(".jobcast-log-line", timeout=15_000)
    page.wait_for_selector("[data-jobcast-state=done]", timeout=30_000)
    lines = page.eval_on_selector_all(".jobcast-log-line", "els => els.map(e => e.textContent)")
    assert lines == [say] + [f"line {i} <b>&amp;</b>" for i in range(1, 9)]
    assert page.evaluate("() => window.pwned") is None
    assert page.locator(".jobcast-log script, .jobcast-log img, .jobcast-log b").count() == 0
    assert not page.dialogs


def test_cancel_on_the_group_page_cancels_every_unfinished_child(web_stack: WebStack, page: Any) -> None:  # noqa: F811
    args = [{"seconds": 20 + i / 1000, "steps": 200} for i in range(4)]
    group = httpx.post(f"{web_stack.url}/api/groups", json={"task": "slow", "args": args}, timeout=10).json()
    page.goto(f"{web_stack.url}/groups/{group['id']}")
    page.wait_for_selector("[data-jobcast-kind=group][data-jobcast-state=running]")
    page.locator("[data-jobcast-kind=group] .jobcast-cancel").click()
    page.wait_for_selector("[data-jobcast-kind=group][data-jobcast-state=cancelled]", timeout=30_000)
    page.wait_for_function(
        "() => document.querySelectorAll('[data-jobcast-child][data-jobcast-state=cancelled]').length === 4"
    )
    assert page.locator("[data-jobcast-kind=group] .jobcast-cancel").is_disabled()
    children = httpx.get(f"{web_stack.url}/api/groups/{group['id']}").json()["children"]
    states = {httpx.get(f"{web_stack.url}/api/jobs/{row['id']}").json()["state"] for row in children}
    assert states == {"cancelled"}
    assert not page.console_errors and not page.dialogs
