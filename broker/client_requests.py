"""Client requests to the broker core: submit, groups, status, wait, cancel, list, retry, pause (pure)."""

from __future__ import annotations

import logging

from broker import protocol as p
from broker.batches import batch_reply, child_submits
from broker.errors import BadArguments
from broker.group_desk import check_group
from broker.groups import MAX_GROUP_SIZE
from broker.jobs import Job, State
from broker.listing import check_filters, encode_views, select_jobs
from broker.retry import resubmission, retry_spec
from broker.state import BrokerState
from broker.submission import Submission, prepare_submission

logger = logging.getLogger("broker.core")


class ClientRequests(BrokerState):
    """The handlers of client requests (``BrokerProtocol.receive_client`` dispatches here)."""

    def _submit(self, peer: bytes, msg: p.Submit, now: float) -> None:
        reply = self._submit_one(msg, now)
        self.out.to_client(peer, reply)
        if msg.wait and isinstance(reply, p.Snapshot):
            self._wait(peer, msg.req + 1, reply.job["id"], now)
        self._dispatch(now)

    def _submit_many(self, peer: bytes, msg: p.SubmitMany, now: float) -> None:
        """Each item admitted as a lone submit; one reply for all (``broker.batches``)."""
        try:
            items = child_submits(msg)
        except BadArguments as exc:
            self.out.to_client(peer, p.Error(req=msg.req, code="bad_args", message=str(exc)))
            return
        self.out.to_client(peer, batch_reply(msg.req, [self._submit_one(item, now) for item in items]))
        self._dispatch(now)

    def _submit_one(self, msg: p.Submit, now: float) -> p.Snapshot | p.Error:
        checked = self._check_submit(msg, now)
        return checked if isinstance(checked, p.Error) else self._admit(checked, now)

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
            self.out.snapshot(peer, req, job)
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

    def _wait(self, peer: bytes, req: int, job_id: str, now: float, bundles: bool = False) -> None:
        job = self.jobs.get(job_id)
        if job is None or job.is_final:
            self._reply_job(peer, req, job_id, now)
            return
        self.waiters.setdefault(job.id, {})[(peer, req)] = bundles  # a repeated WAIT: no-op

    def _wait_many(self, peer: bytes, msg: p.WaitMany, now: float) -> None:
        if not 1 <= len(msg.ids) <= MAX_GROUP_SIZE:
            message = f"a wait takes 1..{MAX_GROUP_SIZE} ids (got {len(msg.ids)})"
            self.out.to_client(peer, p.Error(req=msg.req, code="bad_args", message=message))
            return
        for index, job_id in enumerate(msg.ids):
            self._wait(peer, msg.req + index, job_id, now, msg.bundles)

    def _pause(self, peer: bytes, msg: p.Pause | p.Resume, now: float) -> None:
        reply, record = self.controls.pause(msg, self.storage_error)
        if record is not None:
            self.out.journal_meta(record)  # durable before the reply
        self.out.to_client(peer, reply)
        self._dispatch(now)
