"""What the broker core has to say, collected as effects in order (pure)."""

from __future__ import annotations

import logging

from broker import protocol as p
from broker.alljobs import AllJobsFeed
from broker.effects import Effect, Journal, Publish, SendClient, SendWorker, StoreResult
from broker.jobs import Job, job_record
from broker.progress import Subscriptions
from broker.retry import RETRYABLE, retry_spec

logger = logging.getLogger(__name__)


class Outbox:
    """Encodes replies, events and journal records into effects for the shell."""

    def __init__(self, epoch: int, wall_offset_s: float) -> None:
        self.epoch = epoch
        self.wall_offset_s = wall_offset_s
        self.subscriptions = Subscriptions()
        self.all_jobs: AllJobsFeed[Job] = AllJobsFeed(self.subscriptions)
        self.effects: list[Effect] = []

    def drain(self) -> list[Effect]:
        """The effects collected so far; the outbox starts empty again."""
        effects, self.effects = self.effects, []
        return effects

    def to_client(self, peer: bytes, msg: p.Message) -> None:
        """Reply to a client."""
        self.effects.append(SendClient(peer, p.encode(msg)))

    def to_worker(self, peer: bytes, msg: p.Message) -> None:
        """Send to a worker."""
        self.effects.append(SendWorker(peer, p.encode(msg)))

    def protocol_error(self, peer: bytes, problem: Exception, *, to_worker: bool) -> None:
        """Tell a peer its message was malformed (and log it, without a traceback)."""
        logger.warning("invalid message from %s: %s", peer.hex(), problem)
        error = p.encode(p.Error(code="protocol", message=str(problem)))
        self.effects.append(SendWorker(peer, error) if to_worker else SendClient(peer, error))

    def event(self, job: Job, now: float) -> p.Event:
        """The job's latest event as watchers see it."""
        return p.Event(
            id=job.id, seq=job.seq, epoch=self.epoch, state=str(job.state), task=job.task, done=job.done,
            total=job.total, message=job.message, eta_s=job.eta_s,
            ts=round(now + self.wall_offset_s, 3), attempts=job.attempts, error=job.error,
        )  # fmt: skip

    def publish(self, job: Job, now: float, *, stamp: bool = True) -> None:
        """Stamp the next seq on the job and publish its state change, if anyone subscribed."""
        if stamp:
            job.seq += 1
        self._publish(job, now, own=True, all_jobs=self.all_jobs.on_change(job, now, final=job.is_final))

    def publish_progress(self, job: Job, now: float) -> None:
        """Stamp the next seq and publish a progress event (thinned on the all-jobs topic)."""
        job.seq += 1
        self._publish(job, now, own=True, all_jobs=self.all_jobs.on_progress(job, now))

    def republish(self, job: Job, now: float) -> None:
        """Publish the job's latest event again on its own topic (a watcher just joined)."""
        self._publish(job, now, own=True, all_jobs=False)

    def flush_all_jobs(self, now: float) -> None:
        """Copy held-back progress to the all-jobs topic once its interval is over."""
        for job in self.all_jobs.due(now):
            self._publish(job, now, own=False, all_jobs=True)

    def _publish(self, job: Job, now: float, *, own: bool, all_jobs: bool) -> None:
        frames: list[bytes] | None = None  # nobody watching: nothing to encode
        if own and self.subscriptions.wanted(job.id.encode()):
            frames = p.encode(self.event(job, now))
            self.effects.append(Publish(frames))
        if all_jobs:
            frames = frames or p.encode(self.event(job, now))
            self.effects.append(Publish([p.ALL_JOBS_TOPIC, *frames[1:]]))

    def journal(self, job: Job) -> None:
        """Record the live job's latest state in the journal."""
        self.effects.append(Journal({"op": "put", "job": job_record(job)}))

    def journal_end(self, job: Job) -> None:
        """The job is final: drop it from the journal."""
        self.effects.append(Journal({"op": "end", "id": job.id}))

    def store(self, job: Job, retention_s: float, ttl_s: float) -> None:
        """Keep a final job's view and result; its cache key only when ``ttl_s`` > 0."""
        key = job.cache_key if ttl_s > 0 else None
        spec = retry_spec(job) if str(job.state) in RETRYABLE else None
        view = job.view(self.epoch)
        self.effects.append(StoreResult(job.id, view, job.result, retention_s, key, ttl_s, spec))
