"""One watchdog per web process ends WebSocket senders whose send has been stuck too long.

A browser that stops reading fills its TCP window, and the server's next send then waits
for it forever. Bounding each send with its own ``asyncio.timeout`` arms and cancels a
timer per message (about 4 µs, a sixth of a message's cost when one event goes to a
thousand watchers). Instead each connection's sender stamps when its current send began
(``SendGuard.began``, 0 when idle), and one task looks at every guard a few times a
second: a send older than the limit gets its sender task cancelled, which ends that
connection only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator
from typing import Final

logger = logging.getLogger(__name__)

CHECKS_PER_LIMIT: Final = 10  # a stuck send ends between 1.0 and 1.1 x the limit


class SendGuard:
    """One connection's sender: its task and when its current send began (0.0: idle)."""

    __slots__ = ("began", "task")

    def __init__(self, task: asyncio.Task[object] | None) -> None:
        self.task = task
        self.began = 0.0


class SendWatchdog:
    """Cancels the sender task of any connection whose send has lasted over ``limit_s``."""

    def __init__(self, limit_s: float) -> None:
        if limit_s <= 0:
            raise ValueError(f"the send limit must be positive (got {limit_s})")
        self.limit_s = limit_s
        self.stalled = 0  # senders cancelled so far
        self._guards: set[SendGuard] = set()

    @contextlib.contextmanager
    def guard(self) -> Iterator[SendGuard]:
        """Watch the current task's sends for the duration of the block."""
        guard = SendGuard(asyncio.current_task())
        self._guards.add(guard)
        try:
            yield guard
        finally:
            self._guards.discard(guard)

    def check(self, now: float) -> int:
        """Cancel the senders stuck since before ``now - limit_s``; how many were."""
        cancelled = 0
        for guard in self._guards:
            if guard.began and now - guard.began > self.limit_s and guard.task is not None:
                guard.began = 0.0  # cancel once
                guard.task.cancel()
                cancelled += 1
        if cancelled:
            self.stalled += cancelled
            logger.info("closed %d WebSocket(s) whose send stalled over %.1f s", cancelled, self.limit_s)
        return cancelled

    async def run(self) -> None:
        """Check every guard ``CHECKS_PER_LIMIT`` times per limit, until cancelled."""
        while True:
            await asyncio.sleep(self.limit_s / CHECKS_PER_LIMIT)
            self.check(time.monotonic())
