"""Completion hooks for the sync ``Client``: call ``on_done(view)`` once a job ends.

Each ``Client`` with pending hooks runs one follower thread, ``jobcast-on-done``, with its
own DEALER socket on the client's zmq context. It sends one WAIT per hook (pipelined) and
calls the hook with the job's final view (``result`` included once done) when the reply
comes. The broker forgets waiters when it restarts, so the thread repeats its WAITs every
``RESEND_S`` (the broker keeps one registration per request: repeats are harmless). The
thread ends when no hook is pending and starts again on the next one.

Hooks run on that thread, one at a time, in the order their jobs end: keep them short,
and do not use the submitting ``Client`` from one (a client is not thread-safe). An
exception in a hook is logged, never raised into the app. At most ``MAX_PENDING_HOOKS``
hooks wait per client; ``Client.close()`` drops those still pending (with a warning).
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Final

import zmq

from broker import protocol as p
from broker.errors import JobcastError, ProtocolError
from broker.jobs import FINAL_STATES
from broker.replies import job_view

logger = logging.getLogger(__name__)

MAX_PENDING_HOOKS: Final = 10_000
RESEND_S: Final = 5.0
POLL_MS: Final = 200
STOP_TIMEOUT_S: Final = 5.0

DoneHook = Callable[[dict[str, Any]], object]


class DoneHooks:
    """The pending hooks of one client and the thread that fires them."""

    def __init__(self, connect: Callable[[], zmq.Socket[bytes]]) -> None:
        self._connect = connect
        self._lock = threading.Lock()
        self._new: list[tuple[str, DoneHook]] = []
        self._pending = 0
        self._thread: threading.Thread | None = None
        self._stopping = False

    def add(self, job_id: str, hook: DoneHook) -> None:
        """Call ``hook(view)`` once the job reaches a final state.

        Raises:
            TypeError: ``hook`` is not callable.
            RuntimeError: MAX_PENDING_HOOKS hooks already wait, or the client is closed.
        """
        if not callable(hook):
            raise TypeError(f"on_done must be callable (got {type(hook).__name__})")
        with self._lock:
            if self._stopping:
                raise RuntimeError("the client is closed")
            if self._pending >= MAX_PENDING_HOOKS:
                raise RuntimeError(f"{MAX_PENDING_HOOKS} on_done hooks already wait on this client")
            self._pending += 1
            self._new.append((job_id, hook))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="jobcast-on-done", daemon=True)
                self._thread.start()

    def stop(self) -> None:
        """Stop the follower thread (pending hooks are dropped); wait for it, bounded."""
        with self._lock:
            self._stopping = True
            thread = self._thread
        if thread is not None:
            thread.join(STOP_TIMEOUT_S)

    def _take_new(self, waiting: int) -> list[tuple[str, DoneHook]] | None:
        """New registrations, or None when the thread should end."""
        with self._lock:
            if self._stopping or (not self._new and not waiting):
                if self._pending:
                    logger.warning("dropping %s pending on_done hooks: the client closed", self._pending)
                self._thread = None
                return None
            new, self._new = self._new, []
            return new

    def _run(self) -> None:
        sock = self._connect()
        try:
            self._follow(sock)
        finally:
            sock.close(linger=0)

    def _follow(self, sock: zmq.Socket[bytes]) -> None:
        reqs = itertools.count(1)
        waiting: dict[int, tuple[str, DoneHook]] = {}
        resend_at = time.monotonic() + RESEND_S
        while (new := self._take_new(len(waiting))) is not None:
            for job_id, hook in new:
                req = next(reqs)
                waiting[req] = (job_id, hook)
                sock.send_multipart(p.encode(p.Wait(req=req, id=job_id)))
            if sock.poll(POLL_MS):
                self._deliver(sock.recv_multipart(), waiting)
            if time.monotonic() >= resend_at:  # a restarted broker forgot our WAITs
                for req, (job_id, _) in waiting.items():
                    sock.send_multipart(p.encode(p.Wait(req=req, id=job_id)))
                resend_at = time.monotonic() + RESEND_S

    def _deliver(self, frames: list[bytes], waiting: dict[int, tuple[str, DoneHook]]) -> None:
        try:
            reply = p.decode(frames)
        except ProtocolError as exc:
            logger.warning("on_done follower dropped an invalid reply: %s", exc)
            return
        req = getattr(reply, "req", 0)
        if req not in waiting:
            return  # an answer to a repeated WAIT that was already delivered
        if isinstance(reply, p.Snapshot) and reply.job.get("state") not in FINAL_STATES:
            return
        job_id, hook = waiting.pop(req)
        with self._lock:
            self._pending -= 1
        try:
            view = job_view(reply)
        except JobcastError as exc:
            logger.warning("job %s: on_done hook dropped: %s", job_id, exc)
            return
        call_hook(job_id, hook, view)


def call_hook(job_id: str, hook: Callable[[dict[str, Any]], object], view: dict[str, Any]) -> None:
    """Call a completion hook; log its exception instead of raising it."""
    try:
        hook(view)
    except Exception:  # a hook's bug must not kill the follower or reach the app
        logger.exception("job %s: on_done hook %r raised", job_id, hook)
