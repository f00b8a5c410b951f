"""The pyzmq relay floor for ``scripts/bench --compare floor``: jobcast's job shape on the
smallest Python ZeroMQ relay, measured in the same run.

What jobcast does per job, and nothing else: a client submits, a broker acks with a job id
and hands the job to a worker with free credit, the worker publishes one progress event
(as ``bench_noop``'s ``progress(1, 1)``) and returns its result, and the broker passes the
result on. No storage, no JSON parsing (args and results are opaque bytes), the task runs
inline in the worker process (no child), job ids are a counter. Every role is its own
process (client = this process, one broker, 2 workers) over ipc:// in a temp dir; the
workloads are those of jobcast's latency and throughput sections:

  latency      N sequential submit→result round trips (ack, then the result pushed)
  one_by_one   N submits, each waiting for its ack; then one wait for all to finish
  map          N args, 1,000 to a message, MAP_BATCHES_IN_FLIGHT messages in flight;
               each worker takes up to 16 jobs at once (its credit: the prefetch)
  map_credit1  the same with a credit of 1 (a round trip to the broker per job)

The latency figure is also taken without the ack (``latency_noack``: the client gets only
the result, and no job id before it), the cheapest round trip a relay can offer.

Wire (frames): client→broker ``N|Q|B|M args`` (submit: ack and result pushed | result
only | ack only | many, args joined by newlines, which canonical JSON never holds raw),
``W count`` (answer once ``count`` jobs are done), ``S`` (workers, done, progress events
seen); broker→client
``A id [count]``, ``R id result``, ``D done``, ``S ...``; broker→worker ``id args``;
worker→broker ``""`` (one credit) or ``id result`` (a result, and its credit back);
worker PUB→broker SUB ``id "1/1"``.

Run alone: ``.venv/bin/python scripts/bench_floor.py run [--quick]``.
"""

from __future__ import annotations

import argparse
import math
import shutil
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import zmq
from bench_lib import OtherLoad, Procs, flatten, fmt_range, percentile, summary, wait_quiet

from broker.batches import MAP_BATCHES_IN_FLIGHT

PY = sys.executable
WORKERS = 2
PREFETCH_CREDIT = 16
BATCH = 1000
SEP = b"\n"
TURN = 256  # messages read from one socket before the broker looks at the others
TIMEOUT_MS = 60_000
ROWS = (  # (label, figure key, digits)
    ("submit→result p50 (ms)", "latency.p50_ms", 2),
    ("submit→result p99 (ms)", "latency.p99_ms", 2),
    ("  no ack, result only: p50 (ms)", "latency_noack.p50_ms", 2),
    ("  no ack, result only: p99 (ms)", "latency_noack.p99_ms", 2),
    ("one-by-one submit, jobs/s", "one_by_one.jobs_per_s", 0),
    ("map, credit 16, jobs/s", "map.jobs_per_s", 0),
    ("map, credit 1, jobs/s", "map_credit1.jobs_per_s", 0),
)


# --- broker ----------------------------------------------------------------------------


