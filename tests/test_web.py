"""The web server as a real process (uvicorn on 127.0.0.1:0) with a real broker and workers."""

from __future__ import annotations

import signal
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from helpers import wait_for
from web_fixtures import WebStack

JSON = {"content-type": "application/json"}
UNKNOWN_ID = "A" * 22


def submit(stack: WebStack, task: str, args: dict[str, object], **extra: object) -> httpx.Response:
    return httpx.post(f"{stack.url}/api/jobs", json={"task": task, "args": args, **extra}, timeout=10)


def good_request_works(stack: WebStack) -> None:
    """After a bad request, the next good one still succeeds."""
    response = submit(stack, "echo", {"still": "works"})
    assert response.status_code in (200, 202), response.text


def test_submit_then_status_then_cached(web_stack: WebStack) -> None:
    response = submit(web_stack, "echo", {"x": 1})
    assert response.status_code == 202
    job = response.json()
    assert job["state"] in ("queued", "running") and not job["cached"]
    done = wait_for(lambda: httpx.get(f"{web_stack.url}/api/jobs/{job['id']}").json()["state"] == "done")
    assert done
    status = httpx.get(f"{web_stack.url}/api/jobs/{job['id']}")
    assert status.json()["result"] == {"x": 1}
    assert status.headers["cache-control"] == "no-store"
    assert status.headers["referrer-policy"] == "no-referrer"
    again = submit(web_stack, "echo", {"x": 1})
    assert again.status_code == 200
    assert again.json()["cached"] is True and again.json()["result"] == {"x": 1}


def test_identical_running_jobs_are_coalesced(web_stack: WebStack) -> None:
    first = submit(web_stack, "slow", {"seconds": 1.0, "steps": 5}).json()
    second = submit(web_stack, "slow", {"seconds": 1.0, "steps": 5}).json()
    assert first["id"] == second["id"]


@pytest.mark.parametrize("path", [f"/api/jobs/{UNKNOWN_ID}", "/api/jobs/short", "/api/jobs/" + "x" * 5000,
                                  "/api/jobs/..%2F..%2Fetc", "/api/jobs/%C3%A9" * 3, f"/jobs/{UNKNOWN_ID}",
                                  "/jobs/nope"])  # fmt: skip
def test_unknown_and_malformed_ids_are_the_same_404(web_stack: WebStack, path: str) -> None:
    response = httpx.get(web_stack.url + path)
    assert response.status_code == 404
    assert response.json() == {"error": "no such job"}
    assert httpx.delete(web_stack.url + path.replace("/jobs/", "/api/jobs/", 1)).status_code in (404, 405)
    good_request_works(web_stack)


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b'{"task": "echo", "args": [1]}', 400, "args must be a JSON object"),
        (b'{"task": "echo", "args": {"x": NaN}}', 400, "NaN is not allowed"),
        (b'{"task": "echo", "args": {"x": Infinity}}', 400, "Infinity is not allowed"),
        (b"[" * 200_000, 400, "not valid JSON"),
        (b'{"task": "echo", "args": {"x": ' + b"9" * 5000 + b"}}", 400, "not valid JSON"),
        (b'{"task": "echo", "args": {"x": 9007199254740993}}', 400, "out of range"),
        (b'{"task": "echo", "args": {"x": "\\ud800"}}', 400, "surrogate"),
        (b'{"task": "echo"', 400, "not valid JSON"),
        (b"", 400, "not valid JSON"),
        (b'{"task": "no-such-task"}', 400, "no-such-task"),
        (b'{"task": "echo", "priority": "urgent"}', 400, "priority"),
        (b'{"task": "echo", "args": {"x": "' + b"y" * (1024 * 1024) + b'"}}', 413, "exceeds"),
    ],
)
def test_bad_bodies_get_a_4xx_json_error(web_stack: WebStack, body: bytes, status: int, message: str) -> None:
    response = httpx.post(f"{web_stack.url}/api/jobs", content=body, headers=JSON, timeout=10)
    assert response.status_code == status, response.text
    assert message in response.json()["error"]
    good_request_works(web_stack)


def test_wrong_content_type_is_415_and_creates_no_job(web_stack: WebStack) -> None:
    before = httpx.get(f"{web_stack.url}/healthz").json()
    response = httpx.post(f"{web_stack.url}/api/jobs", content=b'{"task": "echo"}',
                          headers={"content-type": "text/plain"})  # fmt: skip
    assert response.status_code == 415
    assert response.json() == {"error": "content type must be application/json"}
    assert before["ok"]
    good_request_works(web_stack)


def test_body_over_one_mebibyte_is_413_without_reading_it_all(web_stack: WebStack) -> None:
    def chunks():  # type: ignore[no-untyped-def]
        for _ in range(10):
            yield b"x" * 1024 * 1024

    response = httpx.post(f"{web_stack.url}/api/jobs", content=chunks(), headers=JSON, timeout=10)
    assert response.status_code == 413
    lying = httpx.post(f"{web_stack.url}/api/jobs", content=b"{}",
                       headers={**JSON, "content-length": "2"}, timeout=10)  # fmt: skip
    assert lying.status_code == 400
    good_request_works(web_stack)


