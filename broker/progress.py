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
            self.rate_per_s = rate if previous is None else (
                ETA_SMOOTHING * rate + (1 - ETA_SMOOTHING) * previous
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
