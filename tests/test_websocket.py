"""WS /api/jobs/{id}/events against real processes: join, stream, resume, isolation, refusals."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import time
from collections.abc import Coroutine
from typing import Any

import httpx
import pytest
from helpers import wait_for
from web_fixtures import WebStack
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

FINAL = {"done", "failed", "cancelled"}


def run(coro: Coroutine[Any, Any, Any], timeout_s: float = 30) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout_s))


def submit(stack: WebStack, task: str, args: dict[str, Any]) -> str:
    response = httpx.post(f"{stack.url}/api/jobs", json={"task": task, "args": args}, timeout=10)
    assert response.status_code in (200, 202), response.text
    return str(response.json()["id"])


async def collect(ws: ClientConnection, limit: int | None = None) -> list[dict[str, Any]]:
    """Messages until the server closes (or ``limit`` messages)."""
    messages: list[dict[str, Any]] = []
    try:
        async for raw in ws:
            messages.append(json.loads(raw))
            if limit is not None and len(messages) >= limit:
                break
    except ConnectionClosed:
        pass
    return messages


def assert_strictly_increasing(messages: list[dict[str, Any]]) -> None:
    seqs = [m["seq"] for m in messages]
    assert seqs == sorted(set(seqs)), seqs


def test_snapshot_then_events_then_close_after_the_final_state(web_stack: WebStack) -> None:
    job_id = submit(web_stack, "slow", {"seconds": 1.0, "steps": 10})

    async def watch() -> tuple[list[dict[str, Any]], int | None]:
        async with connect(web_stack.web.events_url(job_id), open_timeout=5) as ws:
            messages = await collect(ws)
            return messages, ws.close_code

    messages, close_code = run(watch())
    assert messages[0]["kind"] == "snapshot" and messages[0]["id"] == job_id
    assert all(m["kind"] == "event" for m in messages[1:])
    assert_strictly_increasing(messages)
    assert messages[-1]["state"] == "done" and messages[-1]["done"] == 10
    assert [m for m in messages if m["state"] in FINAL] == [messages[-1]]
    assert close_code == 1000
    assert {"seq", "state", "done", "total", "message", "eta_s", "ts"} <= set(messages[-1])


def test_reconnect_with_after_misses_nothing_and_repeats_nothing(web_stack: WebStack) -> None:
    job_id = submit(web_stack, "slow", {"seconds": 2.0, "steps": 20})

    async def watch_twice() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        async with connect(web_stack.web.events_url(job_id), open_timeout=5) as ws:
            first = await collect(ws, limit=4)
        after = first[-1]["seq"]
        async with connect(web_stack.web.events_url(job_id, after=after), open_timeout=5) as ws:
            second = await collect(ws)
        return first, second

    first, second = run(watch_twice())
    assert second[0]["seq"] > first[-1]["seq"]
    assert_strictly_increasing(first + second)
    assert second[-1]["state"] == "done"
    status = httpx.get(f"{web_stack.url}/api/jobs/{job_id}").json()
    assert second[-1]["seq"] == status["seq"]


def test_after_the_final_seq_still_sends_the_final_state(web_stack: WebStack) -> None:
    job_id = submit(web_stack, "echo", {"final": "again"})
    wait_for(lambda: httpx.get(f"{web_stack.url}/api/jobs/{job_id}").json()["state"] == "done")
    final_seq = httpx.get(f"{web_stack.url}/api/jobs/{job_id}").json()["seq"]

    async def watch() -> list[dict[str, Any]]:
        async with connect(web_stack.web.events_url(job_id, after=final_seq), open_timeout=5) as ws:
            return await collect(ws)

    messages = run(watch())
    assert [m["state"] for m in messages] == ["done"]


def test_watchers_of_two_jobs_see_only_their_own_job(web_stack: WebStack) -> None:
    jobs = [submit(web_stack, "slow", {"seconds": seconds, "steps": 8}) for seconds in (0.8, 0.9)]

    async def watch(job_id: str) -> list[dict[str, Any]]:
        async with connect(web_stack.web.events_url(job_id), open_timeout=5) as ws:
            return await collect(ws)

    async def both() -> list[list[dict[str, Any]]]:
        return list(await asyncio.gather(*(watch(job_id) for job_id in jobs)))

    for job_id, messages in zip(jobs, run(both()), strict=True):
        assert {m["id"] for m in messages} == {job_id}
        assert messages[-1]["state"] == "done"


def stalled_client(url: str, path: str) -> socket.socket:
    """A raw WebSocket client that completes the handshake and then never reads."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=5)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    return sock


