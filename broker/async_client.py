"""The asyncio client: the same verbs as ``Client``, for asyncio code (the web server)."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any, Final

import zmq
import zmq.asyncio

from broker import protocol as p
from broker.addresses import broker_url, endpoints
from broker.batches import MAP_BATCHES_IN_FLIGHT, batch_messages, batch_views, reserve, wait_messages
from broker.bundle import messages_in
from broker.errors import ProtocolError
from broker.hooks import MAX_PENDING_HOOKS
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

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S: Final = 30.0
EVENT_RECHECK_S: Final = 1.0
WAIT_RECHECK_S: Final = 2.0


class AsyncJob:
    """A handle on one submitted job, for asyncio code."""

    def __init__(self, client: AsyncClient, view: dict[str, Any]) -> None:
        self.client = client
        self.id: str = view["id"]
        self.view = view

    async def status(self) -> dict[str, Any]:
        """The job's current snapshot."""
        return await self.client.status(self.id)

    async def result(self, timeout: float | None = None) -> Any:
        """Wait for the result; raises JobFailed, JobCancelled or TimeoutError."""
        return await self.client.result(self.id, timeout=timeout)

    def events(self, after: int = 0) -> AsyncIterator[dict[str, Any]]:
        """Pushed progress events, ending with the final state."""
        return self.client.events(self.id, after=after)

    def on_done(self, hook: Callable[[dict[str, Any]], Any]) -> AsyncJob:
        """Call ``hook(final_view)`` once the job ends (see ``AsyncClient.on_done``)."""
        self.client.on_done(self.id, hook)
        return self


class AsyncGroup:
    """A handle on jobs submitted together, for asyncio code (see ``broker.client.Group``)."""

    def __init__(self, client: AsyncClient, view: dict[str, Any]) -> None:
        self.client = client
        self.id: str = view["id"]
        self.view = view
        self.job_ids: list[str] = [row["id"] for row in view.get("children", [])]

    async def status(self) -> dict[str, Any]:
        """The group's snapshot, with its ``children`` rows."""
        return await self.client.status(self.id)

    def events(self, after: int = 0) -> AsyncIterator[dict[str, Any]]:
        """Pushed aggregate events, ending when every child has ended."""
        return self.client.events(self.id, after=after)

    async def results(self, timeout: float | None = None) -> list[Any]:
        """Every child's result, in order; raises the first JobFailed / JobCancelled."""
        return await self.client.results(self.job_ids, timeout)


