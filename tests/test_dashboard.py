"""/dashboard against real processes: closed by default, token sign-in, cookie, bearer, WS feed."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
from collections.abc import Callable, Coroutine
from typing import Any

import httpx
import pytest
from helpers import ReadyProcess, children_of, jobcast, wait_for
from web_fixtures import DASHBOARD_TOKEN, WebServer, WebStack
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

TOKEN = DASHBOARD_TOKEN
EVIL = "https://evil.example"


def run(coro: Coroutine[Any, Any, Any], timeout_s: float = 30) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout_s))


@pytest.fixture
def dash(dashboard_stack: WebStack) -> WebStack:
    """Broker, 2 test workers and a web server whose dashboard token is ``TOKEN``."""
    return dashboard_stack


def session_cookie(url: str) -> str:
    """A ``Cookie`` header value for a signed-in dashboard (signs in with the form)."""
    with httpx.Client(base_url=url, timeout=10) as browser:
        answer = browser.post("/dashboard/login", data={"token": TOKEN}, headers={"Origin": url})
        assert answer.status_code == 303, answer.text
        return "; ".join(f"{name}={value}" for name, value in browser.cookies.items())


async def next_message(ws: ClientConnection, predicate: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """The first message the server pushes that matches ``predicate``."""
    while True:
        message = json.loads(await ws.recv())
        if predicate(message):
            return message


def test_dashboard_is_closed_without_a_token(web_stack: WebStack) -> None:
    url = web_stack.url
    page = httpx.get(f"{url}/dashboard", timeout=10)
    assert page.status_code == 404
    assert "JOBCAST_DASHBOARD_TOKEN" in page.text and "<form" not in page.text
    for answer in (
        httpx.get(f"{url}/dashboard/api/jobs", timeout=10),
        httpx.get(f"{url}/dashboard/api/session", headers={"Authorization": "Bearer x"}, timeout=10),
        httpx.post(f"{url}/dashboard/login", data={"token": "anything-at-all-here"}, timeout=10),
    ):
        assert answer.status_code == 404
        assert "dashboard is off" in answer.text

    async def upgrade() -> int:
        with pytest.raises(InvalidStatus) as refused:
            async with connect(f"{web_stack.web.ws_url}/dashboard/events", open_timeout=5):
                pass
        return refused.value.response.status_code

    assert run(upgrade()) == 404
    assert httpx.get(f"{url}/healthz", timeout=10).status_code == 200  # the rest still serves


def test_sign_in_sets_a_strict_http_only_cookie_without_the_token(dash: WebStack) -> None:
    url = dash.url
    form = httpx.get(f"{url}/dashboard", timeout=10)
    assert form.status_code == 401 and '<form method="post"' in form.text
    assert form.headers["www-authenticate"].startswith("Bearer")
    assert "dashboard.js" not in form.text
    wrong = httpx.post(f"{url}/dashboard/login", data={"token": "wrong-token-wrong-token"}, timeout=10)
    assert wrong.status_code == 401 and "Wrong dashboard token" in wrong.text
    assert "set-cookie" not in wrong.headers
    right = httpx.post(f"{url}/dashboard/login", data={"token": TOKEN}, headers={"Origin": url}, timeout=10)
    assert right.status_code == 303 and right.headers["location"] == "/dashboard"
    cookie = right.headers["set-cookie"]
    flags = [part.strip().lower() for part in cookie.split(";")]
    assert "httponly" in flags and "samesite=strict" in flags and "path=/dashboard" in flags
    assert "secure" not in flags  # plain http on loopback; https would add it
    assert TOKEN not in cookie
    value = cookie.split(";")[0].split("=", 1)[1]
    page = httpx.get(f"{url}/dashboard", cookies={"jobcast_dashboard": value}, timeout=10)
    assert page.status_code == 200 and "dashboard.js" in page.text
    assert "no-store" in page.headers["cache-control"]
    tampered = value[:-1] + ("0" if value[-1] != "0" else "1")
    assert (
        httpx.get(f"{url}/dashboard", cookies={"jobcast_dashboard": tampered}, timeout=10).status_code == 401
    )


def test_login_refuses_cross_site_forms_and_other_content_types(dash: WebStack) -> None:
    url = dash.url
    evil = httpx.post(f"{url}/dashboard/login", data={"token": TOKEN}, headers={"Origin": EVIL}, timeout=10)
    assert evil.status_code == 403 and "set-cookie" not in evil.headers
    as_json = httpx.post(f"{url}/dashboard/login", json={"token": TOKEN}, timeout=10)
    assert as_json.status_code == 415
    huge = httpx.post(f"{url}/dashboard/login", data={"token": "x" * 10_000}, timeout=10)
    assert huge.status_code == 413
    signed_in = httpx.get(f"{url}/dashboard/api/session", headers={"Cookie": session_cookie(url)}, timeout=10)
    assert signed_in.status_code == 200  # still works


def test_bearer_token_for_scripts(dash: WebStack) -> None:
    url = f"{dash.url}/dashboard/api/session"
    assert httpx.get(url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10).json() == {"ok": True}
    wrong = httpx.get(url, headers={"Authorization": "Bearer not-the-token-at-all"}, timeout=10)
    assert wrong.status_code == 401 and wrong.json() == {"error": "wrong dashboard token"}
    assert httpx.get(url, timeout=10).status_code == 401
    listing = httpx.get(f"{dash.url}/dashboard/api/jobs", timeout=10)
    assert listing.status_code == 401  # anything that lists jobs needs the token
    bad_query = httpx.get(
        f"{dash.url}/dashboard/api/jobs?state=sleeping",
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=10,
    )
    assert bad_query.status_code == 400 and "state must be one of" in bad_query.json()["error"]


def test_wrong_tokens_are_rate_limited_like_not_found_ids(
    start_broker: Callable[..., ReadyProcess], start_web: Callable[..., WebServer]
) -> None:
    start_broker()
    env = {"JOBCAST_DASHBOARD_TOKEN": TOKEN, "JOBCAST_NOT_FOUND_RATE": "1", "JOBCAST_NOT_FOUND_BURST": "3"}
    url = start_web(env=env).url
    session = f"{url}/dashboard/api/session"
    statuses = [
        httpx.get(session, headers={"Authorization": f"Bearer guess-number-{n:08d}"}, timeout=10).status_code
        for n in range(5)
    ]
    assert statuses[:3] == [401, 401, 401] and 429 in statuses[3:]
    limited = httpx.post(f"{url}/dashboard/login", data={"token": TOKEN}, timeout=10)
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
    # the bucket refills: the right token works again
    wait_for(
        lambda: (
            httpx.get(session, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10).status_code == 200
        ),
        timeout_s=15,
        interval_s=0.3,
    )


def test_events_socket_checks_cookie_and_origin_then_pushes_jobs_and_stats(dash: WebStack) -> None:
    cookie = session_cookie(dash.url)
    events_url = f"{dash.web.ws_url}/dashboard/events"

    async def refused(headers: dict[str, str]) -> int:
        with pytest.raises(InvalidStatus) as caught:
            async with connect(events_url, additional_headers=headers, open_timeout=5):
                pass
        return caught.value.response.status_code

    async def feed() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        assert await refused({}) == 401
        assert await refused({"Cookie": "jobcast_dashboard=1.abc"}) == 401
        assert await refused({"Cookie": cookie, "Origin": EVIL}) == 403
        assert await refused({"Authorization": "Bearer not-the-token-at-all"}) == 401
        headers = {"Cookie": cookie, "Origin": dash.url}
        async with connect(events_url, additional_headers=headers, open_timeout=5) as ws:
            snapshot = json.loads(await ws.recv())
            job = await asyncio.to_thread(
                httpx.post,
                f"{dash.url}/api/jobs",
                json={"task": "slow", "args": {"seconds": 1, "steps": 10}},
            )
            job_id = job.json()["id"]
            done = await next_message(ws, lambda m: m.get("id") == job_id and m.get("state") == "done")
            stats = await next_message(ws, lambda m: m.get("kind") == "stats")
        return snapshot, done, stats

    snapshot, done, stats = run(feed())
    assert snapshot["kind"] == "snapshot" and snapshot["stats"]["workers"] == 2
    assert isinstance(snapshot["jobs"], list)
    assert done["kind"] == "event" and done["task"] == "slow" and done["done"] == 10
    assert {"queued", "running", "queues", "workers", "idle_workers"} <= set(stats["stats"])


def test_dashboard_feed_ends_when_the_last_dashboard_closes(dash: WebStack) -> None:
    headers = {"Cookie": session_cookie(dash.url)}

    def watched() -> int:
        return int(httpx.get(f"{dash.url}/healthz", timeout=10).json()["watched_jobs"])

    async def open_and_close() -> None:
        async with connect(f"{dash.web.ws_url}/dashboard/events", additional_headers=headers) as ws:
            await ws.recv()
            assert await asyncio.to_thread(watched) == 1  # the all-jobs topic, while open

    run(open_and_close())
    # the all-jobs topic is gone from the web's subscriptions: only job topics remain watched
    wait_for(lambda: watched() == 0)


def test_list_and_retry_need_the_token_and_a_same_origin_json_post(dash: WebStack) -> None:
    url, bearer = dash.url, {"Authorization": f"Bearer {TOKEN}"}
    failed_id = httpx.post(f"{url}/api/jobs", json={"task": "fail", "args": {}}, timeout=10).json()["id"]
    wait_for(lambda: httpx.get(f"{url}/api/jobs/{failed_id}", timeout=10).json()["state"] == "failed", 15)
    listed = httpx.get(f"{url}/dashboard/api/jobs?state=failed", headers=bearer, timeout=10).json()
    assert [job["id"] for job in listed] == [failed_id]
    assert listed[0]["error"]["type"] == "ValueError" and "args" not in listed[0]
    retry_url = f"{url}/dashboard/api/jobs/{failed_id}/retry"
    assert httpx.post(retry_url, json={}, timeout=10).status_code == 401
    evil = httpx.post(retry_url, json={}, headers={**bearer, "Origin": EVIL}, timeout=10)
    assert evil.status_code == 403
    form = httpx.post(retry_url, data={"x": "1"}, headers={"Cookie": session_cookie(url)}, timeout=10)
    assert form.status_code == 415  # a cross-site form cannot send JSON
    unknown = httpx.post(f"{url}/dashboard/api/jobs/{'A' * 22}/retry", json={}, headers=bearer, timeout=10)
    assert unknown.status_code == 404
    retried = httpx.post(
        retry_url, json={}, headers={"Cookie": session_cookie(url), "Origin": url}, timeout=10
    )
    assert retried.status_code == 202, retried.text
    new_id = retried.json()["id"]
    assert new_id != failed_id and retried.json()["task"] == "fail"
    wait_for(lambda: httpx.get(f"{url}/api/jobs/{new_id}", timeout=10).json()["state"] == "failed", 15)
    again = httpx.get(f"{url}/dashboard/api/jobs?state=failed&task=fail&limit=5", headers=bearer, timeout=10)
    assert [job["id"] for job in again.json()] == [new_id, failed_id]


def test_snapshot_lists_running_and_queued_jobs(dash: WebStack) -> None:
    ids = [
        httpx.post(f"{dash.url}/api/jobs", json={"task": "slow", "args": {"seconds": 8 + n, "steps": 80}},
                   timeout=10).json()["id"]
        for n in range(3)
    ]  # fmt: skip
    headers = {"Authorization": f"Bearer {TOKEN}"}
    running = f"{dash.url}/dashboard/api/jobs?state=running"
    wait_for(lambda: len(httpx.get(running, headers=headers, timeout=10).json()) == 2, 15)  # 2 workers

    async def first_message() -> dict[str, Any]:
        async with connect(f"{dash.web.ws_url}/dashboard/events", additional_headers=headers) as ws:
            return dict(json.loads(await ws.recv()))

    snapshot = run(first_message())
    states = {job["id"]: job["state"] for job in snapshot["jobs"]}
    assert set(ids) <= set(states) and sorted(states[i] for i in ids) == ["queued", "running", "running"]
    assert snapshot["stats"]["queues"]["slow"] == {"queued": 1, "running": 2}
    for job_id in ids:
        httpx.delete(f"{dash.url}/api/jobs/{job_id}", timeout=10)


def test_up_passes_the_token_to_the_web_part_off_its_command_line(
    base_url: str, tmpdir_short: str, part_env: dict[str, str], processes: list[ReadyProcess]
) -> None:
    data = os.path.join(tmpdir_short, "data")
    argv = jobcast("up", "--port", "0", "--workers", "1", "--broker", base_url, "--data", data,
                   "--dashboard-token", TOKEN)  # fmt: skip
    up = ReadyProcess(argv, env=part_env, ready_timeout_s=60)
    processes.append(up)
    url = up.ready_line.split(" ready ", 1)[1].split()[0]
    session = httpx.get(
        f"{url}/dashboard/api/session", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
    )
    assert session.status_code == 200
    read = 0
    for pid in children_of(up.pid):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                assert TOKEN.encode() not in cmdline.read()
        except FileNotFoundError:
            continue  # a descendant that ended meanwhile shows no command line to anyone
        read += 1
    assert read >= 3  # at least the broker, the web part and the pool were read
    up.signal(signal.SIGTERM)
    assert up.wait(timeout_s=20) == 0


def test_web_refuses_a_short_token(base_url: str, part_env: dict[str, str]) -> None:
    argv = jobcast("web", "--broker", base_url, "--port", "0", "--dashboard-token", "short")
    short = subprocess.run(argv, capture_output=True, text=True, timeout=30, env={**os.environ, **part_env})
    assert short.returncode == 2
    assert "dashboard token must be at least 16" in short.stderr
