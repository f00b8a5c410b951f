"""Queues (pure): per-task priority queues, delayed jobs, retry back-off."""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable, Iterable
from typing import Final

PRIORITY_RANK: Final = {"high": 0, "normal": 1, "low": 2}
RETRY_BASE_S: Final = 0.5
RETRY_MAX_S: Final = 60.0


class JobQueue:
    """Ready jobs per task and priority (FIFO within one), plus jobs waiting for run_at."""

    def __init__(self) -> None:
        self._ready: dict[str, list[deque[tuple[int, str]]]] = {}
        self._delayed: list[tuple[float, int, str, str, str]] = []
        self._counter = 0

    def push(self, job_id: str, task: str, priority: str, run_at: float, now_wall: float) -> None:
        """Queue a job; it becomes ready at ``run_at`` (wall-clock seconds)."""
        self._counter += 1
        if run_at > now_wall:
            heapq.heappush(self._delayed, (run_at, self._counter, job_id, task, priority))
            return
        lanes = self._ready.setdefault(task, [deque(), deque(), deque()])
        lanes[PRIORITY_RANK[priority]].append((self._counter, job_id))

    def promote_due(self, now_wall: float) -> int:
        """Move delayed jobs whose time has come to the ready queues; return how many."""
        moved = 0
        while self._delayed and self._delayed[0][0] <= now_wall:
            _, _, job_id, task, priority = heapq.heappop(self._delayed)
            self.push(job_id, task, priority, 0.0, now_wall)
            moved += 1
        return moved

    def next_due(self) -> float | None:
        """Wall-clock time of the earliest delayed job, if any."""
        return float(self._delayed[0][0]) if self._delayed else None

    def pop_for(self, tasks: Iterable[str], is_live: Callable[[str], bool]) -> str | None:
        """Take the best ready job among ``tasks``: highest priority, then oldest.

        Entries for which ``is_live`` is false (cancelled meanwhile) are dropped lazily.
        """
        best: deque[tuple[int, str]] | None = None
        best_rank: tuple[int, int] | None = None
        for task in tasks:
            for rank, lane in enumerate(self._ready.get(task, ())):
                while lane and not is_live(lane[0][1]):
                    lane.popleft()
                if lane and (best_rank is None or (rank, lane[0][0]) < best_rank):
                    best, best_rank = lane, (rank, lane[0][0])
                if lane:
                    break
        return best.popleft()[1] if best is not None else None

    def has_ready(self, task: str) -> bool:
        """Whether some job for ``task`` may be ready (may count cancelled leftovers)."""
        return any(self._ready.get(task, ()))

    def ready_tasks(self) -> list[str]:
        """Tasks with at least one ready entry."""
        return [task for task, lanes in self._ready.items() if any(lanes)]

    def depth(self) -> int:
        """Entries held, ready and delayed (may count cancelled leftovers)."""
        ready = sum(len(lane) for lanes in self._ready.values() for lane in lanes)
        return ready + len(self._delayed)


def retry_delay_s(attempts: int) -> float:
    """Back-off before the next attempt after ``attempts`` failed ones."""
    return float(min(RETRY_BASE_S * 2 ** max(attempts - 1, 0), RETRY_MAX_S))