def test_cross_origin_state_changes_are_refused(web_stack: WebStack) -> None:
    evil = {**JSON, "origin": "https://evil.example"}
    response = httpx.post(f"{web_stack.url}/api/jobs", json={"task": "echo"}, headers=evil)
    assert response.status_code == 403
    job = submit(web_stack, "slow", {"seconds": 5.0, "steps": 50}).json()
    assert httpx.delete(f"{web_stack.url}/api/jobs/{job['id']}", headers=evil).status_code == 403
    own = {"origin": web_stack.url}
    cancelled = httpx.delete(f"{web_stack.url}/api/jobs/{job['id']}", headers=own)
    assert cancelled.status_code == 200
    wait_for(lambda: httpx.get(f"{web_stack.url}/api/jobs/{job['id']}").json()["state"] == "cancelled")


def test_foreign_host_header_is_refused(web_stack: WebStack) -> None:
    response = httpx.get(f"{web_stack.url}/healthz", headers={"host": "evil.example"})
    assert response.status_code == 400
    assert httpx.get(f"{web_stack.url}/healthz").status_code == 200


def test_report_seed_flow_redirects_then_renders_the_cached_result(web_stack: WebStack) -> None:
    path = "/reports/report?region=eu&year=2026&steps=4&step_s=0.05"
    first = httpx.get(web_stack.url + path)
    assert first.status_code == 303
    location = urlsplit(first.headers["location"])
    job_id = location.path.rsplit("/", 1)[1]
    assert parse_qs(location.query)["next"] == [path]
    page = httpx.get(web_stack.url + first.headers["location"])
    assert page.status_code == 200 and f'data-jobcast-job="{job_id}"' in page.text
    assert page.headers["referrer-policy"] == "no-referrer"
    assert page.headers["cache-control"] == "no-store"
    assert page.headers["content-security-policy"].startswith("default-src 'self'")
    assert "<script>" not in page.text and "style=" not in page.text
    wait_for(lambda: httpx.get(f"{web_stack.url}/api/jobs/{job_id}").json()["state"] == "done")
    report = httpx.get(web_stack.url + path)
    assert report.status_code == 200
    assert "Cached result." in report.text and "<table" in report.text
    web_stack.broker.signal(signal.SIGSTOP)  # a cache hit is read from disk: no broker round trip
    try:
        fast = httpx.get(web_stack.url + path, timeout=5)
    finally:
        web_stack.broker.signal(signal.SIGCONT)
    assert fast.status_code == 200 and "Cached result." in fast.text
    assert fast.text == report.text  # the hot page (kept encoded for about a second) is the same
    assert fast.headers["content-type"] == "text/html; charset=utf-8"
    assert fast.headers["cache-control"] == "no-store"
    assert fast.headers["content-security-policy"].startswith("default-src 'self'")


def test_progress_page_drops_an_unsafe_next(web_stack: WebStack) -> None:
    job = submit(web_stack, "echo", {"n": "next"}).json()
    for unsafe in ["https://evil.example", "//evil.example", "javascript:alert(1)"]:
        page = httpx.get(f"{web_stack.url}/jobs/{job['id']}", params={"next": unsafe})
        assert page.status_code == 200
        assert 'data-jobcast-next=""' in page.text


def test_feeds_report_escapes_titles_and_links(web_stack: WebStack) -> None:
    feed = f"{web_stack.url}/demo/feeds/tricky.xml"
    first = httpx.get(f"{web_stack.url}/reports/feeds", params={"urls": feed})
    assert first.status_code == 303
    job_id = urlsplit(first.headers["location"]).path.rsplit("/", 1)[1]
    wait_for(lambda: httpx.get(f"{web_stack.url}/api/jobs/{job_id}").json()["state"] in ("done", "failed"))
    assert httpx.get(f"{web_stack.url}/api/jobs/{job_id}").json()["state"] == "done"
    report = httpx.get(f"{web_stack.url}/reports/feeds", params={"urls": feed})
    assert report.status_code == 200
    assert "&lt;img src=x onerror=alert(1)&gt;" in report.text
    assert "<img" not in report.text and 'href="javascript' not in report.text
    assert '<a href="https://example.org/escaped"' in report.text


def test_feeds_refuse_private_addresses_with_a_clear_error(web_stack: WebStack) -> None:
    job = submit(web_stack, "feeds", {"urls": ["http://169.254.169.254/latest/meta-data/"]}).json()
    wait_for(lambda: httpx.get(f"{web_stack.url}/api/jobs/{job['id']}").json()["state"] == "failed")
    error = httpx.get(f"{web_stack.url}/api/jobs/{job['id']}").json()["error"]
    assert "not a public address" in error["message"]


def test_pages_and_static_files(web_stack: WebStack) -> None:
    index = httpx.get(web_stack.url + "/")
    assert index.status_code == 200 and "/reports/report?" in index.text
    assert httpx.get(web_stack.url + "/static/progress.js").status_code == 200
    feed = httpx.get(web_stack.url + "/demo/feeds/python.xml")
    assert feed.status_code == 200 and b"<rss" in feed.content
    assert "Disallow: /jobs/" in httpx.get(web_stack.url + "/robots.txt").text
    assert httpx.get(web_stack.url + "/static/../app.py").status_code == 404


def test_sigterm_stops_the_web_server_cleanly(web_stack: WebStack) -> None:
    web_stack.web.proc.signal(signal.SIGTERM)
    assert web_stack.web.proc.wait(timeout_s=10) == 0