class AsyncClient:
    """An asyncio connection to a broker; requests may run concurrently."""

    def __init__(
        self,
        broker: str | None = None,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        context: zmq.asyncio.Context | None = None,
        curve: ClientKeys | None = None,
    ) -> None:
        self.base_url = broker_url(broker)
        self.endpoints = endpoints(self.base_url)
        self.timeout_s = timeout_s
        self.curve = curve or client_keys()  # CURVE keys given, else from the environment
        self._own_context = context is None
        self.context = context or zmq.asyncio.Context()
        self.socket = self.context.socket(zmq.DEALER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.SNDHWM, 0)
        self.socket.setsockopt(zmq.RCVHWM, 0)
        configure_client(self.socket, self.curve)
        self.socket.connect(self.endpoints.clients)
        self._reqs = itertools.count(1)
        self._pending: dict[int, asyncio.Future[p.Message]] = {}
        self._reader: asyncio.Task[None] | None = None
        self._hook_tasks: set[asyncio.Task[None]] = set()

    async def submit(
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
        on_done: Callable[[dict[str, Any]], Any] | None = None,
    ) -> AsyncJob:
        """Submit a job (or join the identical one running, or get the cached result).

        ``on_done(final_view)`` is called once the job ends (see ``on_done``).
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
        job = AsyncJob(self, job_view(await self._call(msg)))
        if on_done is not None:
            self.on_done(job.id, on_done)
        return job

    async def group(self, task: str, args_list: list[dict[str, Any]], **options: Any) -> AsyncGroup:
        """Submit one job per args as one group (see ``Client.group``)."""
        msg = group_message(next(self._reqs), task, args_list, **submit_options(options))
        return AsyncGroup(self, job_view(await self._call(msg)))

    async def status(self, job_id: str) -> dict[str, Any]:
        """A job's snapshot (``result`` included once done); raises UnknownJob."""
        return job_view(await self._call(p.Status(req=next(self._reqs), id=job_id)))

    async def cancel(self, job_id: str) -> dict[str, Any]:
        """Cancel a job."""
        return job_view(await self._call(p.Cancel(req=next(self._reqs), id=job_id)))

    async def jobs(
        self, state: str | None = None, task: str | None = None, limit: int = 50
    ) -> list[dict[str, Any]]:
        """Job views, newest first, of one state and/or task (see ``Client.jobs``)."""
        return job_list(await self._call(list_message(next(self._reqs), state, task, limit)))

    async def retry(self, job_id: str) -> AsyncJob:
        """Re-submit a failed or cancelled job under a new id (see ``Client.retry``)."""
        return AsyncJob(self, job_view(await self._call(p.Retry(req=next(self._reqs), id=job_id))))

    async def metrics(self) -> dict[str, Any]:
        """Per-task counts and time histograms (``broker.metrics``), the stats under ``stats``."""
        return metrics_view(await self._call(p.Stats(req=next(self._reqs), metrics=True)))

    async def stats(self) -> dict[str, Any]:
        """Queue, worker and counter figures."""
        reply = await self._call(p.Stats(req=next(self._reqs)))
        if not isinstance(reply, p.Counters):
            job_view(reply)
            raise TypeError("unexpected reply to STATS")
        return reply.stats

    async def pause(self, task: str) -> dict[str, Any]:
        """Stop dispatching ``task``'s jobs (they stay queued); returns the paused tasks."""
        return counters(await self._call(p.Pause(req=next(self._reqs), task=task)))

    async def resume(self, task: str) -> dict[str, Any]:
        """Dispatch a paused task's jobs again; returns the paused tasks."""
        return counters(await self._call(p.Resume(req=next(self._reqs), task=task)))

    async def result(self, job_id: str, timeout: float | None = None) -> Any:
        """Wait until the job ends; return its result or raise JobFailed/JobCancelled."""
        return final_result(await self.wait(job_id, timeout))

    async def wait(self, job_id: str, timeout: float | None = None) -> dict[str, Any]:
        """Wait until the job ends and return its final view (failed/cancelled raise nothing)."""
        return (await self._wait_final([job_id], timeout))[0]

    async def run(
        self, task: str, args: dict[str, Any] | None = None, *, timeout: float | None = None, **options: Any
    ) -> Any:
        """Submit a job and wait for its result in one request (see ``Client.run``)."""
        deadline = asyncio.get_running_loop().time() + (timeout or 1e9)
        first, self._reqs = reserve(self._reqs, 2)
        msg = submit_message(first, task, args, **submit_options(options), wait=True)
        future = self._expect(first + 1)  # the final reply may come before the first is read
        try:
            view = job_view(await self._call(msg))
            return final_result(
                await self._final_view(p.Wait(req=first + 1, id=view["id"]), future, deadline)
            )
        finally:
            self._pending.pop(first + 1, None)

    async def map(
        self, task: str, args_list: list[dict[str, Any]], *, timeout: float | None = None, **options: Any
    ) -> list[Any]:
        """Run ``task`` once per args, in parallel across the pool; results in order.

        Batched and pipelined as ``Client.map``; raises what it raises.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (timeout or 1e9)
        args_list = list(args_list)
        msgs = batch_messages(self._reqs, task, args_list, batch_options(options))
        gate = asyncio.Semaphore(MAP_BATCHES_IN_FLIGHT)

        async def call(msg: p.SubmitMany | p.Submit) -> p.Message:
            async with gate:
                return await self._call(msg, max(0.001, deadline - loop.time()))

        views = batch_views(list(await asyncio.gather(*map(call, msgs))), msgs, len(args_list))
        return await self.results([view["id"] for view in views], max(0.001, deadline - loop.time()))

    async def results(self, job_ids: list[str], timeout: float | None = None) -> list[Any]:
        """Wait for every job; their results in the given order (see ``Client.results``)."""
        return [final_result(view) for view in await self._wait_final(list(job_ids), timeout)]

    async def _wait_final(self, job_ids: list[str], timeout: float | None) -> list[dict[str, Any]]:
        """Final views of jobs, in order: WAITS for all at once (pipelined), then collect."""
        deadline = asyncio.get_running_loop().time() + (timeout or 1e9)
        first, self._reqs = reserve(self._reqs, len(job_ids))
        waits, msgs = wait_messages(first, job_ids)
        futures = [self._expect(wait.req) for wait in waits]
        try:
            for msg in msgs:
                await self.socket.send_multipart(p.encode(msg))
            pairs = zip(waits, futures, strict=True)
            return [await self._final_view(wait, future, deadline) for wait, future in pairs]
        finally:
            for wait in waits:
                self._pending.pop(wait.req, None)

    async def _final_view(
        self, wait: p.Wait, future: asyncio.Future[p.Message], deadline: float
    ) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        while True:  # a restarted broker forgets waiters: re-check, then repeat the WAIT
            slice_s = min(WAIT_RECHECK_S, deadline - loop.time())
            if slice_s <= 0:
                raise TimeoutError(f"job {wait.id} did not end in time")
            done, _ = await asyncio.wait({future}, timeout=slice_s)
            if done:
                return job_view(future.result())
            view = await self.status(wait.id)
            if view["state"] in FINAL_STATES:
                return view
            await self.socket.send_multipart(p.encode(wait))  # same req: the broker dedupes

    def on_done(self, job_id: str, hook: Callable[[dict[str, Any]], Any]) -> None:
        """Call ``hook(final_view)`` (awaited if it returns an awaitable) once the job ends.

        It runs as a task on the event loop; its exceptions are logged, not raised.
        At most MAX_PENDING_HOOKS wait per client; ``aclose()`` cancels them.
        """
        if not callable(hook):
            raise TypeError(f"on_done must be callable (got {type(hook).__name__})")
        if len(self._hook_tasks) >= MAX_PENDING_HOOKS:
            raise RuntimeError(f"{MAX_PENDING_HOOKS} on_done hooks already wait on this client")
        task = asyncio.get_running_loop().create_task(self._fire(job_id, hook))
        self._hook_tasks.add(task)
        task.add_done_callback(self._hook_tasks.discard)

    async def _fire(self, job_id: str, hook: Callable[[dict[str, Any]], Any]) -> None:
        try:
            view = await self.wait(job_id)
            outcome = hook(view)
            if inspect.isawaitable(outcome):
                await outcome
        except asyncio.CancelledError:
            raise
        except Exception:  # a hook's bug (or a vanished job) must not reach the app
            logger.exception("job %s: on_done hook %r failed", job_id, hook)

    async def events(self, job_id: str, after: int = 0) -> AsyncIterator[dict[str, Any]]:
        """Pushed events of one job (Clone join), ending with its final state."""
        sub = self.context.socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.SUBSCRIBE, job_id.encode())
        configure_client(sub, self.curve)
        sub.connect(self.endpoints.events_out)
        try:
            follower = EventFollower(after)
            event: dict[str, Any] | None = await self.status(job_id)  # snapshot, after subscribing
            while True:
                if event is not None and follower.accept(event):
                    yield event
                if follower.finished or (event is not None and event["state"] in FINAL_STATES):
                    return
                if await sub.poll(int(EVENT_RECHECK_S * 1000)):
                    event = published_event(await sub.recv_multipart(), job_id)
                else:
                    event = await self.status(job_id)  # quiet: PUB may have dropped; re-read
        finally:
            sub.close()

    def _expect(self, req: int) -> asyncio.Future[p.Message]:
        """A future for the reply to ``req`` (starting the reply reader if needed)."""
        loop = asyncio.get_running_loop()
        if self._reader is None or self._reader.done():
            self._reader = loop.create_task(self._read_replies())
        future: asyncio.Future[p.Message] = loop.create_future()
        self._pending[req] = future
        return future

    async def _call(self, msg: Any, timeout_s: float | None = None) -> p.Message:
        future = self._expect(msg.req)
        try:
            await self.socket.send_multipart(p.encode(msg))
            return await asyncio.wait_for(future, self.timeout_s if timeout_s is None else timeout_s)
        except TimeoutError:
            raise TimeoutError(f"no reply from the broker at {self.base_url} in time") from None
        finally:
            self._pending.pop(msg.req, None)

    async def _read_replies(self) -> None:
        while True:
            try:
                replies = [p.decode(one) for one in messages_in(await self.socket.recv_multipart())]
            except ProtocolError:
                continue
            for reply in replies:
                future = self._pending.get(getattr(reply, "req", 0))
                if future is not None and not future.done():
                    future.set_result(reply)

    async def aclose(self) -> None:
        """Cancel pending on_done hooks, stop the reply reader, close the socket (and context)."""
        hooks = list(self._hook_tasks)
        for task in hooks:
            task.cancel()
        await asyncio.gather(*hooks, return_exceptions=True)
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        self.close()

    def close(self) -> None:
        """Close the socket (and the context, if the client made it)."""
        self.socket.close(linger=0)
        if self._own_context:
            self.context.term()