class Relay:
    """The broker's state: free credits, queued jobs, who waits for what."""

    def __init__(self, front: zmq.Socket[bytes], back: zmq.Socket[bytes]) -> None:
        self.front, self.back = front, back
        self.credits: deque[bytes] = deque()  # one worker identity per free credit
        self.queue: deque[tuple[bytes, bytes]] = deque()
        self.owner: dict[bytes, bytes] = {}  # running or queued job -> client for its result (b"": none)
        self.progress: dict[bytes, bytes] = {}  # latest progress of a live job
        self.workers: set[bytes] = set()
        self.waiters: list[tuple[int, bytes]] = []
        self.last_id = self.done = self.events = 0

    def submit(self, args: bytes, owner: bytes, ack: bytes = b"") -> bytes:
        """A new job: to a free credit, else to the queue; its id."""
        self.last_id += 1
        jid = b"%d" % self.last_id
        self.owner[jid] = owner
        if ack:
            self.front.send_multipart([ack, b"A", jid])
        if self.credits:
            self.back.send_multipart([self.credits.popleft(), jid, args])
        else:
            self.queue.append((jid, args))
        return jid

    def from_client(self, frames: list[bytes]) -> None:
        cid, kind, body = frames[0], frames[1], frames[2] if len(frames) > 2 else b""
        if kind in (b"N", b"B"):
            self.submit(body, cid if kind == b"N" else b"", ack=cid)
        elif kind == b"Q":
            self.submit(body, cid)
        elif kind == b"M":
            items = body.split(SEP)
            first = self.submit(items[0], b"")
            for args in items[1:]:
                self.submit(args, b"")
            self.front.send_multipart([cid, b"A", first, b"%d" % len(items)])
        elif kind == b"W":
            self.waiters.append((int(body), cid))
            self.wake()
        elif kind == b"S":
            self.front.send_multipart([cid, b"S", b"%d" % len(self.workers), b"%d" % self.done,
                                       b"%d" % self.events])

    def from_worker(self, frames: list[bytes]) -> None:
        wid = frames[0]
        if len(frames) == 3:
            jid, result = frames[1], frames[2]
            cid = self.owner.pop(jid)
            self.progress.pop(jid, None)
            self.done += 1
            if cid:
                self.front.send_multipart([cid, b"R", jid, result])
            if self.waiters:
                self.wake()
        else:
            self.workers.add(wid)
        if self.queue:
            jid, args = self.queue.popleft()
            self.back.send_multipart([wid, jid, args])
        else:
            self.credits.append(wid)

    def from_progress(self, frames: list[bytes]) -> None:
        self.events += 1
        if frames[0] in self.owner:  # an event that comes after its result is dropped
            self.progress[frames[0]] = frames[1]

    def wake(self) -> None:
        """Answer the waits whose count is reached."""
        ready = [w for w in self.waiters if w[0] <= self.done]
        for waiter in ready:
            self.waiters.remove(waiter)
            self.front.send_multipart([waiter[1], b"D", b"%d" % self.done])


def drain(sock: zmq.Socket[bytes], handle: Callable[[list[bytes]], None]) -> None:
    for _ in range(TURN):
        try:
            frames = sock.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            return
        handle(frames)


def broker(tmp: str) -> None:
    """The broker process: ROUTER for clients, ROUTER for workers, SUB for progress."""
    ctx = zmq.Context()
    front, back, sub = ctx.socket(zmq.ROUTER), ctx.socket(zmq.ROUTER), ctx.socket(zmq.SUB)
    front.bind(f"ipc://{tmp}/front")
    back.bind(f"ipc://{tmp}/back")
    sub.setsockopt(zmq.RCVHWM, 0)
    sub.bind(f"ipc://{tmp}/progress")
    sub.subscribe(b"")
    relay = Relay(front, back)
    handlers = {front: relay.from_client, back: relay.from_worker, sub: relay.from_progress}
    poller = zmq.Poller()
    for sock in handlers:
        poller.register(sock, zmq.POLLIN)
    print("floor broker ready", flush=True)
    while True:
        for sock, _ in poller.poll():
            drain(sock, handlers[sock])


# --- worker ----------------------------------------------------------------------------


def worker(tmp: str, credit: int) -> None:
    """A worker process: take a job, publish its progress, return an empty result."""
    ctx = zmq.Context()
    jobs, events = ctx.socket(zmq.DEALER), ctx.socket(zmq.PUB)
    jobs.connect(f"ipc://{tmp}/back")
    events.setsockopt(zmq.SNDHWM, 0)
    events.connect(f"ipc://{tmp}/progress")
    for _ in range(credit):
        jobs.send(b"")
    print("floor worker ready", flush=True)
    while True:
        jid, _args = jobs.recv_multipart()
        events.send_multipart([jid, b"1/1"])
        jobs.send_multipart([jid, b"{}"])


