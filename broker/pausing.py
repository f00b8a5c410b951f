"""Paused task queues (pure): ``jobcast pause TASK`` keeps the task's jobs queued.

Submits are still accepted and running jobs finish; nothing of the task is dispatched until
``jobcast resume TASK``. The set is journaled (one meta record), so it survives a restart.
"""

from __future__ import annotations

from typing import Any, Final

from broker.errors import BadArguments
from broker.jobs import check_task_name

PAUSED_KEY: Final = "paused"  # the journal meta key
MAX_PAUSED: Final = 10_000


class PausedTasks:
    """The set of paused task names."""

    def __init__(self) -> None:
        self._tasks: set[str] = set()

    def restore(self, meta: dict[str, Any]) -> None:
        """The paused set replayed from the journal's meta records."""
        value = meta.get(PAUSED_KEY)
        if isinstance(value, list):
            self._tasks = {task for task in value if isinstance(task, str)}

    def pause(self, task: str) -> None:
        """Pause ``task`` (idempotent).

        Raises:
            BadArguments: a malformed task name, or too many paused tasks.
        """
        check_task_name(task)
        if task not in self._tasks and len(self._tasks) >= MAX_PAUSED:
            raise BadArguments(f"at most {MAX_PAUSED} tasks may be paused")
        self._tasks.add(task)

    def resume(self, task: str) -> None:
        """Resume ``task`` (idempotent; a task never paused is fine)."""
        check_task_name(task)
        self._tasks.discard(task)

    def names(self) -> list[str]:
        """The paused tasks, sorted (also the journal record's value)."""
        return sorted(self._tasks)

    def __contains__(self, task: object) -> bool:
        return task in self._tasks

    def __bool__(self) -> bool:
        return bool(self._tasks)
