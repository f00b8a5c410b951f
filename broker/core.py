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
from typing import Any

from broker import protocol as p
from broker.bundle import bundle_sends, messages_in
from broker.client_requests import ClientRequests
from broker.effects import Effect
from broker.errors import ProtocolError
from broker.jobs import State, job_from_record
from broker.state import DEFAULT_MAX_LIVE_JOBS, SEQ_EPOCH_SHIFT, BrokerState, StoredResults
from broker.tally import StateCounts, count_states, live_counts
from broker.worker_messages import WorkerMessages

__all__ = ["DEFAULT_MAX_LIVE_JOBS", "BrokerProtocol", "BrokerState", "StoredResults"]

logger = logging.getLogger(__name__)


class BrokerProtocol(ClientRequests, WorkerMessages):
    """Jobs, workers and their heartbeats; see the module docstring."""

    def effects_to_apply(self) -> list[Effect]:
        """Effects produced since the last call, in the order they must be applied (a
        slot's several messages of a turn packed into bundles if it reads them)."""
        return bundle_sends(self.out.drain(), self._takes_bundles)

    def _takes_bundles(self, peer: bytes) -> bool:
        slot = self.workers.get(peer)
        return slot is not None and slot.bundles

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
            case p.SubmitMany():
                self._submit_many(peer, msg, now)
            case p.SubmitGroup():
                self._submit_group(peer, msg, now)
            case p.Status():
                self._reply_job(peer, msg.req, msg.id, now)
            case p.Cancel():
                self._cancel(peer, msg, now)
            case p.Wait():
                self._wait(peer, msg.req, msg.id, now)
            case p.WaitMany():
                self._wait_many(peer, msg, now)
            case p.Pause() | p.Resume():
                self._pause(peer, msg, now)
            case p.Stats():
                live = count_states(self.jobs[job_id] for job_id in self.by_key.values())  # one pass
                figures = self.metrics_json(live) if msg.metrics else None
                self.out.to_client(peer, p.Counters(req=msg.req, stats=self.stats(live), metrics=figures))
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
        """Handle one message or bundle from a worker (``allowed_tasks``: its key's grant,
        None = any); then hand out what the slots have room for."""
        try:
            messages = messages_in(frames)
        except ProtocolError as exc:
            self._invalid(peer, exc, to_worker=True)
            return
        changed = [self._worker_message(peer, one, now, allowed_tasks) for one in messages]
        if any(changed):
            self._dispatch(now, refill=True)

    def _worker_message(
        self, peer: bytes, frames: list[bytes], now: float, allowed_tasks: frozenset[str] | None
    ) -> bool:
        """Handle one message; whether it may have made room for work."""
        try:
            msg = p.decode(frames)
        except ProtocolError as exc:
            self._invalid(peer, exc, to_worker=True)
            return False
        slot = self.workers.get(peer)
        revived = slot is not None and self.workers.heard(slot, now)
        match msg:
            case p.Ready():
                self._worker_ready(peer, self._granted(peer, msg, allowed_tasks), now)
            case p.Heartbeat() if slot is None:
                self.out.to_worker(peer, p.Bye())  # unknown to us: re-register
            case p.Heartbeat() if not revived:
                return False  # frees no slot: nothing to dispatch (heartbeats are the most frequent)
            case p.Log():
                self._worker_log(peer, msg, now)
            case p.Done():
                self._worker_done(peer, msg, now)
            case p.Failed():
                self._worker_failed(peer, msg, now)
            case p.Release():
                self._worker_release(peer, msg, now)
            case p.Bye():
                self._worker_leaving(slot, now)
            case _:
                self._invalid(
                    peer, ProtocolError(f"{type(msg).__name__} is not a worker message"), to_worker=True
                )
        return True

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
        job.eta_s = self.etas[job.id].observe(now, msg.done, msg.total)
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

    def stats(self, live: StateCounts | None = None) -> dict[str, Any]:
        """Queue depth, workers and counters (``live``: ``count_states`` of the live jobs)."""
        if live is None:
            live = count_states(self.jobs[job_id] for job_id in self.by_key.values())
        return {
            "epoch": self.epoch,
            **live_counts(live),
            "workers": len(self.workers),
            "idle_workers": self.workers.idle_count(),
            "prefetched": self.workers.prefetched(),
            "waiting_clients": sum(len(waiting) for waiting in self.waiters.values()),
            "tasks": sorted(self.defaults.tasks()),
            **self.controls.stats(),
            **self.counters,
        }

    def metrics_json(self, live: StateCounts) -> bytes:
        """Per-task counts and time histograms (``broker.metrics``) as JSON bytes."""
        return json.dumps(self.metrics.snapshot(live), separators=(",", ":")).encode()

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
