"""The broker as a pure state machine: frames and time in, effects out.

``BrokerProtocol`` never touches a socket or a file. The shell (``broker.server``) feeds it
what arrives on its sockets with ``receive_client``, ``receive_worker``, ``receive_event``
and ``receive_subscription``, calls ``tick`` every loop iteration, and applies
``effects_to_apply()`` in order (durable effects first). ``now`` is monotonic seconds;
user-visible timestamps are ``now + wall_offset_s``.
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from typing import Any, Final, Protocol

from broker import joblog
from broker import protocol as p
from broker.effects import Effect
from broker.errors import BadArguments, ProtocolError
from broker.group_desk import GroupDesk, check_group
from broker.jobs import Job, State, job_from_record, new_job_id
from broker.lifecycle import TaskDefaults, retention_s
from broker.listing import check_filters, encode_views, select_jobs
from broker.metrics import Metrics
from broker.outbox import Outbox
from broker.progress import EtaEstimator
from broker.retry import resubmission, retry_spec
from broker.scheduling import JobQueue, retry_delay_s
from broker.submission import Submission, prepare_submission
from broker.tally import live_counts
from broker.task_controls import TaskControls
from broker.workforce import WorkerSlot, Workforce, restrict_ready

logger = logging.getLogger(__name__)

MAX_JOBS_IN_MEMORY: Final = 10_000  # finished jobs kept for fast status; older ones on disk
MAX_ERROR_TEXT: Final = 8192
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


class BrokerProtocol:
    """Jobs, workers and their heartbeats; see the module docstring."""

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
        self.waiters: dict[str, dict[tuple[bytes, int], None]] = {}  # an ordered set per job
        self.etas: dict[str, EtaEstimator] = {}
        self.out = Outbox(epoch, wall_offset_s)
        self.subscriptions = self.out.subscriptions
        self.counters: dict[str, int] = dict.fromkeys(COUNTERS, 0)
        self.metrics = Metrics()
        self.storage_error: str | None = None  # set by the shell while the data dir is full
        self.controls = TaskControls(self.queue, self.workers, self.jobs)  # limits, pauses, places
        self.groups = GroupDesk(self.out, results.job)
        self.out.listeners.append(self.groups.on_job)

    # --- the shell's interface ---------------------------------------------------------

    def effects_to_apply(self) -> list[Effect]:
        """Effects produced since the last call, in the order they must be applied."""
        return self.out.drain()

    def receive_client(self, peer: bytes, frames: list[bytes], now: float) -> None:
        """Handle one message from a client."""
        try:
            msg = p.decode(frames)
        except ProtocolError as exc:
            self._invalid(peer, exc, to_worker=False)
            return
        match msg:
            case p.Submit():
                self._submit(peer, msg, now)
            case p.SubmitGroup():
                self._submit_group(peer, msg, now)
            case p.Status():
                self._reply_job(peer, msg.req, msg.id, now)
            case p.Cancel():
                self._cancel(peer, msg, now)
            case p.Wait():
                self._wait(peer, msg, now)
            case p.Pause() | p.Resume():
                self._pause(peer, msg, now)
            case p.Stats():
                figures = self.metrics_json() if msg.metrics else None
                self.out.to_client(peer, p.Counters(req=msg.req, stats=self.stats(), metrics=figures))
            case p.ListJobs():
                self._list(peer, msg)
            case p.Retry():
                self._retry(peer, msg, now)
            case _:
                self._invalid(
                    peer, ProtocolError(f"{type(msg).__name__} is not a client request"), to_worker=False
                )

    def receive_worker(
        self, peer: bytes, frames: list[bytes], now: float, allowed_tasks: frozenset[str] | None = None
    ) -> None:
        """Handle one message from a worker (``allowed_tasks``: its key's grant, None = any)."""
        try:
            msg = p.decode(frames)
        except ProtocolError as exc:
            self._invalid(peer, exc, to_worker=True)
            return
        slot = self.workers.get(peer)
        revived = slot is not None and self.workers.heard(slot, now)
        match msg:
            case p.Ready():
                self._worker_ready(peer, self._granted(peer, msg, allowed_tasks), now)
            case p.Heartbeat() if slot is None:
                self.out.to_worker(peer, p.Bye())  # unknown to us: re-register
            case p.Heartbeat() if not revived:
                return  # frees no slot: nothing to dispatch (heartbeats are the most frequent)
            case p.Log():
                self._worker_log(peer, msg, now)
            case p.Done():
                self._worker_done(peer, msg, now)
            case p.Failed():
                self._worker_failed(peer, msg, now)
            case p.Bye():
                self._worker_leaving(slot, now)
            case _:
                self._invalid(
                    peer, ProtocolError(f"{type(msg).__name__} is not a worker message"), to_worker=True
                )
        self._dispatch(now)

    def receive_event(self, frames: list[bytes], now: float) -> None:
        """Handle one progress event from a worker's PUB socket."""
        try:
            msg = p.decode(frames)
        except ProtocolError as exc:
            self.counters["invalid_messages"] += 1
            logger.warning("dropped an invalid event: %s", exc)
            return
        if not isinstance(msg, p.Progress):
            self.counters["invalid_messages"] += 1
            return
        job = self.jobs.get(msg.id)
        if job is None or job.state is not State.RUNNING or job.attempts != msg.attempt:
            self.counters["stale_messages"] += 1
            return
        if msg.done < 0 or msg.total < 0:
            self.counters["invalid_messages"] += 1
            return
        job.done, job.total, job.message = msg.done, msg.total, msg.message[:1000]
        job.eta_s = self.etas.setdefault(job.id, EtaEstimator()).observe(now, msg.done, msg.total)
        self.out.publish(job, now)

    def receive_subscription(self, topic: bytes, now: float, subscribed: bool = True) -> None:
        """A watcher (un)subscribed; on subscribe, republish the job's latest event at once."""
        self.subscriptions.change(topic, subscribed)
        job = self.jobs.get(topic.decode("ascii", "replace")) if subscribed else None
        if job is not None:
            self.out.publish(job, now, stamp=self.controls.place(job, self._wall(now)))
        elif subscribed:
            self.groups.republish(topic.decode("ascii", "replace"), now)

    def worker_unreachable(self, peer: bytes, now: float) -> None:
        """The shell could not deliver to a worker: it is gone; re-queue its job."""
        slot = self.workers.get(peer)
        if slot is not None:
            self._worker_gone(slot, now, reason="worker disconnected", lost=True)
        self._dispatch(now)

    def tick(self, now: float) -> None:
        """Heartbeats, dead workers and delayed jobs; call every loop iteration."""
        lost = self.workers.expired(now)
        for slot in lost:
            silent_s = self.heartbeat_s * slot.liveness.liveness
            self._worker_gone(slot, now, reason=f"{slot.describe()} missed heartbeats for {silent_s:g} s",
                              lost=True)  # fmt: skip
        for peer in self.workers.heartbeats_due(now):
            self._send_worker(peer, p.Heartbeat(), now)
        if self.queue.promote_due(self._wall(now)) or lost:
            self._dispatch(now)
        self._run_periodic(now)
        for job in self.controls.moved_places(self.subscriptions.exact, now, self._wall(now)):
            self.out.publish(job, now)
        self.out.flush_all_jobs(now)

    def next_deadline(self) -> float:
        """The monotonic time at which ``tick`` next has work, at most a second away."""
        due = self.queue.next_due()
        delayed = float("inf") if due is None else due - self.wall_offset_s
        controls = self.controls.next_deadline(bool(self.subscriptions.exact), self.wall_offset_s)
        return min(self.workers.next_deadline(), delayed, controls, self.out.all_jobs.next_deadline())

    def stats(self) -> dict[str, Any]:
        """Queue depth, workers and counters."""
        return {
            "epoch": self.epoch,
            **live_counts(self.jobs[job_id] for job_id in self.by_key.values()),  # live jobs only
            "workers": len(self.workers),
            "idle_workers": self.workers.idle_count(),
            "waiting_clients": sum(len(waiting) for waiting in self.waiters.values()),
            "tasks": sorted(self.defaults.tasks()),
            **self.controls.stats(),
            **self.counters,
        }

    def metrics_json(self) -> bytes:
        """Per-task counts and time histograms (``broker.metrics``) as JSON bytes."""
        live = (self.jobs[job_id] for job_id in self.by_key.values())
        return json.dumps(self.metrics.snapshot(live), separators=(",", ":")).encode()

    # --- client requests ---------------------------------------------------------------

    def _submit(self, peer: bytes, msg: p.Submit, now: float) -> None:
        checked = self._check_submit(msg, now)
        self.out.to_client(peer, checked if isinstance(checked, p.Error) else self._admit(checked, now))
        self._dispatch(now)

    def _submit_group(self, peer: bytes, msg: p.SubmitGroup, now: float) -> None:
        room = self.max_live_jobs - len(self.by_key)
        checked = check_group(msg, lambda child: self._check_submit(child, now), room)
        if isinstance(checked, p.Error):
            self.out.to_client(peer, checked)
            return
        views = []
        for sub in checked:
            reply = self._admit(sub, now, limit=False)  # the capacity was checked for all
            if isinstance(reply, p.Snapshot):
                views.append(reply.job)
        self.out.to_client(peer, self.groups.create(msg.req, self.new_id(), msg.task, views, now))
        self._dispatch(now)

    def _check_submit(self, msg: p.Submit, now: float) -> Submission | p.Error:
        if self.storage_error is not None:  # nothing could be journaled: refuse, keep serving reads
            return p.Error(req=msg.req, code="storage_full", message=self.storage_error)
        try:
            return prepare_submission(msg, self._wall(now), self.defaults, bool(self.workers))
        except BadArguments as exc:
            code = "too_large" if type(exc).__name__ == "PayloadTooLarge" else "bad_args"
            return p.Error(req=msg.req, code=code, message=str(exc))
        except LookupError as exc:
            return p.Error(req=msg.req, code="unknown_task", message=str(exc))

    def _admit(self, sub: Submission, now: float, *, limit: bool = True) -> p.Snapshot | p.Error:
        """The cached result, the identical running job, or a new queued one."""
        cached = None if sub.msg.force else self._cached(sub.msg.req, sub.cache_key)
        if cached is not None:
            return cached
        running_id = self.by_key.get(sub.cache_key)
        if running_id is not None:
            return self._join(sub.msg.req, self.jobs[running_id])
        if limit and len(self.by_key) >= self.max_live_jobs:  # by_key: every queued or running job
            return self._queue_full(sub.msg.req)
        return self._create(sub, now)

    def _queue_full(self, req: int = 0) -> p.Error:
        message = f"the queue is full ({self.max_live_jobs} jobs queued or running); retry later"
        return p.Error(req=req, code="queue_full", message=message)

    def _cached(self, req: int, key: str) -> p.Snapshot | None:
        job_id = self.results.job_for_key(key)
        stored = self.results.job(job_id) if job_id else None
        if stored is None:
            return None
        view, result = stored
        self.counters["cache_hits"] += 1
        return p.Snapshot(req=req, job={**view, "cached": True}, result=result)

    def _join(self, req: int, job: Job) -> p.Snapshot:
        job.watchers += 1
        self.counters["coalesced"] += 1
        return p.Snapshot(req=req, job=job.view(self.epoch))

    def _create(self, sub: Submission, now: float) -> p.Snapshot:
        job = sub.to_job(self.new_id(), self._wall(now))
        self.defaults.resolve(job)
        self.jobs[job.id] = job
        self.by_key[job.cache_key] = job.id
        self.counters["submitted"] += 1
        self.queue.push(job.id, job.task, job.priority, job.run_at, self._wall(now))
        self.controls.place(job, self._wall(now))
        self.out.journal(job)
        self.out.publish(job, now)
        logger.debug("job %s queued (%s)", job.id, job.task)
        return p.Snapshot(req=sub.msg.req, job=job.view(self.epoch))

    def restore(self, records: list[dict[str, Any]], now: float) -> None:
        """Load live jobs (then groups) from the journal; those that were running are re-queued."""
        groups = [record for record in records if record.get("kind") == "group"]
        for record in (record for record in records if record.get("kind") != "group"):
            job = job_from_record(record)
            if job.state is State.RUNNING:
                job.state = State.QUEUED
                logger.info("job %s re-queued after a broker restart (attempt %s)", job.id, job.attempts)
            if job.is_final:
                continue
            # seq stays monotonic across restarts without journaling every event: each
            # incarnation starts restored jobs in its own range (2**32 events per epoch)
            job.seq = max(job.seq, self.epoch << SEQ_EPOCH_SHIFT) + 1
            self.jobs[job.id] = job
            self.by_key.setdefault(job.cache_key, job.id)
            self.queue.push(job.id, job.task, job.priority, job.run_at, self._wall(now))
        self.groups.restore(groups, self.jobs, now)

    def _run_periodic(self, now: float) -> None:
        """Submit one run (empty args, ttl 0) of each periodic task due, unless one is live."""
        for task, record in self.controls.periodic_due(self._wall(now)):
            self.out.journal_meta(record)
            msg = p.Submit(req=0, task=task, args=b"{}", ttl_s=0.0, force=True)
            sub = prepare_submission(msg, self._wall(now), self.defaults, have_workers=False)
            if sub.cache_key in self.by_key or self.storage_error or len(self.by_key) >= self.max_live_jobs:
                logger.info("periodic %s: skipped (a run is still live, or no room)", task)
            else:
                self._create(sub, now)
                self._dispatch(now)

    def _reply_job(self, peer: bytes, req: int, job_id: str, now: float) -> None:
        job = self.jobs.get(job_id)
        if job is not None and self.controls.place(job, self._wall(now)):
            self.out.publish(job, now)  # its place moved: watchers hear it too
        if job is not None:
            self.out.to_client(peer, p.Snapshot(req=req, job=job.view(self.epoch), result=job.result))
            return
        group = self.groups.snapshot(req, job_id)
        if group is not None:
            self.out.to_client(peer, group)
            return
        stored = self.results.job(job_id)
        if stored is None:
            self.out.to_client(
                peer, p.Error(req=req, code="unknown_job", message="no such job (or past its retention)")
            )
            return
        self.out.to_client(peer, p.Snapshot(req=req, job=stored[0], result=stored[1]))

    def _cancel(self, peer: bytes, msg: p.Cancel, now: float) -> None:
        job = self.jobs.get(msg.id)
        if job is not None and not job.is_final:
            worker = job.worker if job.state is State.RUNNING else None
            if worker is not None:
                self._send_worker(worker, p.Stop(id=job.id, attempt=job.attempts), now)
            self._finish(job, State.CANCELLED, now, error=None)
        self._reply_job(peer, msg.req, msg.id, now)

    def _list(self, peer: bytes, msg: p.ListJobs) -> None:
        try:
            check_filters(msg.state, msg.task, msg.limit)
        except BadArguments as exc:
            self.out.to_client(peer, p.Error(req=msg.req, code="bad_args", message=str(exc)))
            return
        finished = (self.jobs[job_id] for job_id in reversed(self.finished) if job_id in self.jobs)
        chosen = select_jobs(self.jobs.values(), finished, state=msg.state, task=msg.task, limit=msg.limit)
        self.out.to_client(peer, p.JobList(req=msg.req, views=encode_views(chosen, self.epoch)))

    def _retry(self, peer: bytes, msg: p.Retry, now: float) -> None:
        job = self.jobs.get(msg.id)
        spec = retry_spec(job) if job is not None else self.results.retry_spec(msg.id)
        answer = resubmission(msg.req, msg.id, spec)
        if isinstance(answer, p.Error):
            self.out.to_client(peer, answer)
            return
        logger.info("job %s retried (%s)", msg.id, answer.task)
        self._submit(peer, answer, now)

    def _wait(self, peer: bytes, msg: p.Wait, now: float) -> None:
        job = self.jobs.get(msg.id)
        if job is None or job.is_final:
            self._reply_job(peer, msg.req, msg.id, now)
            return
        self.waiters.setdefault(job.id, {})[(peer, msg.req)] = None  # a repeated WAIT: no-op

    def _pause(self, peer: bytes, msg: p.Pause | p.Resume, now: float) -> None:
        reply, record = self.controls.pause(msg, self.storage_error)
        if record is not None:
            self.out.journal_meta(record)  # durable before the reply
        self.out.to_client(peer, reply)
        self._dispatch(now)

    # --- workers -------------------------------------------------------------------------

    def _granted(self, peer: bytes, msg: p.Ready, allowed: frozenset[str] | None) -> p.Ready:
        granted, refused = restrict_ready(msg, allowed)
        if refused:
            self.counters["refused_tasks"] += len(refused)
            logger.warning("worker %s (pid %s on %s): its key may not run %s; refused",
                           peer.hex(), msg.pid, msg.host, refused)  # fmt: skip
        return granted

    def _worker_ready(self, peer: bytes, msg: p.Ready, now: float) -> None:
        previous = self.workers.get(peer)
        if previous is not None:
            self._worker_gone(previous, now, reason="worker re-registered", lost=False)
        self.workers.join(peer, msg, now)
        self.defaults.learn(msg.tasks, msg.options or {})
        self.controls.learn(msg.tasks, msg.options or {}, self._wall(now))
        logger.info("worker %s ready (pid %s on %s): %s", peer.hex(), msg.pid, msg.host, msg.tasks)

    def _worker_log(self, peer: bytes, msg: p.Log, now: float) -> None:
        slot, job = self.workers.get(peer), self.jobs.get(msg.id)
        if (
            slot is None
            or slot.job_id != msg.id
            or job is None
            or job.attempts != msg.attempt
            or job.is_final
        ):
            self.counters["stale_messages"] += 1
            return
        new = joblog.append(job.extra, msg.lines)
        self.out.publish(job, now, extra=joblog.lines_event(job.extra, new))

    def _worker_done(self, peer: bytes, msg: p.Done, now: float) -> None:
        job = self._held_job(peer, msg.id, msg.attempt)
        if job is None or job.is_final:
            return  # a stale attempt, or cancelled while it ran (the cancel published the end)
        if msg.last:
            job.done = _int(msg.last.get("done"), job.done)
            job.total = _int(msg.last.get("total"), job.total)
            job.message = str(msg.last.get("message", job.message))[:1000]
        if job.total and job.done < job.total:
            job.done = job.total
        job.result = msg.result
        self._finish(job, State.DONE, now, error=None)

    def _worker_failed(self, peer: bytes, msg: p.Failed, now: float) -> None:
        job = self._held_job(peer, msg.id, msg.attempt)
        if job is None:
            return
        error = {k: str(msg.error.get(k, ""))[:MAX_ERROR_TEXT] for k in ("type", "message", "traceback")}
        self._attempt_failed(job, error, now, retry=msg.retry, immediate=False)

    def _worker_gone(self, slot: WorkerSlot, now: float, *, reason: str, lost: bool) -> None:
        self.workers.leave(slot.peer)
        job = self.jobs.get(slot.job_id) if slot.job_id else None
        if job is None or job.state is not State.RUNNING:
            return
        if not lost:
            self._requeue(job, now, delay_s=0.0)
            return
        self.counters["workers_lost"] += 1
        logger.warning("job %s lost its worker %s: %s", job.id, slot.peer.hex(), reason)
        error = {"type": "WorkerLost", "message": reason, "traceback": ""}
        self._attempt_failed(job, error, now, retry=True, immediate=True)

    def _worker_leaving(self, slot: WorkerSlot | None, now: float) -> None:
        """Warm shutdown: a busy worker finishes its job first; an idle one goes at once."""
        if slot is None:
            return
        if slot.job_id is None:
            self._worker_gone(slot, now, reason="worker said goodbye", lost=False)
            return
        self.workers.retire(slot)
        logger.info("job %s: worker %s leaves after this job", slot.job_id, slot.peer.hex())

    def _held_job(self, peer: bytes, job_id: str, attempt: int) -> Job | None:
        """The job an outcome is for, if the sender holds that attempt; frees the sender."""
        slot = self.workers.get(peer)
        job = self.jobs.get(job_id)
        if slot is not None and slot.busy_from_before and slot.job_id is None:
            # back from a partition: its old attempt ended; take it once if not re-run yet
            if job is not None and job.state is State.QUEUED and job.attempts == attempt:
                job.move_to(State.RUNNING)
                self.controls.started(job)
                self.workers.take(slot, job.id)
            else:
                self.workers.release(slot)
        if slot is None or slot.job_id != job_id or job is None or job.attempts != attempt:
            self.counters["stale_messages"] += 1
            logger.warning("job %s: dropped a result for attempt %s from %s (not its holder)",
                           job_id, attempt, peer.hex())  # fmt: skip
            return None
        self.workers.release(slot)
        return job

    def _attempt_failed(
        self, job: Job, error: dict[str, str], now: float, *, retry: bool, immediate: bool
    ) -> None:
        if job.is_final:
            return  # cancelled meanwhile: the cancel already published the final state
        max_attempts = self.defaults.max_attempts(job)
        if retry and job.attempts < max_attempts:
            self.counters["retried"] += 1
            job.error = error
            self._requeue(job, now, delay_s=0.0 if immediate else retry_delay_s(job.attempts))
            return
        if retry and error["type"] == "WorkerLost":
            error = {**error, "message": f"{error['message']} (attempt {job.attempts} of {max_attempts})"}
        self._finish(job, State.FAILED, now, error=error)

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

    def _dispatch(self, now: float) -> None:
        for slot in self.workers.dispatchable(now):  # a suspect slot may sit on a lost host
            job_id = self.queue.pop_for(self.controls.startable(slot.tasks), self._is_queued)
            if job_id is not None:
                self._assign(slot, self.jobs[job_id], now)

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

    # --- final states ------------------------------------------------------------------------

    def _finish(self, job: Job, state: State, now: float, error: dict[str, str] | None) -> None:
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
        self.controls.stopped(job)
        self.out.journal_end(job)
        ttl_s = self.defaults.ttl_s(job) if state is State.DONE else 0.0
        job.seq += 1  # the final seq first, so the stored view and the event agree
        self.out.store(job, retention_s(ttl_s), ttl_s)
        self.out.publish(job, now, stamp=False)
        logger.debug("job %s → %s", job.id, state)
        view = job.view(self.epoch)
        for peer, req in self.waiters.pop(job.id, {}):
            self.out.to_client(peer, p.Snapshot(req=req, job=view, result=job.result))
        self._remember_finished(job.id)

    def _remember_finished(self, job_id: str) -> None:
        self.finished[job_id] = None
        while len(self.finished) > MAX_JOBS_IN_MEMORY:
            old_id, _ = self.finished.popitem(last=False)
            self.jobs.pop(old_id, None)

    # --- helpers ------------------------------------------------------------------------------

    def _send_worker(self, peer: bytes, msg: p.Message, now: float) -> None:
        slot = self.workers.get(peer)
        if slot is not None:
            slot.liveness.on_sent(now)
        self.out.to_worker(peer, msg)

    def _invalid(self, peer: bytes, exc: ProtocolError, *, to_worker: bool) -> None:
        self.counters["invalid_messages"] += 1
        self.out.protocol_error(peer, exc, to_worker=to_worker)

    def _wall(self, now: float) -> float:
        return now + self.wall_offset_s


def _int(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else default
