"""What an open dashboard is sent: every job's events and the broker's figures, pushed.

``DashboardWatch`` is one dashboard socket's queue, filled by the relay (all-jobs topic)
without ever waiting. State changes (queued, running, a final state) are kept in order
and never dropped; progress keeps only the latest message per running job, so a busy
broker cannot flood a slow browser. Past ``MAX_CHANGES`` waiting changes the queue gives up
and asks for a resync (a fresh snapshot) rather than silently losing one.

``DashboardHub`` is shared by all dashboard sockets of a web process: one task asks the
broker for STATS every ``STATS_INTERVAL_S`` while at least one dashboard is open (one call
per second per web process, not per socket) and pushes the figures to every watch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator
from typing import Any, Final

from broker.async_client import AsyncClient
from broker.errors import JobcastError
from broker.jobs import FINAL_STATES
from broker.protocol import Event
from web.relay import Message, Relay, event_message

logger = logging.getLogger(__name__)

STATS_INTERVAL_S: Final = 1.0
MAX_CHANGES: Final = 2000
MAX_RUNNING_TRACKED: Final = 10_000


def dashboard_message(event: Event, shared: Message | None = None) -> Message:
    """A job event as the dashboard gets it: the job page's fields plus the task name."""
    message = Message(shared if shared is not None else event_message(event))
    message["task"] = event.task
    return message


class DashboardWatch:
    """One dashboard socket's queue (see the module docstring)."""

    def __init__(self, max_changes: int = MAX_CHANGES) -> None:
        self.max_changes = max_changes
        self.changes: deque[dict[str, Any]] = deque()
        self.progress: dict[str, dict[str, Any]] = {}  # job id → its latest progress message
        self.running: set[str] = set()
        self.stats: dict[str, Any] | None = None
        self.needs_resync = False
        self._ready = asyncio.Event()

    def push(self, event: Event, message: Message | None = None) -> None:
        """Queue a job event from the relay (never blocks)."""
        job_id = event.id
        if event.state == "running" and job_id in self.running:
            self.progress[job_id] = dashboard_message(event, message)  # keep the latest only
        else:
            self.progress.pop(job_id, None)  # the change is newer than any held progress
            self._note_state(job_id, event.state)
            self.changes.append(dashboard_message(event, message))
            if len(self.changes) > self.max_changes:
                self.resync()
        self._ready.set()

    def _note_state(self, job_id: str, state: str) -> None:
        if state == "running" and len(self.running) < MAX_RUNNING_TRACKED:
            self.running.add(job_id)
        elif state in FINAL_STATES or state == "queued":
            self.running.discard(job_id)

    def push_stats(self, stats: dict[str, Any]) -> None:
        """Queue the broker's latest figures (replacing any not yet sent)."""
        self.stats = stats
        self._ready.set()

    def resync(self) -> None:
        """Drop everything queued: the sender sends a fresh snapshot instead."""
        self.changes.clear()
        self.progress.clear()
        self.needs_resync = True
        self._ready.set()

    def drain(self) -> list[dict[str, Any]]:
        """Everything queued, in order: changes, then latest progress, then figures."""
        self._ready.clear()
        messages: list[dict[str, Any]] = list(self.changes)
        messages.extend(self.progress.values())
        self.changes.clear()
        self.progress.clear()
        if self.stats is not None:
            messages.append({"kind": "stats", "stats": self.stats})
            self.stats = None
        return messages

    async def wait(self) -> None:
        """Wait until something is queued (or a resync is asked for)."""
        while not (self.changes or self.progress or self.stats is not None or self.needs_resync):
            self._ready.clear()
            await self._ready.wait()


class DashboardHub:
    """Dashboard sockets of one web process: their relay subscription and the shared STATS."""

    def __init__(self, relay: Relay, client: AsyncClient, interval_s: float = STATS_INTERVAL_S) -> None:
        self.relay = relay
        self.client = client
        self.interval_s = interval_s
        self.watches: set[DashboardWatch] = set()
        self.stats_calls = 0
        self._poller: asyncio.Task[None] | None = None

    @contextlib.asynccontextmanager
    async def join(self) -> AsyncIterator[DashboardWatch]:
        """A dashboard's watch for the block: subscribed to all jobs, fed the figures."""
        watch = DashboardWatch()
        self.watches.add(watch)
        if self._poller is None or self._poller.done():
            self._poller = asyncio.create_task(self._poll(), name="jobcast-dashboard-stats")
        try:
            async with self.relay.watch_all(watch):
                yield watch
        finally:
            self.watches.discard(watch)
            if not self.watches:
                await self.close()

    async def stats(self) -> dict[str, Any]:
        """The broker's figures, or ``{"error": ...}`` when it does not answer."""
        self.stats_calls += 1
        try:
            return await self.client.stats()
        except (TimeoutError, JobcastError) as exc:
            logger.warning("dashboard: no stats from the broker: %s", exc)
            return {"error": "the broker did not answer"}

    async def _poll(self) -> None:
        while self.watches:
            await asyncio.sleep(self.interval_s)
            try:
                stats = await self.stats()
            except Exception:  # the loop boundary: the open dashboards keep their feed
                logger.warning("dashboard: stats failed", exc_info=True)
                continue
            for watch in list(self.watches):
                watch.push_stats(stats)

    async def close(self) -> None:
        """Stop the STATS task (the lifespan calls this on shutdown)."""
        poller, self._poller = self._poller, None
        if poller is not None and poller is not asyncio.current_task():
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poller
