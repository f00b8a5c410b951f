"""The broker's I/O shell: four sockets, one Poller loop, effects applied in order.

This is the only broker module that touches zmq. Everything it receives is fed to the
pure ``BrokerProtocol``; everything it sends comes out of it as effects. Durable effects
(results, journal) are applied before the replies of the same iteration.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
import signal
import socket
import sqlite3
import stat
import time
from collections.abc import Callable, Iterator
from typing import Any, Final

import zmq

from broker import protocol as p
from broker.addresses import Endpoints, endpoints, ipc_directory
from broker.core import DEFAULT_MAX_LIVE_JOBS, BrokerProtocol
from broker.effects import Effect, Journal, Publish, SendClient, SendWorker, StoreResult
from broker.journal import JobJournal
from broker.liveness import heartbeat_interval_s
from broker.results import RESULT_CACHE_BYTES, ResultStore, prepare_data_dir
from broker.security import EVENTS_ZAP_DOMAIN, ZAP_DOMAIN, ServerKeys, configure_server, start_authenticator
from broker.storage import StorageGuard
from broker.task_grants import load_task_grants

logger = logging.getLogger(__name__)

DRAIN_LIMIT: Final = 100  # messages taken from one socket per loop turn: no peer starves others
MAX_POLL_MS: Final = 1000
HWM: Final = 100_000
LINGER_MS: Final = 500
CULL_INTERVAL_S: Final = 60.0  # expired results are removed this often


class BrokerServer:
    """Binds the broker's sockets and runs the loop until stopped by a signal."""

    def __init__(self, base_url: str, data_dir: str, curve: ServerKeys | None = None) -> None:
        check_loopback(base_url, curve=curve is not None)
        os.umask(0o077)  # the data dir, its files and ipc sockets: this user only
        self.base_url = base_url
        self.curve = curve
        self.task_grants = load_task_grants(curve.allow_dir) if curve else {}
        self.endpoints: Endpoints = endpoints(base_url)
        self.data_dir = prepare_data_dir(data_dir)
        self.journal = JobJournal(self.data_dir)
        cache_mb = _env_int("JOBCAST_RESULT_CACHE_MB", RESULT_CACHE_BYTES // 1024**2)
        self.results = ResultStore(self.data_dir, size_limit=cache_mb * 1024**2)
        self.storage = StorageGuard(self.data_dir, self.journal)
        self.epoch = next_epoch(self.data_dir)
        self.core = BrokerProtocol(
            self.results, epoch=self.epoch, heartbeat_s=heartbeat_interval_s(),
            wall_offset_s=time.time() - time.monotonic(),
            max_live_jobs=_env_int("JOBCAST_MAX_LIVE_JOBS", DEFAULT_MAX_LIVE_JOBS),
        )  # fmt: skip
        self.core.restore(self._live_records(), time.monotonic())
        self.core.controls.restore(self.journal.replay_meta())  # paused tasks, periodic runs
        self.core.storage_error = self.storage.check(time.monotonic())
        self.stopping = 0
        self.next_cull = time.monotonic() + CULL_INTERVAL_S
        self.context = zmq.Context()
        # pyzmq's ZAP handler runs in its own thread; the loop below stays single-threaded
        self.authenticator = start_authenticator(self.context, curve, self.task_grants) if curve else None
        self._wake_r, self._wake_w = socket.socketpair()
        self._bind()

    def _live_records(self) -> list[dict[str, Any]]:
        """The journal's records, but for jobs whose end had not been written when the
        broker stopped: their final view is in the result cache, so they are not run again."""
        records = self.journal.replay()
        finished = self.results.finished_ids([str(record.get("id")) for record in records])
        if finished:
            logger.info(
                "%d jobs had finished before the broker stopped; dropped from the journal", len(finished)
            )
            self.journal.apply([{"op": "end", "id": job_id} for job_id in finished])
        return [record for record in records if record.get("id") not in finished]

    def _bind(self) -> None:
        directory = ipc_directory(self.base_url)
        if directory is not None:
            prepare_ipc_directory(directory)
        ctx, ep, keys = self.context, self.endpoints, self.curve
        self.clients = _socket(ctx, zmq.ROUTER, ep.clients, p.MAX_ARGS_BYTES + p.MAX_HEADER_BYTES, keys)
        self.workers = _socket(ctx, zmq.ROUTER, ep.workers, p.MAX_RESULT_BYTES + p.MAX_HEADER_BYTES, keys)
        self.workers.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self.events_in = _socket(ctx, zmq.XSUB, ep.events_in, p.MAX_HEADER_BYTES, keys)
        self.events_in.send(b"\x01")  # the broker sees every event: it stamps seq on each
        self.events_out = _socket(ctx, zmq.XPUB, ep.events_out, 1024, keys, EVENTS_ZAP_DOMAIN)
        self.events_out.setsockopt(zmq.XPUB_VERBOSER, 1)  # every (un)subscribe, to count them
        self.poller = zmq.Poller()
        for sock in (self.clients, self.workers, self.events_in, self.events_out):
            self.poller.register(sock, zmq.POLLIN)
        self.poller.register(self._wake_r.fileno(), zmq.POLLIN)

    def ready_line(self) -> str:
        """The one line printed once the broker serves: its real addresses."""
        ep = self.endpoints
        info = {
            "clients": ep.clients,
            "workers": ep.workers,
            "events_in": ep.events_in,
            "events_out": ep.events_out,
            "data": self.data_dir,
            "epoch": self.epoch,
            "curve": self.curve is not None,
        }
        return f"jobcast broker ready {json.dumps(info)}"

    def run(self, on_ready: Callable[[str], None]) -> int:
        """Serve until SIGINT/SIGTERM; return the exit code."""
        with self._signals():
            on_ready(self.ready_line())
            while not self.stopping:
                self._turn()
        self.close()
        return 0

    def _turn(self) -> None:
        ready = dict(self.poller.poll(self._timeout_ms()))
        now = time.monotonic()
        core = self.core
        if self.clients in ready:
            for frames in _drain(self.clients):
                core.receive_client(frames[0], frames[1:], now)
        if self.workers in ready and self.task_grants:
            for frames, user in _drain_with_user(self.workers):
                core.receive_worker(frames[0], frames[1:], now, self.task_grants.get(user))
        elif self.workers in ready:
            for frames in _drain(self.workers):
                core.receive_worker(frames[0], frames[1:], now)
        if self.events_in in ready:
            for frames in _drain(self.events_in):
                core.receive_event(frames, now)
        if self.events_out in ready:
            self._subscriptions(now)
        if self._wake_r.fileno() in ready:
            self._wake_r.recv(64)
        core.tick(now)
        self.apply(core.effects_to_apply())
        if self.journal.batch.due(now):
            self._flush_journal(now)
        core.storage_error = self.storage.check(now)
        if now >= self.next_cull:
            self.next_cull = now + CULL_INTERVAL_S
            self.results.cull()

    def _subscriptions(self, now: float) -> None:
        for frames in _drain(self.events_out):
            if frames[0][:1] in (b"\x00", b"\x01"):
                self.core.receive_subscription(frames[0][1:], now, frames[0][:1] == b"\x01")

    def _timeout_ms(self) -> int:
        deadline = self.core.next_deadline()
        flush_at = self.journal.next_flush()
        if flush_at is not None and flush_at < deadline:
            deadline = flush_at
        wait_s = min(deadline - time.monotonic(), MAX_POLL_MS / 1000)
        return max(0, int(wait_s * 1000) + 1)

    def apply(self, effects: list[Effect]) -> None:
        """Carry out effects: sends to workers, then durable writes, then what others see.

        Nothing a client or a watcher is told may be lost by a crash, so replies and
        events wait for the turn's writes. Work sent to a worker need not: a job whose
        journal write a crash cut off was never acknowledged, and a result from a run the
        broker does not know is dropped. So a job starts while its submission is written.
        """
        unreachable: list[bytes] = []
        for effect in effects:
            if type(effect) is SendWorker and not self._send_worker(effect.to, effect.frames):
                unreachable.append(effect.to)
        try:
            self._write_durably(effects)
        except (sqlite3.Error, OSError) as exc:
            # the jobs stay in memory and run; new submits are refused until writes work
            self.core.storage_error = self.storage.on_write_error(exc)
        for effect in effects:
            match effect:
                case SendClient(to, frames):
                    _send(self.clients, to, frames)
                case Publish(frames):
                    _send(self.events_out, frames[0], frames[1:])
                case SendWorker() | StoreResult() | Journal():
                    pass
        for peer in unreachable:  # after this turn's writes, so that its records come first
            self.core.worker_unreachable(peer, time.monotonic())
            self.apply(self.core.effects_to_apply())

    def _flush_journal(self, now: float) -> None:
        try:
            self.journal.flush(now)
        except (sqlite3.Error, OSError) as exc:
            self.core.storage_error = self.storage.on_write_error(exc)

    def _write_durably(self, effects: list[Effect]) -> None:
        # results before the journal: a job leaves the journal only once its result is kept
        stores = [e for e in effects if isinstance(e, StoreResult)]
        if stores:
            self.results.store_many(stores)
        records = [e.record for e in effects if isinstance(e, Journal)]
        if records:
            self.journal.apply(records, time.monotonic())

    def _send_worker(self, peer: bytes, frames: list[bytes]) -> bool:
        """Send to a worker; False if it is unreachable (``apply`` then tells the core)."""
        try:
            _send_frames(self.workers, peer, frames)
        except zmq.ZMQError as exc:
            logger.warning("worker %s unreachable (%s)", peer.hex(), exc.strerror)
            return False
        return True

    @contextlib.contextmanager
    def _signals(self) -> Iterator[None]:
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        previous_fd = signal.set_wakeup_fd(self._wake_w.fileno(), warn_on_full_buffer=False)
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            signal.set_wakeup_fd(previous_fd)
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _on_signal(self, signum: int, frame: object) -> None:
        self.stopping += 1  # only a flag: the loop notices on its next turn

    def close(self) -> None:
        """Close sockets, the context and the result store."""
        for sock in (self.clients, self.workers, self.events_in, self.events_out):
            sock.close(linger=LINGER_MS)
        if self.authenticator is not None:
            self.authenticator.stop()
        self.context.term()
        self.results.close()
        self.journal.close()
        self._wake_r.close()
        self._wake_w.close()


def _socket(ctx: zmq.Context[zmq.Socket[bytes]], kind: int, endpoint: str, max_frame: int,
            curve: ServerKeys | None, domain: str = ZAP_DOMAIN) -> zmq.Socket[bytes]:  # fmt: skip
    sock = ctx.socket(kind)
    sock.setsockopt(zmq.LINGER, LINGER_MS)
    sock.setsockopt(zmq.SNDHWM, HWM)
    sock.setsockopt(zmq.RCVHWM, HWM)
    sock.setsockopt(zmq.MAXMSGSIZE, max_frame)
    configure_server(sock, curve, domain)
    sock.bind(endpoint)
    return sock


def _env_int(name: str, default: int) -> int:
    """A positive integer setting from the environment (a clear error if malformed)."""
    raw = os.environ.get(name)
    if not raw:
        return default
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"{name} must be a positive integer (got {raw!r})")
    return int(raw)


