"""Per-task concurrency limits (pure): ``@task("x", concurrency=N)`` runs at most N at once.

The limits are learnt from the workers' ``Ready`` options, like ttl. The running index is
keyed by job id, so ``stop`` is idempotent: every path out of ``running`` may call it.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Final

MAX_CONCURRENCY: Final = 1_000_000


class ConcurrencyLimits:
    """Which tasks have a limit, and which of their jobs run now."""

    def __init__(self) -> None:
        self._limits: dict[str, int] = {}
        self._running: defaultdict[str, set[str]] = defaultdict(set)  # task -> ids of its running jobs
        self._task_of: dict[str, str] = {}

    def learn(self, tasks: list[str], options: dict[str, Any]) -> None:
        """Record the limits a worker declares (a task without one has none)."""
        for task in tasks:
            declared = options.get(task)
            value = declared.get("concurrency") if isinstance(declared, dict) else None
            if isinstance(value, int) and _valid(value):
                self._limits[task] = value
            else:
                self._limits.pop(task, None)

    def limit(self, task: str) -> int | None:
        """The task's limit, or None."""
        return self._limits.get(task)

    def allows(self, task: str) -> bool:
        """Whether one more job of ``task`` may start now."""
        limit = self._limits.get(task)
        return limit is None or len(self._running.get(task, ())) < limit

    def start(self, job_id: str, task: str) -> None:
        """A job of ``task`` started running."""
        self._running[task].add(job_id)
        self._task_of[job_id] = task

    def stop(self, job_id: str) -> None:
        """A job stopped running (ended or re-queued); no-op if it was not running."""
        task = self._task_of.pop(job_id, None)
        if task is not None:
            running = self._running[task]
            running.discard(job_id)
            if not running:
                del self._running[task]

    def running(self, task: str) -> set[str]:
        """Ids of the task's running jobs."""
        return self._running.get(task, set())

    def limited(self) -> dict[str, int]:
        """Every task's limit."""
        return dict(self._limits)

    def __bool__(self) -> bool:
        return bool(self._limits)


def _valid(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_CONCURRENCY
