"""Per-task defaults learnt from workers, and retention rules (pure)."""

from __future__ import annotations

from typing import Any, Final

from broker.jobs import DEFAULT_MAX_ATTEMPTS, DEFAULT_TTL_S, Job

MIN_RETENTION_S: Final = 3600.0  # a finished job's status stays readable at least this long


class TaskDefaults:
    """Task options (ttl, timeout, attempts) as the workers' registries declare them."""

    def __init__(self) -> None:
        self._options: dict[str, dict[str, Any]] = {}

    def learn(self, tasks: list[str], options: dict[str, Any]) -> None:
        """Record the tasks a worker offers and their declared options."""
        for task in tasks:
            declared = options.get(task)
            self._options[task] = declared if isinstance(declared, dict) else {}

    def tasks(self) -> set[str]:
        """Every task some worker has offered."""
        return set(self._options)

    def knows(self, task: str) -> bool:
        """Whether some worker offered ``task``."""
        return task in self._options

    def resolve(self, job: Job) -> None:
        """Fill a job's unset ttl and attempt cap from its task, once a worker declared them."""
        if self.knows(job.task):
            job.ttl_s = self.ttl_s(job)
            job.max_attempts = self.max_attempts(job)

    def ttl_s(self, job: Job) -> float:
        """The job's cache ttl: its own, else its task's, else a day."""
        if job.ttl_s is not None:
            return job.ttl_s
        return _number(self._options.get(job.task, {}).get("ttl_s"), DEFAULT_TTL_S)

    def max_attempts(self, job: Job) -> int:
        """The job's attempt cap: its own, else its task's, else three."""
        if job.max_attempts is not None:
            return job.max_attempts
        value = self._options.get(job.task, {}).get("max_attempts")
        return value if isinstance(value, int) and value >= 1 else DEFAULT_MAX_ATTEMPTS


def _number(value: Any, default: float) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return float(value)
    return default


def retention_s(ttl_s: float) -> float:
    """How long a finished job's record stays readable by id."""
    return max(ttl_s, MIN_RETENTION_S)
