"""The public Python client: submit jobs, watch their pushed progress, get results.

client = Client("tcp://127.0.0.1:5555")
job = client.submit("report", {"region": "eu"})
for event in job.events(): ...
job.result(timeout=60)
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from types import TracebackType
from typing import Any, Final

import zmq

from broker import protocol as p
from broker.addresses import broker_url, endpoints
from broker.async_client import AsyncClient, AsyncGroup, AsyncJob
from broker.batches import MAP_BATCHES_IN_FLIGHT, batch_messages, batch_views, reserve, wait_messages
from broker.bundle import messages_in
from broker.hooks import DoneHook, DoneHooks
from broker.jobs import FINAL_STATES
from broker.replies import (
    EventFollower,
    batch_options,
    counters,
    final_result,
    group_message,
    job_list,
    job_view,
    list_message,
    metrics_view,
    published_event,
    submit_message,
    submit_options,
)
from broker.security import ClientKeys, client_keys, configure_client

__all__ = ["AsyncClient", "AsyncGroup", "AsyncJob", "Client", "Group", "Job"]

DEFAULT_TIMEOUT_S: Final = 30.0
EVENT_RECHECK_S: Final = 1.0  # with no event for this long, re-read the snapshot (PUB may drop)
WAIT_RECHECK_S: Final = 2.0  # with no final reply for this long, check the job (broker restart?)


class Job:
    """A handle on one submitted job."""

    def __init__(self, client: Client, view: dict[str, Any]) -> None:
        self.client = client
        self.id: str = view["id"]
        self.view = view

    @property
    def cached(self) -> bool:
        """Whether the submission was answered from the result cache."""
        return bool(self.view.get("cached"))

    def status(self) -> dict[str, Any]:
        """The job's current snapshot."""
        return self.client.status(self.id)

    def events(self, after: int = 0) -> Iterator[dict[str, Any]]:
        """Pushed progress events, ending with the final state."""
        return self.client.events(self.id, after=after)

    def result(self, timeout: float | None = None) -> Any:
        """Wait for the result; raises JobFailed, JobCancelled or TimeoutError."""
        return self.client.result(self.id, timeout=timeout)

    def cancel(self) -> dict[str, Any]:
        """Cancel the job."""
        return self.client.cancel(self.id)

    def on_done(self, hook: DoneHook) -> Job:
        """Call ``hook(final_view)`` once the job ends, on the client's follower thread."""
        self.client.on_done(self.id, hook)
        return self

    def __repr__(self) -> str:
        return f"<Job {self.id} {self.view.get('task')} {self.view.get('state')}>"


class Group:
    """A handle on jobs submitted together: one id, one aggregate bar, the children in order."""

    def __init__(self, client: Client, view: dict[str, Any]) -> None:
        self.client = client
        self.id: str = view["id"]
        self.view = view
        self.job_ids: list[str] = [row["id"] for row in view.get("children", [])]

    def status(self) -> dict[str, Any]:
        """The group's snapshot: state, aggregate done/total, counts and ``children`` rows."""
        return self.client.status(self.id)

    def events(self, after: int = 0) -> Iterator[dict[str, Any]]:
        """Pushed aggregate events (each names the child that changed), ending when all end."""
        return self.client.events(self.id, after=after)

    def results(self, timeout: float | None = None) -> list[Any]:
        """Every child's result, in order; raises the first JobFailed / JobCancelled."""
        return self.client.results(self.job_ids, timeout)

    def cancel(self) -> None:
        """Cancel every child that has not finished."""
        for job_id in dict.fromkeys(self.job_ids):
            self.client.cancel(job_id)

    def __repr__(self) -> str:
        return f"<Group {self.id} {self.view.get('task')} of {len(self.job_ids)}>"


