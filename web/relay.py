"""Progress relay: one ZeroMQ SUB reader fans job events out to per-WebSocket queues.

The broker's events XPUB publishes ``[topic=job id, "JC01", "EVENT", header]``. One
``Relay`` per web process owns one SUB socket and one reader task. Each WebSocket gets a
``Watch``: a bounded, keep-latest queue that the reader fills without ever waiting, and that
the connection's own handler drains. A browser that stops reading therefore never slows
the reader or the other browsers.

Every event carries absolute figures (done, total, state), so a full queue drops its oldest
*intermediate* event; a final-state event is never dropped.

The SUB socket subscribes to a job's topic on its first watcher and unsubscribes on its last;
the same goes for the all-jobs topic (``ALL_JOBS_TOPIC``) and dashboards (``watch_all``).
ZeroMQ subscriptions are prefix matches, so the reader compares the topic frame for exact
equality before it hands an event to anyone.

Joining follows the Clone pattern: subscribe, then fetch the snapshot, then drop buffered
events with ``seq`` ≤ the snapshot's (``clone_join``). ``Cursor`` then keeps the stream free
of duplicates.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Final, Protocol, TypeVar

import zmq
import zmq.asyncio

from broker.errors import ProtocolError
from broker.jobs import FINAL_STATES, is_job_id
from broker.protocol import ALL_JOBS_TOPIC, Event, decode
from broker.security import ClientKeys, configure_client

logger = logging.getLogger(__name__)

SUB_RCVHWM: Final = 100_000
EVENT_FIELDS: Final = ("id", "seq", "epoch", "state", "done", "total", "message", "eta_s",
                       "ts", "attempts", "error")  # fmt: skip
SNAPSHOT_FIELDS: Final = (*EVENT_FIELDS, "task", "max_attempts", "created_at", "started_at",
                          "finished_at", "cached")  # fmt: skip
# when present: a queued job's place; a job's log lines; a group's size, counts, changed
# child and children rows
OPTIONAL_FIELDS: Final = (
    "position",
    "starts_in_s",
    "log",
    "log_count",
    "size",
    "counts",
    "child",
    "children",
)


# --- pure: messages, the keep-latest buffer, the join and the cursor --------------------


def is_final(message: Mapping[str, Any]) -> bool:
    """Whether a message (snapshot or event) carries a final state."""
    return message.get("state") in FINAL_STATES


class Message(dict[str, Any]):
    """A message for browsers; its JSON text is encoded once, however many watchers get it."""

    __slots__ = ("_text",)

    def text(self) -> str:
        """The message as compact JSON (cached: one event is shared by all its watchers)."""
        try:
            return self._text
        except AttributeError:
            self._text: str = json.dumps(self, separators=(",", ":"), ensure_ascii=False)
            return self._text


def event_message(event: Event) -> Message:
    """The JSON a browser receives for one broker event."""
    message = Message((name, getattr(event, name)) for name in EVENT_FIELDS)
    extra = event.extra or {}
    message.update((name, extra[name]) for name in OPTIONAL_FIELDS if name in extra)
    message["kind"] = "event"
    return message


def snapshot_message(job: Mapping[str, Any]) -> Message:
    """The JSON a browser receives for a job snapshot (never the result: it may be large)."""
    message = Message((name, job.get(name)) for name in SNAPSHOT_FIELDS)
    message.update((name, job[name]) for name in OPTIONAL_FIELDS if name in job)
    message["kind"] = "snapshot"
    return message


class KeepLatestBuffer:
    """A bounded FIFO of messages that drops the oldest non-final one when full.

    Final-state messages are never dropped, so the buffer may exceed ``capacity`` only by
    the number of finals it holds (in practice one).
    """

    __slots__ = ("capacity", "items", "dropped")

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1 (got {capacity})")
        self.capacity = capacity
        self.items: list[dict[str, Any]] = []  # a few at most: an empty deque costs 10 times more
        self.dropped = 0

    def __len__(self) -> int:
        return len(self.items)

    def push(self, message: dict[str, Any]) -> None:
        """Append a message, making room by dropping the oldest intermediate one."""
        if len(self.items) >= self.capacity:
            self._drop_oldest_intermediate()
        self.items.append(message)

    def _drop_oldest_intermediate(self) -> None:
        for index, item in enumerate(self.items):
            if not is_final(item):
                del self.items[index]
                self.dropped += 1
                return

    def pop(self) -> dict[str, Any]:
        """Remove and return the oldest message (IndexError when empty)."""
        return self.items.pop(0)

    def drain(self) -> list[dict[str, Any]]:
        """Remove and return every buffered message, oldest first."""
        items, self.items = self.items, []
        return items


def clone_join(
    snapshot: Mapping[str, Any], buffered: Iterable[Mapping[str, Any]], after: int | None = None
) -> list[dict[str, Any]]:
    """The messages to send when a watcher joins, in order (Clone pattern).

    ``snapshot`` was fetched *after* subscribing, and ``buffered`` holds the events that
    arrived meanwhile. The snapshot goes first unless the client already has it (its seq
    ≤ ``after`` and not final); then the buffered events newer than both, oldest first.
    A final snapshot ends the stream: nothing after it is sent.
    """
    snap_seq = int(snapshot.get("seq") or 0)
    floor = snap_seq if after is None else max(snap_seq, after)
    messages: list[dict[str, Any]] = []
    if after is None or snap_seq > after or is_final(snapshot):
        messages.append(dict(snapshot))
    if is_final(snapshot):
        return messages
    for event in buffered:
        if int(event.get("seq") or 0) > floor or _newer_epoch(event, snapshot):
            messages.append(dict(event))
            if is_final(event):
                break
    return messages


def _newer_epoch(event: Mapping[str, Any], snapshot: Mapping[str, Any]) -> bool:
    return int(event.get("epoch") or 0) > int(snapshot.get("epoch") or 0)


@dataclass(slots=True)
class Cursor:
    """What a client has seen: admits only messages newer than that (no duplicates).

    A newer broker ``epoch`` (a restarted broker) is admitted even if its seq is not higher.
    """

    seq: int = -1
    epoch: int = 0

    @classmethod
    def after_join(
        cls, snapshot: Mapping[str, Any], sent: Iterable[Mapping[str, Any]], after: int | None
    ) -> Cursor:
        """The cursor once ``clone_join``'s messages (``sent``) went out."""
        cursor = cls(
            seq=max(int(snapshot.get("seq") or 0), -1 if after is None else after),
            epoch=int(snapshot.get("epoch") or 0),
        )
        for message in sent:
            cursor.admit(message)  # moves forward only
        return cursor

    def admit(self, message: Mapping[str, Any]) -> bool:
        """Whether to send ``message``; if so, the cursor moves to it."""
        seq, epoch = int(message.get("seq") or 0), int(message.get("epoch") or self.epoch)
        if (epoch, seq) <= (self.epoch, self.seq):
            return False
        self.seq, self.epoch = seq, epoch
        return True


