"""Queues (pure): per-task priority lanes, delayed jobs, a job's place in line, retry back-off.

Each lane numbers its entries with contiguous ordinals, so a job's place in its lane is
``its ordinal - the head's ordinal - entries removed between them`` (``Lane``): position
costs O(log removed), never a walk over the queue.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable
from typing import Final

from broker.queue_position import Lane

PRIORITY_RANK: Final = {"high": 0, "normal": 1, "low": 2}
RETRY_BASE_S: Final = 0.5
RETRY_MAX_S: Final = 60.0


class JobQueue:
    """Ready jobs per task and priority (FIFO within one), plus jobs waiting for run_at."""

    def __init__(self) -> None:
        self._ready: dict[str, tuple[Lane, Lane, Lane]] = {}
        self._where: dict[str, tuple[str, int, int]] = {}  # ready job id -> (task, rank, ordinal)
        self._delayed: list[tuple[float, int, str, str, str]] = []
        self._delayed_ids: set[str] = set()
        self._counter = 0

    def push(self, job_id: str, task: str, priority: str, run_at: float, now_wall: float) -> None:
        """Queue a job; it becomes ready at ``run_at`` (wall-clock seconds)."""
        self.discard(job_id)
        self._counter += 1
        if run_at > now_wall:
            heapq.heappush(self._delayed, (run_at, self._counter, job_id, task, priority))
            self._delayed_ids.add(job_id)
            return
        rank = PRIORITY_RANK[priority]
        self._where[job_id] = (task, rank, self.lanes(task)[rank].append(self._counter, job_id))

    def lanes(self, task: str) -> tuple[Lane, Lane, Lane]:
        """The task's three lanes (high, normal, low), created on first use."""
        lanes = self._ready.get(task)
        if lanes is None:
            lanes = self._ready[task] = (Lane(), Lane(), Lane())
        return lanes

    def discard(self, job_id: str) -> None:
        """Take a job out of line (cancelled, or started some other way); no-op if absent."""
        where = self._where.pop(job_id, None)
        if where is not None:
            task, rank, ordinal = where
            self._ready[task][rank].remove(ordinal)
        self._delayed_ids.discard(job_id)  # its heap entry is skipped when it comes due

    def promote_due(self, now_wall: float) -> int:
        """Move delayed jobs whose time has come to the ready queues; return how many."""
        moved = 0
        while self._delayed and self._delayed[0][0] <= now_wall:
            _, _, job_id, task, priority = heapq.heappop(self._delayed)
            if job_id in self._delayed_ids:
                self._delayed_ids.discard(job_id)
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
        best: Lane | None = None
        best_rank: tuple[int, int] | None = None
        for task in tasks:
            for rank, lane in enumerate(self._ready.get(task, ())):
                head = self._live_head(lane, is_live)
                if head is not None and (best_rank is None or (rank, head) < best_rank):
                    best, best_rank = lane, (rank, head)
                if head is not None:
                    break
        if best is None:
            return None
        job_id = best.popleft()
        self._where.pop(job_id, None)
        return job_id

    def _live_head(self, lane: Lane, is_live: Callable[[str], bool]) -> int | None:
        """The enqueue counter of the lane's first live entry (dead ones are dropped)."""
        while (head := lane.head()) is not None and not is_live(head[1]):
            self.discard(lane.popleft())
        return None if head is None else head[0]

    def position(self, job_id: str) -> int | None:
        """1 for the next ready job of its task, counting higher lanes; None if not ready."""
        where = self._where.get(job_id)
        if where is None:
            return None
        task, rank, ordinal = where
        lanes = self._ready[task]
        return sum(lane.live() for lane in lanes[:rank]) + lanes[rank].ahead(ordinal) + 1

    def is_delayed(self, job_id: str) -> bool:
        """Whether the job waits for its run_at (not yet in line)."""
        return job_id in self._delayed_ids

    def ready_count(self, task: str) -> int:
        """Live ready jobs of ``task``."""
        return sum(lane.live() for lane in self._ready.get(task, ()))

    def has_ready(self, task: str) -> bool:
        """Whether some job for ``task`` is ready."""
        return self.ready_count(task) > 0

    def ready_tasks(self) -> list[str]:
        """Tasks with at least one ready entry."""
        return [task for task, lanes in self._ready.items() if any(lane.live() for lane in lanes)]

    def any_ready(self) -> bool:
        """Whether any job is ready (delayed ones are not)."""
        return bool(self._where)

    def depth(self) -> int:
        """Jobs held, ready and delayed."""
        return len(self._where) + len(self._delayed_ids)


def retry_delay_s(attempts: int) -> float:
    """Back-off before the next attempt after ``attempts`` failed ones."""
    return float(min(RETRY_BASE_S * 2 ** max(attempts - 1, 0), RETRY_MAX_S))
