"""Worker messages to the broker core: ready, log, done, failed, release, gone, leaving (pure).

A slot may hold several attempts (``broker.prefetch``); it runs them in the order it was
sent them, so the first one it holds is the one running. When a slot is lost, every
attempt it held counts as spent: the broker cannot know how far the slot got, and an
attempt number must never name two runs. One it gives back with ``Release`` never
started, and goes back to the queue without counting.
"""

from __future__ import annotations

import logging
from typing import Any, Final

from broker import joblog
from broker import protocol as p
from broker.jobs import Job, State
from broker.scheduling import retry_delay_s
from broker.state import BrokerState
from broker.workforce import WorkerSlot, restrict_ready

logger = logging.getLogger("broker.core")

MAX_ERROR_TEXT: Final = 8192
MAX_RUN_S: Final = 10**7  # a run time reported past this is not believed


class WorkerMessages(BrokerState):
    """The handlers of worker messages (``BrokerProtocol.receive_worker`` dispatches here)."""

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
            or msg.id not in slot.held
            or job is None
            or job.attempts != msg.attempt
            or job.is_final
        ):
            self.counters["stale_messages"] += 1
            return
        new = joblog.append(job.extra, msg.lines)
        self.out.journal(job)  # an update: written with the next write, at most 50 ms on
        self.out.publish(job, now, extra=joblog.lines_event(job.extra, new))

    def _worker_done(self, peer: bytes, msg: p.Done, now: float) -> None:
        job = self._held_job(peer, msg.id, msg.attempt, now)
        if job is None or job.is_final:
            return  # a stale attempt, or cancelled while it ran (the cancel published the end)
        if msg.last:
            job.done = _int(msg.last.get("done"), job.done)
            job.total = _int(msg.last.get("total"), job.total)
            job.message = str(msg.last.get("message", job.message))[:1000]
        if job.total and job.done < job.total:
            job.done = job.total
        job.result = msg.result
        run_s = msg.run_s if msg.run_s is not None and 0 <= msg.run_s <= MAX_RUN_S else None
        self._finish(job, State.DONE, now, error=None, run_s=run_s)

    def _worker_failed(self, peer: bytes, msg: p.Failed, now: float) -> None:
        job = self._held_job(peer, msg.id, msg.attempt, now)
        if job is None:
            return
        error = {k: str(msg.error.get(k, ""))[:MAX_ERROR_TEXT] for k in ("type", "message", "traceback")}
        self._attempt_failed(job, error, now, retry=msg.retry, immediate=False)

    def _worker_release(self, peer: bytes, msg: p.Release, now: float) -> None:
        job = self._held_job(peer, msg.id, msg.attempt, now)
        if job is not None and job.state is State.RUNNING:
            job.attempts -= 1  # it never started: the attempt does not count
            self._requeue(job, now, delay_s=0.0)

    def _worker_gone(self, slot: WorkerSlot, now: float, *, reason: str, lost: bool) -> None:
        self.workers.leave(slot.peer)
        held = [self.jobs.get(job_id) for job_id in slot.held]
        running = [job for job in held if job is not None and job.state is State.RUNNING]
        if lost and running:
            self.counters["workers_lost"] += 1
        for job in running:
            if not lost:
                self._requeue(job, now, delay_s=0.0)
                continue
            logger.warning("job %s lost its worker %s: %s", job.id, slot.peer.hex(), reason)
            error = {"type": "WorkerLost", "message": reason, "traceback": ""}
            self._attempt_failed(job, error, now, retry=True, immediate=True)

    def _worker_leaving(self, slot: WorkerSlot | None, now: float) -> None:
        """Warm shutdown: a busy worker finishes its job first (and gives back the ones it
        has not started); an idle one goes at once."""
        if slot is None:
            return
        if not slot.held:
            self._worker_gone(slot, now, reason="worker said goodbye", lost=False)
            return
        self.workers.retire(slot)
        logger.info("job %s: worker %s leaves after this job", slot.job_id, slot.peer.hex())

    def _held_job(self, peer: bytes, job_id: str, attempt: int, now: float) -> Job | None:
        """The job an outcome is for, if the sender holds that attempt; frees the sender."""
        slot = self.workers.get(peer)
        job = self.jobs.get(job_id)
        if slot is not None and slot.busy_from_before and not slot.held:
            # back from a partition: its old attempt ended; take it once if not re-run yet
            if job is not None and job.state is State.QUEUED and job.attempts == attempt:
                job.move_to(State.RUNNING)
                self.controls.started(job)
                self.workers.take(slot, job.id)
            else:
                self.workers.release(slot, job_id)
        if slot is None or job_id not in slot.held or job is None or job.attempts != attempt:
            self.counters["stale_messages"] += 1
            logger.warning("job %s: dropped a result for attempt %s from %s (not its holder)",
                           job_id, attempt, peer.hex())  # fmt: skip
            return None
        running = slot.job_id
        self.workers.release(slot, job_id)
        if slot.job_id is not None and slot.job_id != running:
            self._promote(slot, now)
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


def _int(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else default
