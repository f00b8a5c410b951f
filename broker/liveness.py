"""Paranoid Pirate heartbeat bookkeeping, shared by the broker and the workers (pure).

Each side sends a heartbeat every ``interval_s`` when it has sent nothing else, and
declares the peer dead after ``liveness`` intervals without hearing from it. Timings can be
shortened for tests through ``JOBCAST_HEARTBEAT_S``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Final

HEARTBEAT_INTERVAL_S: Final = 1.0
HEARTBEAT_LIVENESS: Final = 3
RECONNECT_INITIAL_S: Final = 0.25
RECONNECT_MAX_S: Final = 8.0


def heartbeat_interval_s() -> float:
    """The heartbeat interval: ``$JOBCAST_HEARTBEAT_S`` if set, else one second."""
    value = os.environ.get("JOBCAST_HEARTBEAT_S")
    if not value:
        return HEARTBEAT_INTERVAL_S
    interval = float(value)
    if not 0.01 <= interval <= 60:
        raise ValueError(f"JOBCAST_HEARTBEAT_S must be within 0.01..60 (got {interval})")
    return interval


@dataclass(slots=True)
class Liveness:
    """When to send the next heartbeat, and whether the peer is still alive."""

    interval_s: float
    liveness: int = HEARTBEAT_LIVENESS
    last_heard: float = 0.0
    last_sent: float = 0.0

    def on_message(self, now: float) -> None:
        """Record that anything at all arrived from the peer."""
        self.last_heard = now

    def on_sent(self, now: float) -> None:
        """Record that we sent the peer something (any message counts as a heartbeat)."""
        self.last_sent = now

    def due(self, now: float) -> bool:
        """Whether a heartbeat should be sent now."""
        return now - self.last_sent >= self.interval_s

    def expired(self, now: float) -> bool:
        """Whether the peer has been silent for ``liveness`` intervals."""
        return now - self.last_heard > self.interval_s * self.liveness

    def next_deadline(self) -> float:
        """The earliest time at which ``due`` or ``expired`` can change."""
        return min(
            self.last_sent + self.interval_s,
            self.last_heard + self.interval_s * self.liveness,
        )


@dataclass(slots=True)
class Backoff:
    """Reconnect delay that doubles after each failure, up to a cap."""

    initial_s: float = RECONNECT_INITIAL_S
    maximum_s: float = RECONNECT_MAX_S
    current_s: float = field(init=False)

    def __post_init__(self) -> None:
        self.current_s = self.initial_s  # a custom initial_s is the first delay too

    def next_delay_s(self) -> float:
        """The delay to wait now; the following one is twice as long (capped)."""
        delay = self.current_s
        self.current_s = min(self.current_s * 2, self.maximum_s)
        return delay

    def reset(self) -> None:
        """Back to the initial delay after a successful connection."""
        self.current_s = self.initial_s