# --- I/O: one watcher's queue, and the SUB reader ----------------------------------------


class Watcher(Protocol):
    """What the relay hands events to: a queue that never blocks the reader."""

    def push(self, event: Event, message: Message | None = None) -> None:
        """Queue one event (``message`` is its browser JSON, shared by all watchers)."""


W = TypeVar("W", bound=Watcher)


class WatchEnded(Exception):
    """The watcher went away (``Watch.end``): nothing more is read from this watch."""


class Watch:
    """One WebSocket's view of one job: a keep-latest queue the relay fills without waiting."""

    __slots__ = ("job_id", "buffer", "needs_resync", "last_push", "quiet", "ended", "_last_seq", "_waiter")

    def __init__(self, job_id: str, capacity: int) -> None:
        self.job_id = job_id
        self.buffer = KeepLatestBuffer(capacity)
        self.needs_resync = False  # a seq gap on the wire: the caller should refetch
        self.last_push = time.monotonic()  # for ``Relay.wake_quiet``
        self.quiet = False  # no event for a while: ``get`` returns None once
        self.ended = False  # the watcher went away: ``get`` raises WatchEnded
        self._last_seq = -1
        self._waiter: asyncio.Future[None] | None = None  # only while ``get`` waits

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def push(self, event: Event, message: Message | None = None) -> None:
        """Queue an event (never blocks); note a gap in the broker's sequence."""
        if 0 <= self._last_seq < event.seq - 1:
            self.needs_resync = True
        self._last_seq = max(self._last_seq, event.seq)
        self.buffer.push(message if message is not None else event_message(event))
        self.last_push = time.monotonic()
        self.quiet = False
        self._wake()

    def drain(self) -> list[dict[str, Any]]:
        """Everything queued so far, oldest first."""
        return self.buffer.drain()

    def wake_quiet(self) -> None:
        """Make a waiting ``get`` return None: the stream has been quiet (see ``Relay``)."""
        self.quiet = True
        self._wake()

    def end(self) -> None:
        """The watcher went away: a waiting or later ``get`` raises WatchEnded."""
        self.ended = True
        self._wake()

    async def get(self) -> dict[str, Any] | None:
        """The next queued message, waiting for one; None once after a quiet spell.

        Raises:
            WatchEnded: ``end`` was called.
        """
        while True:
            if self.ended:
                raise WatchEnded(self.job_id)
            if self.buffer:
                return self.buffer.pop()
            if self.quiet:
                self.quiet = False
                return None
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None