def _drain(sock: zmq.Socket[bytes]) -> Iterator[list[bytes]]:
    """Up to ``DRAIN_LIMIT`` messages waiting on a socket the poller saw readable.

    A lone message (the usual case one job at a time) ends the drain when ``EVENTS``
    says nothing more waits: cheaper than a ``zmq.Again`` raised and caught. After a
    second message the drain goes on to ``zmq.Again``, one exception for the batch.
    """
    try:
        yield _recv_frames(sock)
        if not int(sock.getsockopt(zmq.EVENTS)) & zmq.POLLIN:
            return
        for _ in range(DRAIN_LIMIT - 1):
            yield _recv_frames(sock)
    except zmq.Again:
        return


def _recv_frames(sock: zmq.Socket[bytes]) -> list[bytes]:
    """One multipart message: ``recv_multipart`` less its per-frame ``RCVMORE`` query."""
    frame = sock.recv(zmq.NOBLOCK, copy=False)
    frames = [frame.bytes]
    while frame.more:
        frame = sock.recv(zmq.NOBLOCK, copy=False)
        frames.append(frame.bytes)
    return frames


def _drain_with_user(sock: zmq.Socket[bytes]) -> Iterator[tuple[list[bytes], str]]:
    """Like ``_drain``, with the ZAP ``User-Id`` of the sender (its Z85 public key)."""
    for _ in range(DRAIN_LIMIT):
        try:
            frames = sock.recv_multipart(zmq.NOBLOCK, copy=False)
        except zmq.Again:
            return
        yield [frame.bytes for frame in frames], str(frames[-1].get("User-Id") or "")