class Client:
    """A synchronous connection to a broker (one DEALER socket; not thread-safe)."""

    def __init__(
        self,
        broker: str | None = None,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        context: zmq.Context[zmq.Socket[bytes]] | None = None,
        curve: ClientKeys | None = None,
    ) -> None:
        self.base_url = broker_url(broker)
        self.endpoints = endpoints(self.base_url)
        self.timeout_s = timeout_s
        self.curve = curve or client_keys()  # CURVE keys given, else from the environment
        self._own_context = context is None
        self.context = context or zmq.Context()
        self.socket = self._dealer()
        self._reqs = itertools.count(1)
        self._replies: dict[int, p.Message] = {}
        self._pending: set[int] = set()
        self._hooks = DoneHooks(self._dealer)

    def _dealer(self) -> zmq.Socket[bytes]:
        socket = self.context.socket(zmq.DEALER)
        socket.setsockopt(zmq.LINGER, 0)
        socket.setsockopt(zmq.SNDHWM, 0)
        socket.setsockopt(zmq.RCVHWM, 0)
        configure_client(socket, self.curve)
        socket.connect(self.endpoints.clients)
        return socket

    # --- requests ------------------------------------------------------------------------

    def submit(
        self,
        task: str,
        args: dict[str, Any] | None = None,
        *,
        ttl: float | None = None,
        force: bool = False,
        priority: str = "normal",
        delay: float = 0.0,
        run_at: float | None = None,
        scope: str = "",
        max_attempts: int | None = None,
        timeout: float | None = None,
        on_done: DoneHook | None = None,
    ) -> Job:
        """Submit a job (or join the identical one running, or get the cached result).

        ``on_done(final_view)`` is called once the job ends, on the client's follower
        thread (``broker.hooks``); its exceptions are logged, not raised.
        """
        msg = submit_message(
            next(self._reqs),
            task,
            args,
            ttl=ttl,
            force=force,
            priority=priority,
            delay=delay,
            run_at=run_at,
            scope=scope,
            max_attempts=max_attempts,
            timeout=timeout,
        )
        job = Job(self, job_view(self._call(msg)))
        return job if on_done is None else job.on_done(on_done)

    def on_done(self, job_id: str, hook: DoneHook) -> None:
        """Call ``hook(final_view)`` once the job ends (see ``broker.hooks``)."""
        self._hooks.add(job_id, hook)

    def status(self, job_id: str) -> dict[str, Any]:
        """A job's snapshot (``result`` included once done); raises UnknownJob."""
        return job_view(self._call(p.Status(req=next(self._reqs), id=job_id)))

    def cancel(self, job_id: str) -> dict[str, Any]:
        """Cancel a job: a queued one is dropped, a running one is stopped."""
        return job_view(self._call(p.Cancel(req=next(self._reqs), id=job_id)))

    def jobs(
        self, state: str | None = None, task: str | None = None, limit: int = 50
    ) -> list[dict[str, Any]]:
        """Job views, newest first, of one state and/or task; raises BadArguments on bad filters.

        Finished jobs are those the broker keeps in memory (its last 10,000 since it started).
        """
        return job_list(self._call(list_message(next(self._reqs), state, task, limit)))

    def retry(self, job_id: str) -> Job:
        """Re-submit a failed or cancelled job under a new id; raises UnknownJob or BrokerError."""
        return Job(self, job_view(self._call(p.Retry(req=next(self._reqs), id=job_id))))

    def metrics(self) -> dict[str, Any]:
        """Per-task counts and time histograms (``broker.metrics``), the stats under ``stats``."""
        return metrics_view(self._call(p.Stats(req=next(self._reqs), metrics=True)))

    def stats(self) -> dict[str, Any]:
        """Queue, worker and counter figures."""
        reply = self._call(p.Stats(req=next(self._reqs)))
        if not isinstance(reply, p.Counters):
            job_view(reply)  # raises the broker's error
            raise TypeError("unexpected reply to STATS")
        return reply.stats

    def pause(self, task: str) -> dict[str, Any]:
        """Stop dispatching ``task``'s jobs (they stay queued); returns the paused tasks."""
        return counters(self._call(p.Pause(req=next(self._reqs), task=task)))

    def resume(self, task: str) -> dict[str, Any]:
        """Dispatch a paused task's jobs again; returns the paused tasks."""
        return counters(self._call(p.Resume(req=next(self._reqs), task=task)))

    def result(self, job_id: str, timeout: float | None = None) -> Any:
        """Wait until the job ends; return its result or raise JobFailed/JobCancelled."""
        deadline = time.monotonic() + (timeout or 1e9)
        return final_result(job_view(self._wait_final([job_id], deadline)[0]))

    def run(
        self, task: str, args: dict[str, Any] | None = None, *, timeout: float | None = None, **options: Any
    ) -> Any:
        """Submit a job and wait for its result in one request (Gearman's doNormal).

        ``timeout`` is how long to wait, as for ``map``; the other options are ``submit``'s
        (the job's own time limit then comes from its task). Raises as ``Job.result``.
        """
        deadline = time.monotonic() + (timeout or 1e9)
        first, self._reqs = reserve(self._reqs, 2)
        msg = submit_message(first, task, args, **submit_options(options), wait=True)
        self._pending.add(first + 1)  # the final reply may come before the first is read
        try:
            view = job_view(self._call(msg))
            return final_result(job_view(self._collect_final(p.Wait(req=first + 1, id=view["id"]), deadline)))
        finally:
            self._pending.discard(first + 1)
            self._replies.pop(first + 1, None)

    def map(
        self, task: str, args_list: list[dict[str, Any]], *, timeout: float | None = None, **options: Any
    ) -> list[Any]:
        """Run ``task`` once per args, in parallel across the pool; results in order.

        The args go in batches (one SUBMITS message per up to 1000, a few in flight), each
        admitted as a lone ``submit`` would be; then ``results`` waits for all. A refused
        args object raises what ``submit`` would (its index named); the others still run.
        """
        deadline = time.monotonic() + (timeout or 1e9)
        args_list = list(args_list)
        msgs = batch_messages(self._reqs, task, args_list, batch_options(options))
        replies = self._call_many(msgs, deadline, window=MAP_BATCHES_IN_FLIGHT)
        views = batch_views(replies, msgs, len(args_list))
        return self._results([view["id"] for view in views], deadline)

    def results(self, job_ids: list[str], timeout: float | None = None) -> list[Any]:
        """Wait for every job; their results in the given order (one round trip for all).

        Raises JobFailed / JobCancelled for the first job, in order, that did not end
        done (UnknownJob for an unknown id), and TimeoutError past ``timeout`` seconds.
        """
        return self._results(list(job_ids), time.monotonic() + (timeout or 1e9))

    def _results(self, job_ids: list[str], deadline: float) -> list[Any]:
        return [final_result(job_view(reply)) for reply in self._wait_final(job_ids, deadline)]

    def group(self, task: str, args_list: list[dict[str, Any]], **options: Any) -> Group:
        """Submit one job per args as one group, watched as one bar (``Group``).

        Options are ``submit``'s. All children are checked first: a bad one refuses the
        whole group (its index is named) and nothing is submitted.
        """
        msg = group_message(next(self._reqs), task, args_list, **submit_options(options))
        return Group(self, job_view(self._call(msg)))

    def _wait_final(self, job_ids: list[str], deadline: float) -> list[p.Message]:
        """Final snapshots of jobs, in order: WAITS for all at once (pipelined), then collect.

        A broker restart forgets who was waiting, so a wait that hears nothing for
        ``WAIT_RECHECK_S`` reads the job's status and sends its WAIT again (the broker
        keeps one registration per request, so repeating it is harmless).
        """
        first, self._reqs = reserve(self._reqs, len(job_ids))
        waits, msgs = wait_messages(first, job_ids)
        self._pending.update(wait.req for wait in waits)
        try:
            for msg in msgs:
                self.socket.send_multipart(p.encode(msg))
            return [self._collect_final(wait, deadline) for wait in waits]
        finally:
            for wait in waits:
                self._pending.discard(wait.req)
                self._replies.pop(wait.req, None)  # a repeated WAIT may have been answered twice

    def _collect_final(self, wait: p.Wait, deadline: float) -> p.Message:
        while True:
            try:
                return self._await_reply(wait.req, min(deadline, time.monotonic() + WAIT_RECHECK_S))
            except TimeoutError:
                if time.monotonic() >= deadline:
                    raise
            reply = self._call(p.Status(req=next(self._reqs), id=wait.id))
            if not isinstance(reply, p.Snapshot) or reply.job["state"] in FINAL_STATES:
                return reply
            self.socket.send_multipart(p.encode(wait))  # a restarted broker never saw it

    def events(self, job_id: str, after: int = 0) -> Iterator[dict[str, Any]]:
        """Pushed events of one job (Clone join: subscribe, snapshot, then newer ones)."""
        sub = self.context.socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.SUBSCRIBE, job_id.encode())
        configure_client(sub, self.curve)
        sub.connect(self.endpoints.events_out)
        try:
            yield from self._follow(sub, job_id, after)
        finally:
            sub.close()

    def _follow(self, sub: zmq.Socket[bytes], job_id: str, after: int) -> Iterator[dict[str, Any]]:
        follower = EventFollower(after)
        event: dict[str, Any] | None = self.status(job_id)  # the snapshot, after subscribing
        while True:
            if event is not None and follower.accept(event):
                yield event
            if follower.finished or (event is not None and event["state"] in FINAL_STATES):
                return
            has_event = sub.poll(int(EVENT_RECHECK_S * 1000))
            # nothing pushed for a while: PUB may have dropped, so re-read the snapshot
            event = published_event(sub.recv_multipart(), job_id) if has_event else self.status(job_id)

    # --- transport ---------------------------------------------------------------------------

    def _call(self, msg: p.Message, timeout_s: float | None = None) -> p.Message:
        deadline = time.monotonic() + (self.timeout_s if timeout_s is None else timeout_s)
        return self._call_many([msg], deadline)[0]

    def _call_many(self, msgs: list[Any], deadline: float, window: int | None = None) -> list[p.Message]:
        """Replies to ``msgs`` in order, pipelined: at most ``window`` unanswered (None: all)."""
        reqs = [msg.req for msg in msgs]
        ahead = len(msgs) if window is None else window
        self._pending.update(reqs)
        try:
            for msg in msgs[:ahead]:
                self.socket.send_multipart(p.encode(msg))
            replies = []
            for index, req in enumerate(reqs):
                replies.append(self._await_reply(req, deadline))
                if index + ahead < len(msgs):
                    self.socket.send_multipart(p.encode(msgs[index + ahead]))
            return replies
        finally:
            self._pending.difference_update(reqs)

    def _await_reply(self, req: int, deadline: float) -> p.Message:
        while req not in self._replies:
            wait_ms = int((deadline - time.monotonic()) * 1000)
            if wait_ms <= 0 or not self.socket.poll(min(wait_ms, 1000) or 1):
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"no reply from the broker at {self.base_url} in time")
                continue
            for frames in messages_in(self.socket.recv_multipart()):
                reply = p.decode(frames)
                reply_req = getattr(reply, "req", 0)
                if reply_req in self._pending:
                    self._replies[reply_req] = reply
        return self._replies.pop(req)

    def close(self) -> None:
        """Stop the on_done follower, close the socket (and the context, if ours)."""
        self._hooks.stop()
        self.socket.close(linger=0)
        if self._own_context:
            self.context.term()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
