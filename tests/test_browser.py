"""Playwright + Debian's chromium: /reports → live progress page → back to the cached report."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from web_fixtures import WebServer, WebStack

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "artifacts")

PERCENT = "Number(document.querySelector('[role=progressbar]').getAttribute('aria-valuenow'))"
BAR = '[data-jobcast-job="{}"]'

playwright_sync = pytest.importorskip("playwright.sync_api")


# Runs before the page's own scripts (Playwright injects it over CDP, so the page's CSP does
# not apply): records every "jobcast:update" a bar emits, with the bar's aria-valuenow.
RECORD_UPDATES = """
window.jobcastUpdates = [];
document.addEventListener("jobcast:update", function (event) {
  var detail = event.detail || {};
  var bar = event.target.querySelector("[role=progressbar]");
  window.jobcastUpdates.push({
    id: event.target.getAttribute("data-jobcast-job"), kind: detail.kind, seq: detail.seq,
    state: detail.state, percent: Number(bar && bar.getAttribute("aria-valuenow"))
  });
});
"""


def instrument(new_page: Any) -> Any:
    """Record dialogs (dismissed), console errors and WebSocket URLs on ``new_page``."""
    new_page.set_default_timeout(15_000)
    new_page.dialogs = []
    new_page.on("dialog", lambda dialog: (new_page.dialogs.append(dialog.message), dialog.dismiss()))
    new_page.console_errors = []
    new_page.on("console", lambda msg: msg.type == "error" and new_page.console_errors.append(msg.text))
    new_page.websockets = []
    new_page.on("websocket", lambda ws: new_page.websockets.append(ws.url))
    new_page.add_init_script(RECORD_UPDATES)
    return new_page


@contextlib.contextmanager
def launched_chromium() -> Iterator[Any]:
    """Debian's chromium, headless, driven by Playwright (the test skips without it)."""
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is not installed")
    with playwright_sync.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                     args=["--no-sandbox", "--disable-background-networking"])  # fmt: skip
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page() -> Iterator[Any]:
    """A fresh headless chromium page; dialogs (alert) are recorded and fail the test."""
    with launched_chromium() as browser:
        yield instrument(browser.new_context().new_page())


def percent(selector: str) -> str:
    """JS: the aria-valuenow (0..100) of the progress bar inside ``selector``."""
    return f"Number(document.querySelector('{selector} [role=progressbar]').getAttribute('aria-valuenow'))"


def updates(page: Any, job_id: str) -> list[dict[str, Any]]:
    """The "jobcast:update" events one bar emitted so far (see RECORD_UPDATES)."""
    return [u for u in page.evaluate("window.jobcastUpdates") if u["id"] == job_id]


def assert_monotonic(seen: list[dict[str, Any]]) -> None:
    """Each update is newer than the last (no repeats) and the bar never goes back."""
    seqs, percents = [u["seq"] for u in seen], [u["percent"] for u in seen]
    assert seqs == sorted(set(seqs)), seqs
    assert percents == sorted(percents), percents


def network_noise(text: str) -> bool:
    """Console errors a browser logs by itself while the server is down."""
    return "ERR_CONNECTION_REFUSED" in text or ("WebSocket connection to" in text and "failed" in text)


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


def test_three_bars_on_one_page_each_reach_their_result(web_stack: WebStack, page: Any) -> None:
    lengths = [(1.5, 15), (3.0, 30), (4.5, 45)]  # 2 workers: the third job waits in the queue
    ids = []
    for seconds, steps in lengths:
        args = {"seconds": seconds, "steps": steps}
        answer = httpx.post(f"{web_stack.url}/api/jobs", json={"task": "slow", "args": args})
        assert answer.status_code == 202, answer.text
        ids.append(answer.json()["id"])
    page.goto(f"{web_stack.url}/bars?" + "&".join(f"id={job_id}" for job_id in ids))
    assert page.locator("[data-jobcast-job] [role=progressbar]").count() == 3
    first, last = BAR.format(ids[0]), BAR.format(ids[2])
    page.wait_for_function(f"() => {percent(first)} >= 50 && {percent(last)} < 100")
    os.makedirs(ARTIFACTS, exist_ok=True)
    page.screenshot(path=os.path.join(ARTIFACTS, "three_bars.png"), full_page=True)
    page.wait_for_selector(f'{first}[data-jobcast-state="done"]')
    # independent: the shortest job is done while the longest one still runs (or waits)
    assert page.evaluate(percent(last)) < 100
    assert page.locator(last).get_attribute("data-jobcast-state") in ("queued", "running")
    for job_id, (_, steps) in zip(ids, lengths, strict=True):
        bar = BAR.format(job_id)
        page.wait_for_selector(f'{bar}[data-jobcast-state="done"]', timeout=10_000)
        assert page.evaluate(percent(bar)) == 100
        assert page.locator(f"{bar} .jobcast-state").inner_text() == "Done"
        assert page.locator(f"{bar} .jobcast-count").inner_text() == f"{steps} / {steps}"
        seen = updates(page, job_id)
        assert_monotonic(seen)
        assert any(0 < u["percent"] < 100 for u in seen), seen  # it moved, not just jumped to done
        assert [u["state"] for u in seen].count("done") == 1
    page.screenshot(path=os.path.join(ARTIFACTS, "three_bars_done.png"), full_page=True)
    assert len(page.websockets) == 3  # one socket per bar, none reopened
    assert page.dialogs == []
    assert page.console_errors == []


