"""Completion hooks (``on_done``) against a real broker and workers."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import Any

import pytest
from helpers import ReadyProcess, wait_for

from broker.client import AsyncClient, Client


def test_on_done_is_called_once_with_the_final_view_on_the_follower_thread(
    client: Client, start_workers: Callable[..., ReadyProcess]
) -> None:
    calls: list[tuple[dict[str, Any], str]] = []

    def hook(view: dict[str, Any]) -> None:
        calls.append((view, threading.current_thread().name))

    start_workers(1)
    job = client.submit("echo", {"hooked": 1}, on_done=hook)
    failing = client.submit("fail").on_done(hook)
    wait_for(lambda: len(calls) == 2, timeout_s=20)
    by_id = {view["id"]: (view, thread) for view, thread in calls}
    view, thread = by_id[job.id]
    assert view["state"] == "done" and view["result"] == {"hooked": 1} and thread == "jobcast-on-done"
    assert by_id[failing.id][0]["state"] == "failed"
    assert by_id[failing.id][0]["error"]["message"] == "boom"
    last = client.submit("echo", {"hooked": 2}, on_done=hook)  # then nothing fires twice
    wait_for(lambda: len(calls) == 3, timeout_s=20)
    assert [v["id"] for v, _ in calls].count(job.id) == 1 and calls[-1][0]["id"] == last.id


def test_a_hook_that_raises_is_logged_and_the_next_one_still_runs(
    client: Client, start_workers: Callable[..., ReadyProcess], caplog: pytest.LogCaptureFixture
) -> None:
    start_workers(1)
    seen: list[str] = []

    def broken(view: dict[str, Any]) -> None:
        raise RuntimeError("hook bug")

    with caplog.at_level(logging.ERROR, logger="broker.hooks"):
        first = client.submit("echo", {"n": 1}, on_done=broken)
        client.submit("echo", {"n": 2}, on_done=lambda view: seen.append(view["id"]))
        wait_for(lambda: len(seen) == 1, timeout_s=20)
        wait_for(lambda: "hook bug" in caplog.text, timeout_s=5)
    assert f"job {first.id}: on_done hook" in caplog.text
    assert client.status(first.id)["state"] == "done"  # the client still works


def test_on_done_of_a_finished_job_fires_and_close_ends_the_thread(
    client: Client, start_workers: Callable[..., ReadyProcess], base_url: str
) -> None:
    start_workers(1)
    job = client.submit("echo", {"early": True})
    job.result(timeout=20)
    seen: list[str] = []
    job.on_done(lambda view: seen.append(view["state"]))
    wait_for(lambda: seen == ["done"], timeout_s=20)
    with Client(base_url, timeout_s=10) as other:
        other.submit("echo", {"never": "finishes"}, delay=3600, on_done=seen.append)
    # close() stopped the pending follower; the first client's ended once nothing was pending
    wait_for(lambda: not [t for t in threading.enumerate() if t.name == "jobcast-on-done"], 10)
    assert seen == ["done"]
    with pytest.raises(TypeError, match="on_done must be callable"):
        client.on_done(job.id, "not callable")  # type: ignore[arg-type]


def test_async_on_done_awaits_a_coroutine_hook(
    broker: ReadyProcess, base_url: str, start_workers: Callable[..., ReadyProcess]
) -> None:
    start_workers(1)

    async def scenario() -> list[dict[str, Any]]:
        seen: list[dict[str, Any]] = []
        finished = asyncio.Event()

        async def hook(view: dict[str, Any]) -> None:
            seen.append(view)
            finished.set()

        client = AsyncClient(base_url, timeout_s=10)
        try:
            job = await client.submit("fail", on_done=hook)
            await asyncio.wait_for(finished.wait(), 20)
            assert (await client.wait(job.id))["state"] == "failed"
            await client.submit("echo", {"pending": 1}, delay=3600, on_done=hook)
        finally:
            await client.aclose()  # cancels the pending hook without raising
        return seen

    seen = asyncio.run(scenario())
    assert [view["state"] for view in seen] == ["failed"]
