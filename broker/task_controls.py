"""Per-task controls, as one hook for the broker core (pure).

Concurrency limits, paused queues, periodic runs and queued jobs' places (``position``,
``starts_in_s``) all follow the same few moments of a job's life, which the core reports
here: a worker declared its tasks, a job started, a job stopped running or ended.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from broker.concurrency import ConcurrencyLimits
from broker.errors import BadArguments
from broker.jobs import Job, State
from broker.pausing import PAUSED_KEY, PausedTasks
from broker.periodic import RUN_KEY_PREFIX, PeriodicSchedules, last_runs_from
from broker.placement import PLACE_REFRESH_S, Placement
from broker.prefetch import prefetch_depth
from broker.protocol import Counters, Error, Message, Pause, Resume
from broker.queue_position import RunTimes, clear_place
from broker.scheduling import JobQueue
from broker.workforce import Workforce

logger = logging.getLogger(__name__)


class TaskControls:
    """Limits, pauses, schedules and places; see the module docstring."""

    def __init__(self, queue: JobQueue, workers: Workforce, jobs: dict[str, Job]) -> None:
        self.queue = queue
        self.limits = ConcurrencyLimits()
        self.paused = PausedTasks()
        self.periodic = PeriodicSchedules()
        self.run_times = RunTimes()
        self.placement = Placement(queue, workers, jobs, self.limits, self.paused, self.run_times)
        self.places_due = 0.0

    def restore(self, meta: dict[str, Any]) -> None:
        """The paused set and periodic last runs, replayed from the journal."""
        self.paused.restore(meta)
        self.periodic.restore(last_runs_from(meta))

    def learn(self, tasks: list[str], options: dict[str, Any], now_wall: float) -> None:
        """A worker declared its tasks' options: concurrency, every, cron."""
        self.limits.learn(tasks, options)
        self.periodic.learn(tasks, options, now_wall)
        self.placement.changes += 1

    def startable(self, tasks: frozenset[str]) -> Iterable[str]:
        """Those of ``tasks`` that may start a job now (not paused, under their limit)."""
        if not self.paused and not self.limits:
            return tasks
        return [task for task in tasks if task not in self.paused and self.limits.allows(task)]

    def prefetchable(self, tasks: frozenset[str], prefetch: int, held: int) -> list[str]:
        """Those of ``tasks`` a slot holding ``held`` attempts may take one more of now:
        startable, with runs short enough for that depth (``broker.prefetch``), and with no
        concurrency limit: a held job counts against it while it waits, so the limit would
        be spent on jobs queued behind one another in a single slot."""
        if prefetch <= held:
            return []
        mean_s, limit = self.run_times.mean_s, self.limits.limit
        return [
            task
            for task in self.startable(tasks)
            if prefetch_depth(prefetch, mean_s(task)) > held and limit(task) is None
        ]

    def started(self, job: Job) -> None:
        """The job runs now: out of line, counted against its limit, no place any more."""
        self.queue.discard(job.id)
        self.limits.start(job.id, job.task)
        clear_place(job.extra)
        self.placement.changes += 1

    def stopped(self, job: Job, run_s: float | None = None) -> None:
        """The job stopped running or ended (idempotent); a done run feeds the mean run time:
        ``run_s`` as its worker timed it, else from its start and end here."""
        self.queue.discard(job.id)
        self.limits.stop(job.id)
        clear_place(job.extra)
        self.placement.changes += 1
        if job.state is not State.DONE:
            return
        if run_s is not None:
            self.run_times.record(job.task, run_s)
        elif job.started_at is not None and job.finished_at is not None:
            self.run_times.record(job.task, job.finished_at - job.started_at)

    def periodic_due(self, now_wall: float) -> list[tuple[str, dict[str, Any]]]:
        """Periodic tasks due now, each with the journal record of this run."""
        due = self.periodic.due(now_wall)
        return [(task, {"op": "meta", "key": RUN_KEY_PREFIX + task, "value": now_wall}) for task in due]

    def place(self, job: Job, now_wall: float) -> bool:
        """Re-place a queued job; whether it moved enough to push an event."""
        return job.state is State.QUEUED and self.placement.update(job, now_wall)

    def moved_places(self, topics: Iterable[bytes], now: float, now_wall: float) -> list[Job]:
        """Watched queued jobs whose place moved (checked every PLACE_REFRESH_S)."""
        if now < self.places_due:
            return []
        self.places_due = now + PLACE_REFRESH_S
        return [job for job in self.placement.watched_queued(topics) if self.placement.update(job, now_wall)]

    def next_deadline(self, watched: bool, wall_offset_s: float) -> float:
        """The monotonic time of the next periodic run or place refresh."""
        due = self.periodic.next_due()
        periodic = float("inf") if due is None else due - wall_offset_s
        return min(periodic, self.places_due if watched else float("inf"))

    def pause(self, msg: Pause | Resume, storage_error: str | None) -> tuple[Message, dict[str, Any] | None]:
        """Pause or resume a task: the reply, and the journal record to write first (if any)."""
        if storage_error is not None:  # the change could not be made durable: refuse it
            return Error(req=msg.req, code="storage_full", message=storage_error), None
        try:
            if isinstance(msg, Pause):
                self.paused.pause(msg.task)
            else:
                self.paused.resume(msg.task)
        except BadArguments as exc:
            return Error(req=msg.req, code="bad_args", message=str(exc)), None
        logger.info("task %s %s", msg.task, "paused" if isinstance(msg, Pause) else "resumed")
        figures = {"task": msg.task, "queued": self.queue.ready_count(msg.task), **self.stats()}
        return Counters(req=msg.req, stats=figures), {
            "op": "meta",
            "key": PAUSED_KEY,
            "value": self.paused.names(),
        }

    def stats(self) -> dict[str, Any]:
        """Paused tasks, limits and periodic next runs, for ``jobcast stats``."""
        schedules = {task: round(at, 3) for task, at in self.periodic.schedules().items()}
        return {"paused": self.paused.names(), "concurrency": self.limits.limited(), "periodic": schedules}
