"""The send watchdog: a send stuck past the limit ends its sender task; others go on."""

from __future__ import annotations

import asyncio
import time

import pytest

from web.send_watchdog import SendGuard, SendWatchdog


async def stuck_send(watchdog: SendWatchdog, began: asyncio.Event) -> None:
    with watchdog.guard() as guard:
        guard.began = time.monotonic()
        began.set()
        await asyncio.Event().wait()  # a peer that never reads: the send never completes


async def idle_sender(watchdog: SendWatchdog, rounds: int) -> int:
    sent = 0
    with watchdog.guard() as guard:
        for _ in range(rounds):
            guard.began = time.monotonic()
            await asyncio.sleep(0)  # a send that completes
            guard.began = 0.0
            sent += 1
            await asyncio.sleep(0.01)  # waiting for the next event is not a send
    return sent


def test_a_stuck_send_is_cancelled_and_a_busy_one_is_not() -> None:
    async def scenario() -> tuple[bool, int, int]:
        watchdog = SendWatchdog(limit_s=0.2)
        began = asyncio.Event()
        stuck = asyncio.create_task(stuck_send(watchdog, began))
        healthy = asyncio.create_task(idle_sender(watchdog, rounds=50))  # ~0.5 s, past the limit
        runner = asyncio.create_task(watchdog.run())
        await began.wait()
        try:
            sent = await asyncio.wait_for(healthy, 5)
            await asyncio.wait({stuck}, timeout=5)
            return stuck.cancelled(), sent, watchdog.stalled
        finally:
            runner.cancel()
            stuck.cancel()

    stuck_cancelled, sent, stalled = asyncio.run(scenario())
    assert stuck_cancelled
    assert sent == 50 and stalled == 1


def test_check_cancels_once_and_forgets_ended_connections() -> None:
    async def scenario() -> list[int]:
        watchdog = SendWatchdog(limit_s=1.0)
        task = asyncio.create_task(asyncio.sleep(10))
        counts = []
        with watchdog.guard() as guard:
            guard.task = task
            guard.began = 100.0
            counts.append(watchdog.check(100.9))  # not yet over the limit
            counts.append(watchdog.check(101.1))
            counts.append(watchdog.check(105.0))  # already cancelled: not again
        guard.began = 100.0
        counts.append(watchdog.check(200.0))  # out of the block: not watched any more
        await asyncio.sleep(0)
        assert task.cancelled()
        return counts

    assert asyncio.run(scenario()) == [0, 1, 0, 0]


def test_a_limit_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        SendWatchdog(0)
    assert SendGuard(None).began == 0.0
