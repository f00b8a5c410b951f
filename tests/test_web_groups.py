"""Groups and job logs over real HTTP and WebSockets (broker, workers and uvicorn processes)."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import httpx
import pytest
from web_fixtures import WebStack
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from broker.client import Client
from broker.groups import MAX_GROUP_SIZE

FINAL = {"done", "failed", "cancelled"}


def post_group(stack: WebStack, body: Any) -> httpx.Response:
    return httpx.post(f"{stack.url}/api/groups", json=body, timeout=10)


async def collect(url: str) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    async with connect(url, open_timeout=5) as ws:
        try:
            async for raw in ws:
                messages.append(json.loads(raw))
        except ConnectionClosed:
            pass
    return messages


def watch(url: str) -> list[dict[str, Any]]:
    return asyncio.run(asyncio.wait_for(collect(url), 60))


@pytest.mark.parametrize(
    ("body", "phrase"),
    [
        ([{"task": "echo"}], "body must be a JSON object"),
        ({"task": "echo", "args": {"a": 1}}, "args must be a list"),
        ({"task": "echo", "args": []}, f"1..{MAX_GROUP_SIZE} jobs"),
        ({"task": "echo", "args": [{}] * (MAX_GROUP_SIZE + 1)}, f"1..{MAX_GROUP_SIZE} jobs"),
        ({"task": "echo", "args": [{"a": 1}, [1, 2]]}, r"args\[1\]: args must be a JSON object"),
        ({"task": "echo", "args": [{"a": 1}, {"big": 2**60}]}, r"args\[1\]: integer out of range"),
        ({"task": "echo", "args": [{"a": 1}], "priority": "urgent"}, "priority must be one of"),
        ({"task": "", "args": [{"a": 1}]}, "task name"),
        ({"task": "echo", "args": [{"a": 1}], "extra": True}, "unknown field 'extra'"),
        ({"task": "no_such_task", "args": [{"a": 1}]}, "no worker offers task"),
    ],
)
def test_bad_groups_are_4xx_json_and_submit_nothing(web_stack: WebStack, body: Any, phrase: str) -> None:
    response = post_group(web_stack, body)
    assert 400 <= response.status_code < 500, response.text
    assert re.search(phrase, response.json()["error"]), response.json()
    good = post_group(web_stack, {"task": "echo", "args": [{"still": "works"}]})
    assert good.status_code in (200, 202), good.text
    assert len(good.json()["children"]) == 1  # and only that one group's job was submitted


def test_a_bad_child_leaves_no_job_behind(web_stack: WebStack, base_url: str) -> None:
    response = post_group(web_stack, {"task": "echo", "args": [{"a": 1}] * 5 + [7]})
    assert response.status_code == 400 and "args[5]" in response.json()["error"]
    with Client(base_url, timeout_s=10) as client:
        assert client.stats()["submitted"] == 0


def test_post_group_then_watch_one_bar_to_the_end(web_stack: WebStack) -> None:
    response = post_group(web_stack, {"task": "step", "args": [{"n": i, "seconds": 0.4} for i in range(6)]})
    assert response.status_code == 202, response.text
    group = response.json()
    assert group["kind"] == "group" and group["size"] == 6 and len(group["children"]) == 6
    messages = watch(f"{web_stack.web.ws_url}/api/groups/{group['id']}/events")
    assert messages[0]["kind"] == "snapshot" and len(messages[0]["children"]) == 6
    seqs = [m["seq"] for m in messages]
    assert seqs == sorted(set(seqs))
    last = messages[-1]
    assert last["state"] == "done" and last["done"] == last["total"] == 24
    assert [m for m in messages if m["state"] in FINAL] == [last]
    assert any("child" in m for m in messages[1:]) or len(messages) == 1
    status = httpx.get(f"{web_stack.url}/api/groups/{group['id']}").json()
    assert status["counts"]["done"] == 6
    assert [row["state"] for row in status["children"]] == ["done"] * 6
    child = status["children"][0]["id"]
    assert httpx.get(f"{web_stack.url}/api/groups/{child}").status_code == 404  # a job is not a group
    assert httpx.get(f"{web_stack.url}/api/groups/{'A' * 22}").status_code == 404


def test_job_log_over_the_websocket_misses_nothing_after_a_reconnect(web_stack: WebStack) -> None:
    body = {"task": "chatty", "args": {"lines": 20, "seconds": 1.0}}
    job = httpx.post(f"{web_stack.url}/api/jobs", json=body, timeout=10).json()
    url = web_stack.web.events_url(job["id"])

    async def first_part() -> list[dict[str, Any]]:
        async with connect(url, open_timeout=5) as ws:
            return [json.loads(await ws.recv()) for _ in range(3)]

    first = asyncio.run(asyncio.wait_for(first_part(), 30))
    rest = watch(web_stack.web.events_url(job["id"], after=first[-1]["seq"]))
    lines: list[str] = []
    for message in first + rest:
        if "log" in message:
            start = message["log_count"] - len(message["log"])
            lines.extend(message["log"][len(lines) - start :] if start <= len(lines) else ["GAP"])
    assert lines == [f"line {i} <b>&amp;</b>" for i in range(1, 21)]
    final = httpx.get(f"{web_stack.url}/api/jobs/{job['id']}").json()
    assert final["log"] == lines and final["log_count"] == 20


def test_group_page_and_demo_link(web_stack: WebStack) -> None:
    index = httpx.get(f"{web_stack.url}/").text
    assert "/demo/parallel-report" in index
    response = httpx.get(f"{web_stack.url}/demo/parallel-report", follow_redirects=False)
    assert response.status_code == 303
    location = response.headers["location"]
    assert location.startswith("/groups/")
    page = httpx.get(f"{web_stack.url}{location}")
    assert page.status_code == 200
    assert page.text.count('data-jobcast-child="') == 10
    assert httpx.get(f"{web_stack.url}/groups/{'A' * 22}").status_code == 404


def test_delete_cancels_every_unfinished_child(web_stack: WebStack) -> None:
    response = post_group(web_stack, {"task": "step", "args": [{"n": i, "seconds": 30} for i in range(4)]})
    assert response.status_code == 202, response.text
    group = response.json()
    url = f"{web_stack.url}/api/groups/{group['id']}"
    foreign = httpx.delete(url, headers={"Origin": "https://evil.example"}, timeout=10)
    assert foreign.status_code == 403  # CSRF: nothing cancelled
    assert httpx.get(url, timeout=10).json()["counts"].get("cancelled", 0) == 0
    child = group["children"][0]["id"]
    assert httpx.delete(f"{web_stack.url}/api/groups/{child}", timeout=10).status_code == 404  # a job
    assert httpx.delete(f"{web_stack.url}/api/groups/{'A' * 22}", timeout=10).status_code == 404
    cancelled = httpx.delete(url, timeout=10)
    assert cancelled.status_code == 200, cancelled.text
    view = cancelled.json()
    assert view["state"] == "cancelled" and view["counts"]["cancelled"] == 4
    assert [row["state"] for row in view["children"]] == ["cancelled"] * 4
    again = httpx.delete(url, timeout=10)  # nothing left to cancel: the same answer
    assert again.status_code == 200 and again.json()["state"] == "cancelled"
