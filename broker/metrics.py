"""Per-task job figures for ``GET /metrics``: finished counts and time histograms (pure).

The broker core feeds ``started`` when it assigns an attempt and ``finished`` when a job
reaches a final state; ``snapshot`` adds the live queued/running counts and returns a
JSON-ready dict that travels in the STATS reply's payload. Counts are since the broker
started (Prometheus counters: a restart resets them, which Prometheus handles).

- ``wait_s``: for every attempt, from when it was due (submitted, or its ``run_at``/retry
  time) to when a worker started it;
- ``run_s``: for every job that ends while running, its last attempt's run time.

Buckets are fixed. At most ``MAX_METRIC_TASKS`` task names get their own figures; the
rest share the label ``OTHER_TASK`` (clients can queue any task name: bound the labels).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Any, Final

from broker.jobs import Job, State
from broker.tally import StateCounts

WAIT_BUCKETS_S: Final = (0.005, 0.025, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 1800.0)
RUN_BUCKETS_S: Final = (0.01, 0.05, 0.25, 1.0, 5.0, 15.0, 60.0, 300.0, 1800.0, 7200.0)
MAX_METRIC_TASKS: Final = 200
OTHER_TASK: Final = "_other"
FINAL_NAMES: Final = (str(State.DONE), str(State.FAILED), str(State.CANCELLED))


@dataclass(slots=True)
class Histogram:
    """Counts per bucket (the last one is +Inf), their sum and count; not cumulative."""

    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    sum: float = 0.0

    def __post_init__(self) -> None:
        self.counts = self.counts or [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        """Count one observation (negative values, from clock steps, count as 0)."""
        value = max(value, 0.0)
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value

    def to_json(self) -> dict[str, Any]:
        """``{"counts": [...], "sum": s}``, counts per bucket then +Inf."""
        return {"counts": list(self.counts), "sum": round(self.sum, 6)}


@dataclass(slots=True)
class TaskFigures:
    """One task's finished counts and histograms."""

    finished: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FINAL_NAMES, 0))
    wait_s: Histogram = field(default_factory=lambda: Histogram(WAIT_BUCKETS_S))
    run_s: Histogram = field(default_factory=lambda: Histogram(RUN_BUCKETS_S))


class Metrics:
    """Figures per task, fed by the core at attempt start and job end."""

    def __init__(self) -> None:
        self.tasks: dict[str, TaskFigures] = {}

    def _label(self, task: str) -> str:
        if task in self.tasks or len(self.tasks) < MAX_METRIC_TASKS:
            return task
        return OTHER_TASK

    def _figures(self, task: str) -> TaskFigures:
        figures = self.tasks.get(task)  # a new TaskFigures only for a task not seen yet
        return figures if figures is not None else self.tasks.setdefault(self._label(task), TaskFigures())

    def started(self, job: Job) -> None:
        """An attempt started (``job.started_at`` set): observe how long it waited."""
        if job.started_at is not None:
            due = max(job.created_at, job.run_at)
            self._figures(job.task).wait_s.observe(job.started_at - due)

    def finished(self, job: Job, was_running: bool) -> None:
        """The job reached a final state (``finished_at`` set); ``was_running`` before that."""
        figures = self._figures(job.task)
        figures.finished[str(job.state)] += 1
        if was_running and job.started_at is not None and job.finished_at is not None:
            figures.run_s.observe(job.finished_at - job.started_at)

    def snapshot(self, live: StateCounts) -> dict[str, Any]:
        """Every task's figures plus the live jobs per (task, state), JSON-ready."""
        tasks = {name: _task_json(figures) for name, figures in self.tasks.items()}
        for (task, state), count in live.items():
            label = task if task in tasks or len(tasks) < MAX_METRIC_TASKS else OTHER_TASK
            if label not in tasks:
                tasks[label] = _task_json(TaskFigures())
            tasks[label][str(state)] += count
        return {"wait_buckets_s": list(WAIT_BUCKETS_S), "run_buckets_s": list(RUN_BUCKETS_S),
                "tasks": tasks}  # fmt: skip


def _task_json(figures: TaskFigures) -> dict[str, Any]:
    return {
        str(State.QUEUED): 0, str(State.RUNNING): 0, **figures.finished,
        "wait_s": figures.wait_s.to_json(), "run_s": figures.run_s.to_json(),
    }  # fmt: skip
