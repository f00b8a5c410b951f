"""The broker core's state and the steps every part of it shares (pure).

``BrokerState`` holds the jobs, the queue, the worker slots and the outbox, and the
shared steps: dispatch to idle slots, re-queue, and the final states. The message
handlers build on it: ``broker.client_requests`` (clients) and
``broker.worker_messages`` (workers); ``broker.core.BrokerProtocol`` combines them.
"""

from __future__ import annotations

import logging
from collections import OrderedDict, defaultdict
from typing import Any, Final, Protocol

from broker import protocol as p
from broker.errors import ProtocolError
from broker.group_desk import GroupDesk
from broker.jobs import Job, State, new_job_id
from broker.lifecycle import TaskDefaults, retention_s
from broker.metrics import Metrics
from broker.outbox import Outbox
from broker.prefetch import wants_top_up
from broker.progress import EtaEstimator
from broker.scheduling import JobQueue
from broker.task_controls import TaskControls
from broker.workforce import WorkerSlot, Workforce

logger = logging.getLogger("broker.core")

MAX_JOBS_IN_MEMORY: Final = 10_000  # finished jobs kept for fast status; older ones on disk
SEQ_EPOCH_SHIFT: Final = 32
DEFAULT_MAX_LIVE_JOBS: Final = 250_000  # queued + running; past it submits get queue_full
COUNTERS: Final = (
    "submitted", "coalesced", "cache_hits", "done", "failed", "cancelled", "retried",
    "workers_lost", "invalid_messages", "stale_messages", "refused_tasks",
)  # fmt: skip


class StoredResults(Protocol):
    """Read access to finished jobs kept by the shell (diskcache)."""

    def job(self, job_id: str) -> tuple[dict[str, Any], bytes | None] | None:
        """A finished job's view and result bytes, or None."""

    def job_for_key(self, cache_key: str) -> str | None:
        """The id of the job whose fresh result is cached under ``cache_key``."""

    def retry_spec(self, job_id: str) -> dict[str, Any] | None:
        """A finished job's retry spec (``broker.retry``), or None if unknown."""


