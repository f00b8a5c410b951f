"""What the broker core has to say, collected as effects in order (pure)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from broker import joblog
from broker import protocol as p
from broker.alljobs import AllJobsFeed
from broker.effects import Effect, Journal, Publish, SendClient, SendWorker, StoreResult
from broker.jobs import Job, job_record
from broker.progress import Subscriptions
from broker.queue_position import PLACE_FIELDS
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
        self.listeners: list[Callable[[Job, float], None]] = []  # told of every job event (groups)

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

    def event(self, job: Job, now: float, extra: dict[str, Any] | None = None) -> p.Event:
        """The job's latest event as watchers see it."""
        return p.Event(
            id=job.id, seq=job.seq, epoch=self.epoch, state=str(job.state), task=job.task, done=job.done,
            total=job.total, message=job.message, eta_s=job.eta_s,
            ts=round(now + self.wall_offset_s, 3), attempts=job.attempts, error=job.error,
            extra=_event_extra(job.extra, extra),
        )  # fmt: skip

    def publish(
        self, job: Job, now: float, *, stamp: bool = True, extra: dict[str, Any] | None = None
    ) -> None:
        """Stamp the next seq on the job and publish its event, if anyone subscribed.

        An unstamped publish repeats the latest state (the final one, or for a new
        subscriber): it carries the job's whole log, so no line depends on an earlier event.
        """
        if stamp:
            job.seq += 1
        if self.subscriptions.wanted(job.id.encode()):  # nobody watching: nothing to encode
            extra = extra if stamp else joblog.full_log(job.extra)
            self.effects.append(Publish(p.encode(self.event(job, now, extra))))
        if self.all_jobs.on_event(job, now):  # a dashboard is open (progress thinned)
            self._copy_to_all_jobs(job, now)
        for listener in self.listeners:
            listener(job, now)

    def flush_all_jobs(self, now: float) -> None:
        """Copy held-back progress to the all-jobs topic once its interval is over."""
        for job in self.all_jobs.due(now):
            self._copy_to_all_jobs(job, now)

    def _copy_to_all_jobs(self, job: Job, now: float) -> None:
        """The job's event under the all-jobs topic (its figures and place, never log lines)."""
        frames = p.encode(self.event(job, now))
        self.effects.append(Publish([p.ALL_JOBS_TOPIC, *frames[1:]]))

    def journal(self, job: Job) -> None:
        """Record the live job's latest state in the journal."""
        self.effects.append(Journal({"op": "put", "job": job_record(job)}))

    def journal_meta(self, record: dict[str, Any]) -> None:
        """Record broker state other than a job (paused tasks, periodic runs)."""
        self.effects.append(Journal(record))

    def journal_end(self, job: Job) -> None:
        """The job is final: drop it from the journal."""
        self.effects.append(Journal({"op": "end", "id": job.id}))

    def store(self, job: Job, retention_s: float, ttl_s: float) -> None:
        """Keep a final job's view and result; its cache key only when ``ttl_s`` > 0."""
        key = job.cache_key if ttl_s > 0 else None
        spec = retry_spec(job) if str(job.state) in RETRYABLE else None
        view = job.view(self.epoch)
        job.view_json = p.encode_view(view)  # a final view does not change: encoded once
        self.effects.append(
            StoreResult(job.id, view, job.result, retention_s, key, ttl_s, spec, job.view_json)
        )

    def snapshot(self, peer: bytes, req: int, job: Job, bundles: bool = False) -> None:
        """Reply with the job's snapshot (a final job's with the view encoded when it ended;
        ``bundles``: it may share a bundle with the turn's other such replies to ``peer``)."""
        if job.view_json is not None:
            frames = p.encode_snapshot(req, job.view_json, job.result)
        else:
            frames = p.encode(p.Snapshot(req=req, job=job.view(self.epoch), result=job.result))
        self.effects.append(SendClient(peer, frames, bundles))


def _event_extra(job_extra: dict[str, Any], extra: dict[str, Any] | None) -> dict[str, Any] | None:
    """An event's optional fields: a queued job's place, then what this publish adds (log lines)."""
    merged: dict[str, Any] = {name: job_extra[name] for name in PLACE_FIELDS if name in job_extra}
    merged.update(extra or {})
    return merged or None