class Relay:
    """Owns the SUB socket: (un)subscribes per job and fans events out to watches."""

    def __init__(self, context: zmq.asyncio.Context, events_url: str, capacity: int = 16,
                 curve: ClientKeys | None = None) -> None:  # fmt: skip
        self.capacity = capacity
        self.watches: dict[bytes, set[Watcher]] = {}
        self.socket = context.socket(zmq.SUB)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.RCVHWM, SUB_RCVHWM)
        configure_client(self.socket, curve)
        self.socket.connect(events_url)
        self.received = 0

    async def run(self) -> None:
        """The reader loop: receive, match the topic exactly, push to each watch."""
        while True:
            frames = await self.socket.recv_multipart()
            self.received += 1
            self.dispatch(frames)

    def wake_quiet(self, now: float, quiet_s: float) -> int:
        """Wake every job watch that had no event for ``quiet_s`` (how many).

        PUB drops under load, so a watcher must not wait on the wire forever: a woken
        watch's ``get`` returns None and its connection reads a fresh snapshot. One sweep
        for all watches replaces a timer armed and cancelled per message and watcher.
        """
        woken = 0
        for watchers in self.watches.values():
            for watch in watchers:
                if isinstance(watch, Watch) and now - watch.last_push >= quiet_s:
                    watch.last_push = now  # once per quiet spell
                    watch.wake_quiet()
                    woken += 1
        return woken

    async def sweep_quiet(self, quiet_s: float) -> None:
        """``wake_quiet`` four times per ``quiet_s``, until cancelled."""
        while True:
            await asyncio.sleep(quiet_s / 4)
            self.wake_quiet(time.monotonic(), quiet_s)

    def dispatch(self, frames: list[bytes]) -> None:
        """Hand one published message to the watchers of exactly its topic."""
        watches = self.watches.get(frames[0]) if frames else None
        if not watches:
            return  # a prefix match for a longer id, or a topic nobody watches any more
        try:
            event = decode(frames)
        except ProtocolError as exc:
            logger.warning("job %r: dropped a malformed event: %s", frames[0][:64], exc)
            return
        if not isinstance(event, Event):
            return
        message = event_message(event)  # built and later encoded once for all its watchers
        for watch in watches:
            watch.push(event, message)

    @asynccontextmanager
    async def watch(self, job_id: str) -> AsyncIterator[Watch]:
        """Watch one job for the duration of the block (subscribing on the first watcher).

        Raises:
            ValueError: ``job_id`` does not have the shape of a job id.
        """
        if not is_job_id(job_id):
            raise ValueError(f"not a job id: {job_id[:64]!r}")
        async with self._subscribed(job_id.encode(), Watch(job_id, self.capacity)) as watch:
            yield watch

    def watch_all(self, watcher: W) -> contextlib.AbstractAsyncContextManager[W]:
        """Hand every job's events (the all-jobs topic) to ``watcher`` for the block."""
        return self._subscribed(ALL_JOBS_TOPIC, watcher)

    @asynccontextmanager
    async def _subscribed(self, topic: bytes, watch: W) -> AsyncIterator[W]:
        if topic not in self.watches:
            self.watches[topic] = set()
            self.socket.setsockopt(zmq.SUBSCRIBE, topic)
        self.watches[topic].add(watch)
        try:
            yield watch
        finally:
            self._release(topic, watch)

    def _release(self, topic: bytes, watch: Watcher) -> None:
        watchers = self.watches.get(topic)
        if watchers is None:
            return
        watchers.discard(watch)
        if not watchers:
            del self.watches[topic]
            if not self.socket.closed:
                self.socket.setsockopt(zmq.UNSUBSCRIBE, topic)

    def close(self) -> None:
        """Close the SUB socket (the reader task must be cancelled first)."""
        self.socket.close(linger=0)