class BrokerState:
    """Jobs, workers, queue and outbox, and the steps shared by every handler."""

    def __init__(
        self,
        results: StoredResults,
        *,
        epoch: int,
        heartbeat_s: float,
        wall_offset_s: float = 0.0,
        new_id: Any = None,
        max_live_jobs: int = DEFAULT_MAX_LIVE_JOBS,
    ) -> None:
        self.results = results
        self.max_live_jobs = max_live_jobs
        self.epoch = epoch
        self.heartbeat_s = heartbeat_s
        self.wall_offset_s = wall_offset_s
        self.new_id = new_id or new_job_id
        self.jobs: dict[str, Job] = {}
        self.finished: OrderedDict[str, None] = OrderedDict()
        self.by_key: dict[str, str] = {}
        self.queue = JobQueue()
        self.workers = Workforce(heartbeat_s)
        self.defaults = TaskDefaults()
        self.waiters: dict[str, dict[tuple[bytes, int], bool]] = {}  # per job: (peer, req) -> bundles
        self.etas: defaultdict[str, EtaEstimator] = defaultdict(EtaEstimator)
        self.out = Outbox(epoch, wall_offset_s)
        self.subscriptions = self.out.subscriptions
        self.counters: dict[str, int] = dict.fromkeys(COUNTERS, 0)
        self.metrics = Metrics()
        self.storage_error: str | None = None  # set by the shell while the data dir is full
        self.controls = TaskControls(self.queue, self.workers, self.jobs)  # limits, pauses, places
        self.groups = GroupDesk(self.out, results.job)
        self.out.listeners.append(self.groups.on_job)

    def _requeue(self, job: Job, now: float, delay_s: float) -> None:
        job.move_to(State.QUEUED)
        job.worker = None
        self.controls.stopped(job)
        job.run_at = self._wall(now) + delay_s
        self.queue.push(job.id, job.task, job.priority, job.run_at, self._wall(now))
        self.controls.place(job, self._wall(now))
        self.out.journal(job)
        logger.debug("job %s running → queued (attempt %s)", job.id, job.attempts)
        self.out.publish(job, now)

    def _dispatch(self, now: float, *, refill: bool = False) -> None:
        """Jobs to idle slots, then more to busy ones that prefetch; on a ``refill`` (a slot
        reported) only to those down to half full, so that theirs go out together."""
        for slot in self.workers.dispatchable(now):  # a suspect slot may sit on a lost host
            job_id = self.queue.pop_for(self.controls.startable(slot.tasks), self._is_queued)
            if job_id is not None:
                self._assign(slot, self.jobs[job_id], now)
        if self.queue.any_ready():  # idle slots first; then busy ones that prefetch short jobs
            for slot in self.workers.with_room(now):
                if not refill or wants_top_up(len(slot.held), slot.prefetch):
                    self._top_up(slot, now)

    def _top_up(self, slot: WorkerSlot, now: float) -> None:
        while tasks := self.controls.prefetchable(slot.tasks, slot.prefetch, len(slot.held)):
            job_id = self.queue.pop_for(tasks, self._is_queued)
            if job_id is None:
                return
            self._assign(slot, self.jobs[job_id], now)

    def _promote(self, slot: WorkerSlot, now: float) -> None:
        """The slot's first held job changed: that job starts running now (it waited behind)."""
        job = self.jobs.get(slot.job_id) if slot.job_id is not None else None
        if job is not None and job.state is State.RUNNING:
            job.started_at = self._wall(now)

    def _is_queued(self, job_id: str) -> bool:
        job = self.jobs.get(job_id)
        return job is not None and job.state is State.QUEUED

    def _assign(self, slot: WorkerSlot, job: Job, now: float) -> None:
        self.workers.take(slot, job.id)
        job.move_to(State.RUNNING)
        job.attempts += 1
        self.defaults.resolve(job)
        job.worker = slot.peer
        job.started_at = self._wall(now)
        self.metrics.started(job)
        job.eta_s = None
        self.etas.pop(job.id, None)
        self.controls.started(job)
        self.out.journal(job)
        assign = p.Assign(
            id=job.id, task=job.task, attempt=job.attempts, args=job.args, timeout_s=job.timeout_s
        )
        self._send_worker(slot.peer, assign, now)
        logger.debug("job %s queued → running on %s (attempt %s)", job.id, slot.peer.hex(), job.attempts)
        self.out.publish(job, now)

    def _finish(
        self, job: Job, state: State, now: float, error: dict[str, str] | None, run_s: float | None = None
    ) -> None:
        """The job ends in ``state`` (``run_s``: how long a done run took in its worker)."""
        was_running = job.state is State.RUNNING
        job.move_to(state)
        job.error = error
        job.finished_at = self._wall(now)
        self.metrics.finished(job, was_running)
        job.eta_s = 0.0 if state is State.DONE else None
        self.counters[str(state)] += 1
        if self.by_key.get(job.cache_key) == job.id:
            del self.by_key[job.cache_key]
        self.etas.pop(job.id, None)
        self.controls.stopped(job, run_s)
        self.out.journal_end(job)
        ttl_s = self.defaults.ttl_s(job) if state is State.DONE else 0.0
        job.seq += 1  # the final seq first, so the stored view and the event agree
        self.out.store(job, retention_s(ttl_s), ttl_s)
        self.out.publish(job, now, stamp=False)
        logger.debug("job %s → %s", job.id, state)
        for (peer, req), bundles in self.waiters.pop(job.id, {}).items():
            self.out.snapshot(peer, req, job, bundles)
        self._remember_finished(job.id)

    def _remember_finished(self, job_id: str) -> None:
        self.finished[job_id] = None
        while len(self.finished) > MAX_JOBS_IN_MEMORY:
            old_id, _ = self.finished.popitem(last=False)
            self.jobs.pop(old_id, None)

    def _send_worker(self, peer: bytes, msg: p.Message, now: float) -> None:
        slot = self.workers.get(peer)
        if slot is not None:
            self.workers.sent(slot, now)
        self.out.to_worker(peer, msg)

    def _invalid(self, peer: bytes, exc: ProtocolError, *, to_worker: bool) -> None:
        self.counters["invalid_messages"] += 1
        self.out.protocol_error(peer, exc, to_worker=to_worker)

    def _wall(self, now: float) -> float:
        return now + self.wall_offset_s