def _send(sock: zmq.Socket[bytes], first: bytes, frames: list[bytes]) -> None:
    try:
        _send_frames(sock, first, frames)
    except zmq.Again:
        logger.warning("dropped a message: peer at its high-water mark")


def _send_frames(sock: zmq.Socket[bytes], first: bytes, frames: list[bytes]) -> None:
    """``first`` then ``frames`` as one message: ``send_multipart`` less its list building
    and per-frame type check (every frame here is bytes)."""
    more = zmq.SNDMORE | zmq.NOBLOCK
    sock.send(first, more if frames else zmq.NOBLOCK)
    for frame in frames[:-1]:
        sock.send(frame, more)
    if frames:
        sock.send(frames[-1], zmq.NOBLOCK)


def next_epoch(data_dir: str) -> int:
    """Increment and return the broker incarnation number kept in the data dir."""
    path = os.path.join(data_dir, "epoch")
    try:
        with open(path) as f:
            epoch = int(f.read().strip() or 0) + 1
    except FileNotFoundError:
        epoch = 1
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write(str(epoch))
    os.replace(tmp, path)
    return epoch


def prepare_ipc_directory(directory: str) -> None:
    """Create the ipc sockets' directory 0700; warn if an existing one is open to others."""
    os.makedirs(directory, mode=0o700, exist_ok=True)
    mode = stat.S_IMODE(os.stat(directory).st_mode)
    if mode & 0o077:
        # the socket files themselves are 0700 (umask 077), which is what connect() checks
        logger.warning("ipc directory %s has mode %o; 0700 keeps other users out", directory, mode)


def check_loopback(base_url: str, *, curve: bool = False) -> None:
    """Refuse to bind anything but loopback unless CURVE (with its ZAP allowlist) is on.

    Raises:
        ValueError: the tcp host is not a loopback address and ``curve`` is false.
    """
    if curve or not base_url.startswith("tcp://"):
        return
    host = base_url.removeprefix("tcp://").rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(
            f"refusing to bind {host}: off loopback the broker needs CURVE keys "
            "(--curve-secret FILE --curve-allow DIR; make them with `jobcast keys`)"
        )