# --- client (this process) and the workloads -----------------------------------------


class FloorClient:
    """A DEALER to the relay; counts the jobs it submitted (the target of a wait)."""

    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], tmp: str) -> None:
        self.sock = ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.RCVTIMEO, TIMEOUT_MS)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(f"ipc://{tmp}/front")
        self.submitted = 0

    def recv(self, kind: bytes) -> list[bytes]:
        try:
            frames = self.sock.recv_multipart()
        except zmq.Again:
            raise TimeoutError(f"floor relay: no {kind!r} reply in {TIMEOUT_MS / 1000:.0f}s") from None
        if frames[0] != kind:
            raise RuntimeError(f"floor relay: expected {kind!r}, got {frames!r}")
        return frames

    def stats(self) -> tuple[int, int, int]:
        """(workers registered, jobs done, progress events seen)."""
        self.sock.send(b"S")
        _, workers, done, events = self.recv(b"S")
        return int(workers), int(done), int(events)

    def wait_all(self) -> None:
        """Wait until every job submitted so far is done."""
        self.sock.send_multipart([b"W", b"%d" % self.submitted])
        self.recv(b"D")


def args_of(i: int, salt: bytes) -> bytes:
    return b'{"i":%d,"s":"%b"}' % (i, salt)


def latency(client: FloorClient, n: int, salt: bytes, ack: bool = True) -> dict[str, float]:
    """n sequential submit→result round trips: p50/p99 in ms. With ``ack`` the broker
    answers each submit with the job id first (as jobcast and gearmand do)."""
    samples = []
    kind = b"N" if ack else b"Q"
    for i in range(n):
        began = time.perf_counter()
        client.sock.send_multipart([kind, args_of(i, salt)])
        if ack:
            client.recv(b"A")
        client.recv(b"R")
        samples.append(time.perf_counter() - began)
    client.submitted += n
    return {"p50_ms": percentile(samples, 50) * 1e3, "p99_ms": percentile(samples, 99) * 1e3}


def one_by_one(client: FloorClient, n: int, salt: bytes) -> float:
    """n submits, each waiting for its ack, then one wait for all: jobs/s."""
    began = time.perf_counter()
    for i in range(n):
        client.sock.send_multipart([b"B", args_of(i, salt)])
        client.recv(b"A")
    client.submitted += n
    client.wait_all()
    return n / (time.perf_counter() - began)


def mapped(client: FloorClient, n: int, salt: bytes) -> float:
    """n jobs, BATCH args to a message, MAP_BATCHES_IN_FLIGHT in flight, then one wait: jobs/s."""
    began = time.perf_counter()
    items = [args_of(i, salt) for i in range(n)]
    in_flight = 0
    for start in range(0, n, BATCH):
        if in_flight == MAP_BATCHES_IN_FLIGHT:
            client.recv(b"A")
            in_flight -= 1
        client.sock.send_multipart([b"M", SEP.join(items[start:start + BATCH])])
        in_flight += 1
    for _ in range(in_flight):
        client.recv(b"A")
    client.submitted += n
    client.wait_all()
    return n / (time.perf_counter() - began)


@contextmanager
def relay(credit: int) -> Iterator[FloorClient]:
    """A broker and WORKERS workers with ``credit`` each, all registered and warm; a client."""
    tmp = tempfile.mkdtemp(prefix="jc-floor-")
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    script = str(Path(__file__).resolve())
    try:
        with Procs() as procs:
            procs.start([PY, script, "broker", tmp], ready="floor broker ready")
            for _ in range(WORKERS):
                procs.start([PY, script, "worker", tmp, str(credit)], ready="floor worker ready")
            client = FloorClient(ctx, tmp)
            deadline = time.monotonic() + 30
            while client.stats()[0] < WORKERS:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{WORKERS} floor workers did not register")
                time.sleep(0.02)
            latency(client, 200, b"warm")  # also lets the progress subscriptions settle
            try:
                yield client
            finally:
                client.sock.close()
    finally:
        ctx.destroy(linger=0)
        shutil.rmtree(tmp, ignore_errors=True)


