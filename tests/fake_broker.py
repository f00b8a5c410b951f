"""A scripted broker for worker tests: a real ROUTER on the workers endpoint, in a thread.

The thread owns the socket (zmq sockets are not thread-safe): it heartbeats every peer
that sent ``Ready`` (unless told to go silent), queues what arrives, and sends what the
test asks it to.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import zmq

from broker.addresses import endpoints
from broker.bundle import messages_in
from broker.jobs import new_job_id
from broker.protocol import Assign, Done, Failed, Heartbeat, Message, Ready, decode, encode


class FakeBroker:
    """Plays the broker's worker side; ``expect()`` waits for a message of a given type."""

    def __init__(self, base_url: str, interval_s: float = 0.1) -> None:
        self.interval_s = interval_s
        self.heartbeating = True
        self.peers: list[bytes] = []  # in Ready order; the last one is the current agent
        self.received: queue.Queue[tuple[bytes, Message | Exception]] = queue.Queue()
        self.seen: list[tuple[bytes, Message | Exception]] = []
        self.bundles_seen = 0  # messages that came as bundles (``broker.bundle``)
        self._outbox: queue.Queue[tuple[bytes | None, list[bytes]]] = queue.Queue()
        self._stop = threading.Event()
        self._ctx = zmq.Context()
        self._router = self._ctx.socket(zmq.ROUTER)
        self._router.setsockopt(zmq.LINGER, 0)
        self._router.bind(endpoints(base_url).workers)
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def peer(self) -> bytes:
        """The identity of the agent that sent the latest Ready."""
        if not self.peers:
            raise AssertionError("no agent has sent Ready yet")
        return self.peers[-1]

    def send(self, msg: Message, peer: bytes | None = None) -> None:
        """Send a message to ``peer`` (default: the latest Ready's)."""
        self._outbox.put((peer, encode(msg)))

    def send_raw(self, frames: list[bytes], peer: bytes | None = None) -> None:
        """Send arbitrary frames (junk tests)."""
        self._outbox.put((peer, frames))

    def expect(
        self,
        kind: type[Any] | tuple[type[Any], ...],
        timeout_s: float = 5.0,
        where: Callable[[Any], bool] = lambda msg: True,
    ) -> Any:
        """The next message of ``kind`` matching ``where`` (others are skipped)."""
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            try:
                _, msg = self.received.get(timeout=left)
            except queue.Empty:
                break
            if isinstance(msg, kind) and where(msg):
                return msg
        seen = [type(m).__name__ for _, m in self.seen if not isinstance(m, Heartbeat)]
        raise TimeoutError(f"no {kind} within {timeout_s} s; saw {seen}")

    def run(self, task: str, args: bytes = b"{}", timeout_s: float = 10.0, **assign: Any) -> Done | Failed:
        """Assign a fresh job and wait for its Done or Failed."""
        job_id = new_job_id()
        self.send(Assign(id=job_id, task=task, attempt=1, args=args, **assign))
        result: Done | Failed = self.expect((Done, Failed), timeout_s, lambda m: m.id == job_id)
        return result

    def close(self) -> None:
        """Stop the thread, close the socket, terminate the context."""
        self._stop.set()
        self._thread.join(timeout=5)
        self._router.close()
        self._ctx.term()

    def _serve(self) -> None:
        beat_at = 0.0
        while not self._stop.is_set():
            if self._router.poll(10):
                self._receive()
            self._flush_outbox()
            now = time.monotonic()
            if self.heartbeating and now >= beat_at:
                beat_at = now + self.interval_s
                for peer in set(self.peers):
                    self._router.send_multipart([peer, *encode(Heartbeat())])

    def _receive(self) -> None:
        peer, *frames = self._router.recv_multipart()
        try:
            parts = messages_in(frames)
        except Exception as exc:  # the test wants to see it, not the thread to die
            parts = []
            self._keep(peer, exc)
        for part in parts:
            try:
                msg: Message | Exception = decode(part)
            except Exception as exc:
                msg = exc
            self._keep(peer, msg)
        self.bundles_seen += len(parts) > 1

    def _keep(self, peer: bytes, msg: Message | Exception) -> None:
        if isinstance(msg, Ready):
            self.peers.append(peer)
        self.seen.append((peer, msg))
        self.received.put((peer, msg))

    def _flush_outbox(self) -> None:
        while True:
            try:
                peer, frames = self._outbox.get_nowait()
            except queue.Empty:
                return
            self._router.send_multipart([peer or self.peer, *frames])
