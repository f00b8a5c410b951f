"""Where a queued job stands (pure): its ``position`` and ``starts_in_s``, from live state.

Reads the broker's queue, slots and running jobs; writes only the job's place fields
(``job.extra``), which its view and events carry while it is queued. Once it runs, they go.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Final

from broker.concurrency import ConcurrencyLimits
from broker.jobs import Job, State
from broker.pausing import PausedTasks
from broker.queue_position import Forecast, RunTimes, forecast, place_changed, time_left_s
from broker.scheduling import JobQueue
from broker.workforce import Workforce

PLACE_REFRESH_S: Final = 0.5  # watched queued jobs are re-placed (and pushed if moved) this often
FORECAST_FRESH_S: Final = 0.1  # a task's forecast serves this long while no job starts or stops


class Placement:
    """Computes queued jobs' places; see the module docstring."""

    def __init__(
        self,
        queue: JobQueue,
        workers: Workforce,
        jobs: dict[str, Job],
        limits: ConcurrencyLimits,
        paused: PausedTasks,
        run_times: RunTimes,
    ) -> None:
        self.queue, self.workers, self.jobs = queue, workers, jobs
        self.limits, self.paused, self.run_times = limits, paused, run_times
        self.changes = 0  # bumped when a job starts or stops: cached forecasts are then stale
        self._cached_at, self._cached_changes = float("-inf"), 0
        self._forecasts: dict[str, Forecast] = {}

    def update(self, job: Job, now_wall: float) -> bool:
        """Re-place a queued job; return whether its place moved enough to push an event."""
        position, starts_in_s = self.place(job, now_wall)
        if not place_changed(job.extra, position, starts_in_s):
            return False
        job.extra["position"], job.extra["starts_in_s"] = position, starts_in_s
        return True

    def place(self, job: Job, now_wall: float) -> tuple[int | None, float | None]:
        """``(position, starts_in_s)``: a delayed job has no position yet, only its wait."""
        if self.queue.is_delayed(job.id):
            return None, round(max(job.run_at - now_wall, 0.0), 1)
        position = self.queue.position(job.id)
        if position is None or job.task in self.paused:
            return position, None
        return position, self.forecast(job.task, now_wall).starts_in_s(position)

    def forecast(self, task: str, now_wall: float) -> Forecast:
        """What is known of ``task``'s slots and run times now: computed over every slot
        that serves ``task``, so it is kept for ``FORECAST_FRESH_S`` while no job starts or
        stops (with hundreds of slots, a submit per broker turn would pay that scan each)."""
        age_s = now_wall - self._cached_at
        if self.changes != self._cached_changes or not 0 <= age_s < FORECAST_FRESH_S:
            self._cached_at, self._cached_changes, self._forecasts = now_wall, self.changes, {}
        cached = self._forecasts.get(task)
        if cached is None:
            cached = self._forecasts[task] = self._forecast(task, now_wall)
        return cached

    def _forecast(self, task: str, now_wall: float) -> Forecast:
        free = [self._slot_free_in_s(slot.job_id, slot.busy_from_before, now_wall)
                for slot in self.workers if task in slot.tasks and not slot.leaving]  # fmt: skip
        running = [self._time_left_s(job_id, now_wall) for job_id in self.limits.running(task)]
        return forecast(free, running, self.limits.limit(task), self.run_times.mean_s(task))

    def _slot_free_in_s(self, job_id: str | None, busy: bool, now_wall: float) -> float | None:
        if job_id is None:
            return None if busy else 0.0
        return self._time_left_s(job_id, now_wall)

    def _time_left_s(self, job_id: str, now_wall: float) -> float | None:
        job = self.jobs.get(job_id)
        if job is None or job.started_at is None:
            return None
        elapsed_s = now_wall - job.started_at
        return time_left_s(job.eta_s, elapsed_s, self.run_times.mean_s(job.task))

    def watched_queued(self, topics: Iterable[bytes]) -> Iterator[Job]:
        """Queued jobs among subscribed topics (exact job-id topics only)."""
        for topic in list(topics):
            job = self.jobs.get(topic.decode("ascii", "replace"))
            if job is not None and job.state is State.QUEUED:
                yield job