def measured(figure: Callable[[], Any]) -> tuple[Any, dict[str, float]]:
    """A figure and the cores other processes took meanwhile."""
    with OtherLoad() as load:
        value = figure()
    return value, load.result


def floor_trial(jobs: int, latency_jobs: int) -> dict[str, Any]:
    """One trial of the four workloads (two relays: credit 16, then credit 1)."""
    out: dict[str, Any] = {}
    salt = b"%d" % time.time_ns()
    with relay(PREFETCH_CREDIT) as client:
        lat, others = measured(lambda: latency(client, latency_jobs, salt))
        out["latency"] = {**lat, "others": others}
        lat, others = measured(lambda: latency(client, latency_jobs, salt, ack=False))
        out["latency_noack"] = {**lat, "others": others}
        per_s, others = measured(lambda: one_by_one(client, jobs, salt))
        out["one_by_one"] = {"jobs_per_s": per_s, "others": others}
        per_s, others = measured(lambda: mapped(client, jobs, salt))
        out["map"] = {"jobs_per_s": per_s, "others": others}
        _, done, events = client.stats()
        out["progress_events_per_job"] = events / max(1, done)
    with relay(1) as client:
        per_s, others = measured(lambda: mapped(client, jobs, salt))
        out["map_credit1"] = {"jobs_per_s": per_s, "others": others}
    return out


def floor_figures(jobs: int = 20_000, latency_jobs: int = 2_000, trials: int = 3,
                  quiet_wait: float = 0.0) -> dict[str, Any]:
    """``trials`` floor trials: ``{"params", "trials", "summary"}``; the summary maps each
    flattened figure key (``latency.p50_ms``...) to its median/min/max."""
    results = []
    for number in range(trials):
        if quiet_wait > 0:
            wait_quiet(quiet_wait)
        began = time.monotonic()
        results.append(floor_trial(jobs, latency_jobs))
        print(f"  floor trial {number + 1}: done in {time.monotonic() - began:.0f}s", flush=True)
    flats = [flatten(t) for t in results]
    keys = sorted({k for f in flats for k in f})
    return {"params": {"jobs": jobs, "latency_jobs": latency_jobs, "workers": WORKERS,
                       "credit": PREFETCH_CREDIT, "batch": BATCH, "in_flight": MAP_BATCHES_IN_FLIGHT},
            "trials": results,
            "summary": {k: summary([f.get(k, math.nan) for f in flats]) for k in keys}}


def print_table(floor: dict[str, Any]) -> None:
    """The floor's figures, median (min–max), with the other processes' cores."""
    summ = floor["summary"]
    print(f"\npyzmq relay floor (no storage, no parsing, {WORKERS} workers), median (min–max) of "
          f"{len(floor['trials'])} trial(s)")
    for label, key, digits in ROWS:
        if key in summ:
            others = summ.get(f"{key.split('.')[0]}.others.other_cores")
            extra = f"   others {fmt_range(others, 2)} cores" if others else ""
            print(f"  {label:<32} {fmt_range(summ[key], digits):>28}{extra}")
    sys.stdout.flush()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("role", choices=("run", "broker", "worker"))
    parser.add_argument("tmp", nargs="?", default="")
    parser.add_argument("credit", nargs="?", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="2,000 jobs, 300 round trips, 1 trial")
    parser.add_argument("--trials", type=int, default=None)
    args = parser.parse_args()
    if args.role == "broker":
        broker(args.tmp)
    elif args.role == "worker":
        worker(args.tmp, args.credit)
    else:
        trials = args.trials or (1 if args.quick else 3)
        sizes = (2_000, 300) if args.quick else (20_000, 2_000)
        print_table(floor_figures(*sizes, trials=trials))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