def test_a_client_that_never_reads_does_not_delay_20_others(web_stack: WebStack) -> None:
    jobs = [submit(web_stack, "slow", {"seconds": s, "steps": 15}) for s in (1.5, 1.6)]
    jobs.append(submit(web_stack, "progress_n", {"n": 20_000}))
    stalled = [stalled_client(web_stack.url, f"/api/jobs/{job_id}/events") for job_id in jobs]

    async def watch(job_id: str) -> tuple[str, float, list[dict[str, Any]]]:
        async with connect(web_stack.web.events_url(job_id), open_timeout=5) as ws:
            messages = await collect(ws)
            return job_id, time.time(), messages

    async def twenty() -> list[tuple[str, float, list[dict[str, Any]]]]:
        return list(await asyncio.gather(*(watch(jobs[n % len(jobs)]) for n in range(20))))

    try:
        results = run(twenty(), timeout_s=40)
        assert len(results) == 20
        for job_id, received_at, messages in results:
            assert messages[-1]["state"] == "done", messages[-1]
            assert_strictly_increasing(messages)
            finished_at = httpx.get(f"{web_stack.url}/api/jobs/{job_id}").json()["finished_at"]
            assert received_at - finished_at < 1.5
        for sock in stalled:  # never answered a ping: the server closes it (1 s + 1 s in tests)
            sock.settimeout(10)
            while sock.recv(65536):
                pass
    finally:
        for sock in stalled:
            sock.close()


@pytest.mark.parametrize("origin", ["https://evil.example", "null", "http://127.0.0.1:1"])
def test_a_foreign_origin_is_refused_before_accept(web_stack: WebStack, origin: str) -> None:
    job_id = submit(web_stack, "echo", {"origin": origin})

    async def attempt(origin_header: str | None) -> int | None:
        try:
            async with connect(web_stack.web.events_url(job_id), origin=origin_header,  # type: ignore[arg-type]
                               open_timeout=5) as ws:  # fmt: skip
                await collect(ws)
                return None
        except InvalidStatus as exc:
            return exc.response.status_code

    assert run(attempt(origin)) == 403
    assert run(attempt(web_stack.url)) is None  # the own origin works
    assert run(attempt(None)) is None  # so does a non-browser client


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/api/jobs/AAAAAAAAAAAAAAAAAAAAAA/events", 404),
        ("/api/jobs/A/events", 404),
        ("/api/jobs/" + "A" * 5000 + "/events", 404),
        ("/api/jobs/%C3%A9%C3%A9/events", 404),
        ("/api/jobs/{id}/events?after=-1", 400),
        ("/api/jobs/{id}/events?after=1e309", 400),
        ("/api/jobs/{id}/events?after=abc", 400),
    ],
)
def test_bad_ids_and_after_values_are_refused_before_accept(web_stack: WebStack, path: str,
                                                            status: int) -> None:  # fmt: skip
    job_id = submit(web_stack, "echo", {"bad": path})

    async def attempt() -> int:
        with pytest.raises(InvalidStatus) as refused:
            async with connect(web_stack.web.ws_url + path.replace("{id}", job_id), open_timeout=5):
                pass
        return refused.value.response.status_code

    assert run(attempt()) == status
    health = httpx.get(f"{web_stack.url}/healthz").json()
    assert health["ok"] and health["watched_jobs"] == 0  # nothing was subscribed


def test_inbound_messages_are_ignored_and_big_ones_close_the_socket(web_stack: WebStack) -> None:
    job_id = submit(web_stack, "slow", {"seconds": 1.0, "steps": 11})

    async def chatty() -> tuple[list[dict[str, Any]], int | None]:
        async with connect(web_stack.web.events_url(job_id), open_timeout=5) as ws:
            await ws.send("hello")  # ignored
            messages = await collect(ws)
            return messages, ws.close_code

    async def oversized() -> int | None:
        async with connect(web_stack.web.events_url(job_id), open_timeout=5) as ws:
            await ws.send("x" * 16_384)
            await collect(ws)
            return ws.close_code

    messages, code = run(chatty())
    assert messages[-1]["state"] == "done" and code == 1000
    job_id = submit(web_stack, "slow", {"seconds": 1.0, "steps": 12})
    assert run(oversized()) == 1009
