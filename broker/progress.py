"""Progress bookkeeping (pure): ETA from a smoothed rate, and the Clone-pattern join."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final, Protocol, TypeVar

ETA_MIN_SAMPLES: Final = 3
ETA_SMOOTHING: Final = 0.3  # weight of the newest rate in the moving average


@dataclass(slots=True)
class EtaEstimator:
    """Seconds left for one attempt, from an exponentially smoothed progress rate."""

    samples: int = 0
    last_time: float = 0.0
    last_done: int = 0
    rate_per_s: float | None = None
    history: list[float] = field(default_factory=list)

    def observe(self, now: float, done: int, total: int) -> float | None:
        """Record ``done`` of ``total`` at ``now``; return the ETA in seconds, or None."""
        if self.samples and now > self.last_time and done >= self.last_done:
            rate = (done - self.last_done) / (now - self.last_time)
            previous = self.rate_per_s
            self.rate_per_s = (
                rate if previous is None else (ETA_SMOOTHING * rate + (1 - ETA_SMOOTHING) * previous)
            )
        self.samples += 1
        self.last_time, self.last_done = now, done
        return self.eta_s(done, total)

    def eta_s(self, done: int, total: int) -> float | None:
        """The estimate for the latest sample (None until enough samples and a rate)."""
        if self.samples < ETA_MIN_SAMPLES or not self.rate_per_s or total <= 0:
            return None
        return round(max(total - done, 0) / self.rate_per_s, 1)


class Sequenced(Protocol):
    """Anything carrying a per-job sequence number."""

    @property
    def seq(self) -> int: ...


S = TypeVar("S", bound=Sequenced)


def join_after_snapshot(buffered: Iterable[S], snapshot_seq: int) -> list[S]:
    """Clone-pattern join: keep only events newer than the snapshot, in seq order."""
    return sorted((event for event in buffered if event.seq > snapshot_seq), key=_seq)


def _seq(event: Sequenced) -> int:
    return event.seq


def is_newer(seq: int, last_seen_seq: int) -> bool:
    """Whether an event with ``seq`` should be delivered after ``last_seen_seq``."""
    return seq > last_seen_seq


class Subscriptions:
    """Which topics the events socket's subscribers want (ZeroMQ SUBSCRIBE is a prefix).

    The broker skips encoding and publishing events nobody subscribed to. Job ids all have
    the same length, so a job-id topic matches exactly; shorter prefixes (the empty prefix,
    the all-jobs topic) are few and scanned.
    """

    def __init__(self, id_length: int = 22) -> None:
        self.id_length = id_length
        self.exact: dict[bytes, int] = {}
        self.prefixes: dict[bytes, int] = {}

    def change(self, topic: bytes, subscribed: bool) -> None:
        """Count one subscribe or unsubscribe of ``topic``."""
        table = self.exact if len(topic) == self.id_length else self.prefixes
        count = table.get(topic, 0) + (1 if subscribed else -1)
        if count > 0:
            table[topic] = count
        else:
            table.pop(topic, None)

    def subscribed(self, topic: bytes) -> bool:
        """Whether some subscriber asked for exactly ``topic`` (not just a prefix of it)."""
        return topic in (self.exact if len(topic) == self.id_length else self.prefixes)

    def wanted(self, topic: bytes) -> bool:
        """Whether any subscriber would receive a message with this topic."""
        if topic in self.exact:
            return True
        return any(topic.startswith(prefix) for prefix in self.prefixes)