def test_bars_page_rejects_bad_ids(web_stack: WebStack) -> None:
    job = httpx.post(f"{web_stack.url}/api/jobs", json={"task": "echo", "args": {}}).json()
    ok = httpx.get(f"{web_stack.url}/bars", params=[("id", job["id"]), ("id", job["id"])])
    assert ok.status_code == 200 and ok.text.count("data-jobcast-job=") == 1  # repeats shown once
    assert "no-store" in ok.headers["cache-control"]
    assert "script-src" not in ok.headers["content-security-policy"]  # default-src 'self' only
    assert "<script>" not in ok.text
    unknown = "A" * 22
    for params in ([("id", job["id"]), ("id", unknown)], [("id", '"><script>x</script>')]):
        answer = httpx.get(f"{web_stack.url}/bars", params=params)
        assert answer.status_code == 404 and answer.json() == {"error": "no such job"}
        assert "<script>" not in answer.text
    assert httpx.get(f"{web_stack.url}/bars").status_code == 400
    too_many = [("id", f"{n:022d}") for n in range(21)]
    assert httpx.get(f"{web_stack.url}/bars", params=too_many).status_code == 400


def test_recovers_from_a_two_second_outage_and_finishes(
    web_stack_fixed_port: WebStack, start_web: Callable[..., WebServer], page: Any
) -> None:
    stack = web_stack_fixed_port
    port = int(stack.url.rsplit(":", 1)[1])
    job_id = httpx.post(
        f"{stack.url}/api/jobs", json={"task": "slow", "args": {"seconds": 12, "steps": 120}}
    ).json()["id"]
    report_path = "/reports/report?region=outage&year=2026&steps=100&step_s=0.12"
    page.goto(f"{stack.url}/jobs/{job_id}")  # no next=: shows the final state
    report = instrument(page.context.new_page())  # next=: goes back to the report
    report.goto(stack.url + report_path)
    report.wait_for_url("**/jobs/*")
    pages = (page, report)
    for tab in pages:
        tab.wait_for_function(f"() => {PERCENT} >= 5")
    before = [tab.evaluate(PERCENT) for tab in pages]
    stack.web.proc.stop()
    for tab in pages:
        tab.wait_for_selector(".jobcast-reconnecting")
    page.screenshot(path=os.path.join(ARTIFACTS, "reconnecting.png"), full_page=True)
    time.sleep(2)  # the deliberate outage: nothing listens on the port for 2 s
    for tab in pages:
        assert tab.locator(".jobcast-reconnecting").count() == 1
        assert "reconnecting" in tab.locator(".jobcast-connection").inner_text()
    stack.web = start_web(port=port)
    for tab, was in zip(pages, before, strict=True):
        # back within the capped back-off (3 s, +20 % jitter) of the server's return
        tab.wait_for_function("() => !document.querySelector('.jobcast-reconnecting')", timeout=5_000)
        assert tab.locator(".jobcast-connection").inner_text() == ""
        now = tab.evaluate(PERCENT)
        # still running, and moving on pushed events from the new server
        tab.wait_for_function(f"() => {PERCENT} > {max(now, was)} && {PERCENT} < 100")
        assert tab.locator("[data-jobcast-state]").get_attribute("data-jobcast-state") == "running"
        resumed = [url for url in tab.websockets if "?after=" in url]
        assert resumed and not resumed[-1].endswith("?after=0"), tab.websockets
    page.wait_for_selector('[data-jobcast-state="done"]')
    assert page.locator(".jobcast-state").inner_text() == "Done"
    assert page.evaluate(PERCENT) == 100
    report.wait_for_url(stack.url + report_path, timeout=20_000)
    assert "Cached result." in report.locator("#report-meta").inner_text()
    assert_monotonic(updates(page, job_id))
    for tab in pages:
        assert tab.dialogs == []
        assert [text for text in tab.console_errors if not network_noise(text)] == []


def test_feeds_report_renders_untrusted_items_as_text(web_stack: WebStack, page: Any) -> None:
    feeds = "&".join(f"urls={web_stack.url}/demo/feeds/{name}" for name in ("tricky.xml", "python.xml"))
    page.goto(f"{web_stack.url}/reports/feeds?{feeds}")
    page.wait_for_selector("table.result", timeout=20_000)
    assert page.dialogs == []
    assert page.locator('a[href^="javascript"]').count() == 0
    assert page.get_by_text("<img src=x onerror=alert(1)>").count() == 1
    assert page.locator('a[href="https://docs.python.org/3.11/whatsnew/3.11.html"]').count() == 1
