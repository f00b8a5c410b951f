"""The connected worker slots (pure): who is idle, least recently used first, and who is alive.

A slot holds the attempts it was sent, in the order it runs them: the first one runs, the
others (a slot that prefetches: ``broker.prefetch``) wait behind it. A slot that holds
none is idle; one that holds fewer than its ``prefetch`` has *room*.

An idle slot is heard from about once per heartbeat interval. One silent for longer than
``SUSPECT_AFTER_INTERVALS`` is *suspect*: it keeps its place in the idle line but is given
no work until it is heard from again. When a host drops off the network, all its slots go
silent together, yet each is declared dead on its own clock; without this, the job of the
first slot declared dead would be handed to a sibling on the same dead host, and spend
one more attempt there.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

from broker.liveness import Liveness
from broker.protocol import Ready

SUSPECT_AFTER_INTERVALS: Final = 1.5
MAX_PREFETCH: Final = 256  # the most attempts one slot may hold, whatever it announces


@dataclass(slots=True)
class WorkerSlot:
    """One connected worker slot (one agent process, one job running at a time)."""

    peer: bytes
    tasks: frozenset[str]
    liveness: Liveness
    pid: int = 0
    host: str = ""
    prefetch: int = 1
    held: dict[str, None] = dataclasses.field(default_factory=dict)  # job ids, running one first
    busy_from_before: bool = False  # still running an attempt from before it reconnected
    bundles: bool = False  # reads several messages sent as one (``broker.bundle``)
    leaving: bool = False  # said Bye while busy: finish the job, then go

    @property
    def job_id(self) -> str | None:
        """The job the slot runs now (the first one it holds), if any."""
        return next(iter(self.held), None)

    def describe(self) -> str:
        """``pid on host`` for log lines and error messages."""
        return f"worker {self.pid or '?'} on {self.host or '?'}"


class Workforce:
    """Worker slots by peer id, with an LRU line of the idle ones and their heartbeats."""

    def __init__(self, heartbeat_s: float) -> None:
        self.heartbeat_s = heartbeat_s
        self._slots: dict[bytes, WorkerSlot] = {}
        self._idle: OrderedDict[bytes, None] = OrderedDict()
        self._room: dict[bytes, None] = {}  # busy slots that prefetch and hold fewer than that
        # at or before every slot's next deadline; None: to be computed. Checked every loop
        # turn, so the slots are scanned only once one of them may be due.
        self._earliest_s: float | None = None

    def join(self, peer: bytes, msg: Ready, now: float) -> WorkerSlot:
        """Register a slot that sent Ready; it is idle unless still busy from before."""
        liveness = Liveness(self.heartbeat_s, last_heard=now, last_sent=now)
        prefetch = min(max(msg.prefetch, 1), MAX_PREFETCH)
        slot = WorkerSlot(peer, frozenset(msg.tasks), liveness, msg.pid, msg.host, prefetch)
        slot.busy_from_before = msg.busy
        slot.bundles = msg.bundles
        self._slots[peer] = slot
        self._lower_deadline(slot)
        if not msg.busy:
            self._mark_idle(peer)
        return slot

    def leave(self, peer: bytes) -> WorkerSlot | None:
        """Forget a slot; return it (with the job it held) if it was known."""
        self._idle.pop(peer, None)
        self._room.pop(peer, None)
        return self._slots.pop(peer, None)

    def take(self, slot: WorkerSlot, job_id: str) -> None:
        """The slot now holds ``job_id`` too: no longer idle."""
        self._idle.pop(slot.peer, None)
        slot.held[job_id] = None
        self._note_room(slot)

    def release(self, slot: WorkerSlot, job_id: str) -> None:
        """The slot is done with ``job_id``; when it holds nothing more it goes back to the
        end of the idle line, or away if leaving."""
        slot.held.pop(job_id, None)
        self._note_room(slot)
        if slot.held:
            return
        slot.busy_from_before = False
        if slot.leaving:
            self._slots.pop(slot.peer, None)
        else:
            self._mark_idle(slot.peer)

    def retire(self, slot: WorkerSlot) -> None:
        """The slot said Bye while busy: it finishes its job and takes no other."""
        slot.leaving = True
        self._idle.pop(slot.peer, None)
        self._room.pop(slot.peer, None)

    def with_room(self, now: float) -> list[WorkerSlot]:
        """Busy slots that may hold more (they prefetch), not suspect."""
        slots = (self._slots[peer] for peer in self._room)
        return [slot for slot in slots if not self._suspect(slot, now)]

    def _note_room(self, slot: WorkerSlot) -> None:
        if 0 < len(slot.held) < slot.prefetch and not slot.leaving:
            self._room[slot.peer] = None
        else:
            self._room.pop(slot.peer, None)

    def idle_in_order(self) -> list[WorkerSlot]:
        """Idle slots, the one idle longest first."""
        return [self._slots[peer] for peer in self._idle]

    def dispatchable(self, now: float) -> list[WorkerSlot]:
        """Idle slots that are not suspect, the one idle longest first."""
        return [slot for slot in self.idle_in_order() if not self._suspect(slot, now)]

    def heard(self, slot: WorkerSlot, now: float) -> bool:
        """Record a message from ``slot``; True if it was an idle suspect (now worth a dispatch)."""
        revived = slot.peer in self._idle and self._suspect(slot, now)
        slot.liveness.on_message(now)
        self._lower_deadline(slot)
        return revived

    def sent(self, slot: WorkerSlot, now: float) -> None:
        """Record a message sent to ``slot`` (any message counts as a heartbeat)."""
        slot.liveness.on_sent(now)
        self._lower_deadline(slot)

    def _lower_deadline(self, slot: WorkerSlot) -> None:
        if self._earliest_s is not None:
            self._earliest_s = min(self._earliest_s, slot.liveness.next_deadline())

    def _suspect(self, slot: WorkerSlot, now: float) -> bool:
        return now - slot.liveness.last_heard > self.heartbeat_s * SUSPECT_AFTER_INTERVALS

    def expired(self, now: float) -> list[WorkerSlot]:
        """Slots silent for longer than their liveness allows."""
        if now < self.next_deadline():
            return []
        self._earliest_s = None  # deadlines move on as slots are heard from and sent to
        return [slot for slot in self._slots.values() if slot.liveness.expired(now)]

    def heartbeats_due(self, now: float) -> list[bytes]:
        """Peers that should be sent a heartbeat now."""
        if now < self.next_deadline():
            return []
        self._earliest_s = None
        return [peer for peer, slot in self._slots.items() if slot.liveness.due(now)]

    def next_deadline(self) -> float:
        """The earliest heartbeat or expiry time over all slots (no later than it: a slot
        heard from since the last scan may be due later than this says)."""
        if self._earliest_s is None:
            deadlines = (slot.liveness.next_deadline() for slot in self._slots.values())
            self._earliest_s = min(deadlines, default=float("inf"))
        return self._earliest_s

    def get(self, peer: bytes) -> WorkerSlot | None:
        """The slot of ``peer``, if connected."""
        return self._slots.get(peer)

    def prefetched(self) -> int:
        """Jobs held by slots behind the one each runs (counted as running by their state)."""
        return sum(len(slot.held) - 1 for slot in self._slots.values() if slot.held)

    def idle_count(self) -> int:
        """How many slots are idle."""
        return len(self._idle)

    def _mark_idle(self, peer: bytes) -> None:
        self._idle.pop(peer, None)
        self._idle[peer] = None

    def __contains__(self, peer: object) -> bool:
        return peer in self._slots

    def __iter__(self) -> Iterator[WorkerSlot]:
        return iter(list(self._slots.values()))

    def __len__(self) -> int:
        return len(self._slots)


def restrict_ready(ready: Ready, allowed: frozenset[str] | None) -> tuple[Ready, list[str]]:
    """``ready`` with only the allowed tasks, and the tasks refused (None allows all)."""
    if allowed is None:
        return ready, []
    refused = [task for task in ready.tasks if task not in allowed]
    if not refused:
        return ready, []
    kept = [task for task in ready.tasks if task in allowed]
    return dataclasses.replace(ready, tasks=kept), refused
