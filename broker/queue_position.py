"""A queued job's place in line and its expected start (pure).

``Lane`` is one FIFO priority lane whose entries carry contiguous ordinals, so the number
of live jobs ahead of one is arithmetic plus a bisect over the few removed-but-not-yet-
dropped entries: no walk over 100,000 queued jobs. ``Forecast`` turns what is known of a
task's slots and run times into ``starts_in_s``; ``RunTimes`` keeps the observed mean.
"""

from __future__ import annotations

import bisect
from collections import defaultdict, deque
from dataclasses import dataclass
from typing import Any, Final

RUN_TIME_WINDOW: Final = 20  # the mean run time is over a task's last runs
START_CHANGE_MIN_S: Final = 1.0  # smaller moves of starts_in_s are not worth an event
START_CHANGE_RATIO: Final = 0.1
PLACE_FIELDS: Final = ("position", "starts_in_s")


class Lane:
    """A FIFO of ``(enqueue counter, job id)`` whose entries have contiguous ordinals."""

    def __init__(self) -> None:
        self._entries: deque[tuple[int, str]] = deque()
        self._head_ordinal = 0
        self._removed: list[int] = []  # sorted ordinals of removed entries still in _entries

    def append(self, counter: int, job_id: str) -> int:
        """Add a job at the end; return its ordinal in this lane."""
        self._entries.append((counter, job_id))
        return self._head_ordinal + len(self._entries) - 1

    def remove(self, ordinal: int) -> None:
        """Take the entry with ``ordinal`` out of line (dropped when it reaches the head)."""
        if not self._head_ordinal <= ordinal < self._head_ordinal + len(self._entries):
            return
        index = bisect.bisect_left(self._removed, ordinal)
        if index == len(self._removed) or self._removed[index] != ordinal:
            self._removed.insert(index, ordinal)

    def head(self) -> tuple[int, str] | None:
        """The first live entry, or None."""
        self._drop_removed_head()
        return self._entries[0] if self._entries else None

    def popleft(self) -> str:
        """Remove and return the first live job id (IndexError when empty)."""
        self._drop_removed_head()
        self._head_ordinal += 1
        return self._entries.popleft()[1]

    def live(self) -> int:
        """Live entries in the lane."""
        return len(self._entries) - len(self._removed)

    def ahead(self, ordinal: int) -> int:
        """Live entries ahead of the one with ``ordinal``."""
        return ordinal - self._head_ordinal - bisect.bisect_left(self._removed, ordinal)

    def _drop_removed_head(self) -> None:
        count = 0
        while count < len(self._removed) and self._removed[count] == self._head_ordinal + count:
            count += 1
        if count:
            del self._removed[:count]  # one slice: a mass cancel drains in linear time
            for _ in range(count):
                self._entries.popleft()
            self._head_ordinal += count


class RunTimes:
    """The mean run time of each task over its last ``RUN_TIME_WINDOW`` successful runs."""

    def __init__(self) -> None:
        self._runs: defaultdict[str, deque[float]] = defaultdict(lambda: deque(maxlen=RUN_TIME_WINDOW))
        self._sums: defaultdict[str, float] = defaultdict(float)

    def record(self, task: str, seconds: float) -> None:
        """Note one finished run of ``task``."""
        if seconds < 0:
            return
        runs = self._runs[task]
        if len(runs) == runs.maxlen:
            self._sums[task] -= runs[0]
        runs.append(seconds)
        self._sums[task] += seconds

    def mean_s(self, task: str) -> float | None:
        """The mean run time, or None before the first run."""
        runs = self._runs.get(task)
        return max(self._sums[task] / len(runs), 0.0) if runs else None


@dataclass(frozen=True, slots=True)
class Forecast:
    """When each channel that serves a task comes free, and how long one of its runs takes.

    A channel is a live slot offering the task (at most ``concurrency`` of them when the
    task has a limit); ``None`` means the slot is busy for an unknown time.
    """

    free_in_s: tuple[float | None, ...]
    mean_run_s: float | None

    def starts_in_s(self, position: int) -> float | None:
        """Seconds until the job at ``position`` starts (list scheduling), or None."""
        if not self.free_in_s or position < 1:
            return None
        rounds, rest = divmod(position - 1, len(self.free_in_s))
        free = self.free_in_s[rest]
        if free is None or (rounds and self.mean_run_s is None):
            return None
        return round(free + rounds * (self.mean_run_s or 0.0), 1)


def forecast(
    slots_free_in_s: list[float | None],
    running_in_s: list[float | None],
    limit: int | None,
    mean_run_s: float | None,
) -> Forecast:
    """The forecast of one task.

    Args:
        slots_free_in_s: for each live slot offering the task, 0 if idle, else the time
            left of its job (None if unknown).
        running_in_s: the time left of each running job of this task.
        limit: the task's concurrency limit, if any.
        mean_run_s: the task's mean run time, if known.
    """
    times = sorted(slots_free_in_s, key=_unknown_last)
    if limit is not None:  # only `limit` channels, some held by this task's running jobs
        running = sorted(running_in_s, key=_unknown_last)
        times = (running + [0.0] * max(limit - len(running), 0))[: min(limit, len(times))]
    return Forecast(tuple(sorted(times, key=_unknown_last)), mean_run_s)


def _unknown_last(value: float | None) -> float:
    return float("inf") if value is None else value


def time_left_s(eta_s: float | None, elapsed_s: float, mean_run_s: float | None) -> float | None:
    """A running job's time left: its ETA, else its task's mean minus what it has run."""
    if eta_s is not None:
        return eta_s
    return None if mean_run_s is None else max(mean_run_s - elapsed_s, 0.0)


def place_changed(extra: dict[str, Any], position: int | None, starts_in_s: float | None) -> bool:
    """Whether a new place is worth an event: a new position, or a start moved noticeably."""
    if extra.get("position") != position:
        return True
    old = extra.get("starts_in_s")
    if old is None or starts_in_s is None:
        return old != starts_in_s
    return bool(abs(old - starts_in_s) >= max(START_CHANGE_MIN_S, START_CHANGE_RATIO * old))


def clear_place(extra: dict[str, Any]) -> None:
    """Drop the place fields (the job runs or ended)."""
    for name in PLACE_FIELDS:
        extra.pop(name, None)
