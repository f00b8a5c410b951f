"""The dashboard's queue (pure) and its hub (real broker, real relay): thinning and shared STATS."""

from __future__ import annotations

import asyncio

import zmq.asyncio
from helpers import ReadyProcess

from broker.addresses import endpoints
from broker.async_client import AsyncClient
from broker.protocol import Event
from web.dashboard_feed import DashboardHub, DashboardWatch
from web.relay import Relay

A, B = "a" * 22, "b" * 22


def event(job_id: str, seq: int, state: str, done: int = 0) -> Event:
    return Event(id=job_id, seq=seq, epoch=1, state=state, task="report", done=done, total=100)


def test_progress_keeps_the_latest_per_job_and_changes_are_all_kept() -> None:
    watch = DashboardWatch()
    watch.push(event(A, 1, "queued"))
    watch.push(event(A, 2, "running"))
    for n in range(3, 50):
        watch.push(event(A, n, "running", done=n))  # progress: only the latest survives
    watch.push(event(B, 1, "queued"))
    watch.push_stats({"queued": 1})
    watch.push_stats({"queued": 2})  # figures: the latest only
    sent = watch.drain()
    assert [(m["id"], m["seq"], m["state"]) for m in sent[:3]] == [(A, 1, "queued"), (A, 2, "running"),
                                                                   (B, 1, "queued")]  # fmt: skip
    assert sent[3]["seq"] == 49 and sent[3]["done"] == 49 and sent[3]["task"] == "report"
    assert sent[4] == {"kind": "stats", "stats": {"queued": 2}}
    assert len(sent) == 5 and watch.drain() == []


def test_a_final_state_replaces_held_progress_and_is_never_dropped() -> None:
    watch = DashboardWatch()
    watch.push(event(A, 1, "running"))
    watch.push(event(A, 2, "running", done=5))
    watch.push(event(A, 3, "done", done=100))
    sent = watch.drain()
    assert [(m["seq"], m["state"]) for m in sent] == [(1, "running"), (3, "done")]
    watch.push(event(A, 4, "running"))  # a retried job runs again: a change, not progress
    assert [m["state"] for m in watch.drain()] == ["running"]


def test_too_many_waiting_changes_ask_for_a_fresh_snapshot() -> None:
    watch = DashboardWatch(max_changes=10)
    for n in range(11):
        watch.push(event(f"{n:022d}", 1, "queued"))
    assert watch.needs_resync and watch.changes == type(watch.changes)()
    asyncio.run(asyncio.wait_for(watch.wait(), 1))  # wakes the sender at once


def test_dashboards_of_one_process_share_one_stats_call(broker: ReadyProcess, base_url: str) -> None:
    async def scenario() -> tuple[int, list[int]]:
        context = zmq.asyncio.Context()
        relay = Relay(context, endpoints(base_url).events_out)
        client = AsyncClient(base_url, context=context, timeout_s=5)
        hub = DashboardHub(relay, client, interval_s=0.05)
        received = [0, 0]
        try:
            async with hub.join() as first, hub.join() as second:
                while min(received) < 5:
                    for index, watch in enumerate((first, second)):
                        await asyncio.wait_for(watch.wait(), 5)
                        received[index] += sum(m.get("kind") == "stats" for m in watch.drain())
            assert hub._poller is None  # the last dashboard gone: no more STATS calls
            return hub.stats_calls, received
        finally:
            await client.aclose()
            relay.close()
            context.term()

    calls, received = asyncio.run(asyncio.wait_for(scenario(), 30))
    assert calls < sum(received)  # each call fed both dashboards: not one call per socket
    assert calls >= max(received)
