"""Per-task counts of live jobs for ``jobcast stats`` and the dashboard (pure)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any, Final

from broker.jobs import Job, State

MAX_TASKS_LISTED: Final = 100  # the deepest queues; a flood of task names stays bounded


StateCounts = Counter[tuple[str, State]]  # (task, state) → live jobs


def count_states(jobs: Iterable[Job]) -> StateCounts:
    """Live jobs per (task, state): one pass, shared by ``stats`` and the metrics."""
    return Counter((job.task, job.state) for job in jobs)


def live_counts(per_task: StateCounts) -> dict[str, Any]:
    """``queued`` and ``running`` totals, and ``queues``: per task, its queued and running jobs.

    ``queues`` lists at most ``MAX_TASKS_LISTED`` tasks, the busiest first.
    """
    queues: dict[str, dict[str, int]] = {}
    for (task, state), count in per_task.items():
        if state in (State.QUEUED, State.RUNNING):
            queues.setdefault(task, {"queued": 0, "running": 0})[str(state)] = count
    busiest = sorted(queues.items(), key=lambda item: (-sum(item[1].values()), item[0]))
    return {
        "queued": sum(c for (_, state), c in per_task.items() if state is State.QUEUED),
        "running": sum(c for (_, state), c in per_task.items() if state is State.RUNNING),
        "queues": dict(busiest[:MAX_TASKS_LISTED]),
    }
