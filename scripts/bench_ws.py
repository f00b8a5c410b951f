"""WebSocket watcher load client for scripts/bench (one asyncio process, uvloop).

    python scripts/bench_ws.py --base ws://127.0.0.1:PORT --jobs ID[,ID...] --n 100

Opens N watchers on ``/api/jobs/{id}/events`` (watcher i watches job i mod len(jobs)),
prints ``{"connected": n, "failed": k, "connect_s": s}`` once every one has its snapshot,
then reads every pushed event until the server closes the socket (the job's final state)
or ``--timeout``. Progress events (state running, a seq not seen yet) whose message is
``t=<time.time() at the worker>`` give a latency
(receive − send). Prints one JSON summary line: receipts, per-watcher counts, percentiles,
the p50 in the first and last fifth of the run (a growing queue shows there), and the span
from the first send to the last receipt (delivered messages/s).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import time
from typing import Any

import uvloop
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed


def percentile(ordered: list[float], pct: float) -> float | None:
    """Nearest-rank percentile of an already sorted list."""
    if not ordered:
        return None
    rank = max(0, min(len(ordered) - 1, int(round(pct / 100 * len(ordered) + 0.5)) - 1))
    return ordered[rank]


SEQ = b'"seq":'
RUNNING = b'"state":"running"'
SENT_AT = b'"message":"t='


class Watcher:
    """One WebSocket connection and what it saw."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.ws: ClientConnection | None = None
        self.events = 0
        self.samples: list[tuple[float, float]] = []  # (sent, received), time.time()
        self.final = False
        self.last_recv = 0.0
        self.seq = 0

    async def open(self) -> None:
        self.ws = await connect(self.url, compression=None, open_timeout=60, max_queue=None)
        first = json.loads(await asyncio.wait_for(self.ws.recv(), 60))  # the snapshot
        self.seq = int(first.get("seq") or 0)
        self.final = first.get("state") in ("done", "failed", "cancelled")

    async def run(self) -> None:
        assert self.ws is not None
        recv = self.ws.recv
        try:
            while True:
                raw = await recv(decode=False)
                now = time.time()
                self.events += 1
                self.last_recv = now
                self.take(raw, now)
                if self.final:
                    return
        except ConnectionClosed:
            pass

    def take(self, raw: bytes, now: float) -> None:
        """Note one message. A running event is read from its bytes (as the limits anchor's
        client reads its events): json.loads of every message made this one-process client,
        not the server, the bottleneck at 100 watchers x 1,000 events/s."""
        if RUNNING in raw:
            start = raw.index(SEQ) + len(SEQ)
            seq = int(raw[start : raw.index(b",", start)])
            mark = raw.find(SENT_AT)
            if seq > self.seq and mark >= 0:  # a resync snapshot may repeat an event
                begin = mark + len(SENT_AT)
                self.samples.append((float(raw[begin : raw.index(b'"', begin)]), now))
            self.seq = max(self.seq, seq)
            return
        msg = json.loads(raw)
        self.seq = max(self.seq, int(msg.get("seq") or 0))
        self.final = msg.get("state") in ("done", "failed", "cancelled")


async def connect_all(watchers: list[Watcher], concurrency: int) -> int:
    """Open every watcher, ``concurrency`` handshakes at a time; the number that failed."""
    gate = asyncio.Semaphore(concurrency)
    failed = 0

    async def one(w: Watcher) -> None:
        nonlocal failed
        async with gate:
            try:
                await w.open()
            except (TimeoutError, OSError, ConnectionClosed):
                failed += 1
                w.ws = None

    await asyncio.gather(*(one(w) for w in watchers))
    return failed


def report(watchers: list[Watcher], timed_out: bool, cpu_s: float) -> dict[str, Any]:
    """The JSON summary line."""
    samples = [s for w in watchers for s in w.samples]
    latencies = sorted((r - s) * 1e3 for s, r in samples)
    out: dict[str, Any] = {
        "watchers": len(watchers),
        "receipts": len(samples),
        "events": sum(w.events for w in watchers),
        "min_per_watcher": min((len(w.samples) for w in watchers), default=0),
        "max_per_watcher": max((len(w.samples) for w in watchers), default=0),
        "saw_final": sum(1 for w in watchers if w.final),
        "timeout": timed_out,
        "p50_ms": percentile(latencies, 50),
        "p90_ms": percentile(latencies, 90),
        "p99_ms": percentile(latencies, 99),
        "max_ms": latencies[-1] if latencies else None,
        "client_cpu_s": cpu_s,
    }
    if samples:
        first_sent = min(s for s, _ in samples)
        last_sent = max(s for s, _ in samples)
        last_recv = max(r for _, r in samples)
        out["span_s"] = last_recv - first_sent
        fifth = (last_sent - first_sent) / 5
        early = sorted((r - s) * 1e3 for s, r in samples if s <= first_sent + fifth)
        late = sorted((r - s) * 1e3 for s, r in samples if s >= last_sent - fifth)
        out["p50_first_fifth_ms"] = percentile(early, 50)
        out["p50_last_fifth_ms"] = percentile(late, 50)
    return out


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--base", required=True, help="ws://HOST:PORT")
    ap.add_argument("--jobs", nargs="+", required=True, help="job ids: --jobs=ID,ID (ids may start with -)")
    ap.add_argument("--n", type=int, required=True)
    ap.add_argument("--concurrency", type=int, default=200)
    ap.add_argument("--timeout", type=float, default=120.0)
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    jobs = [job_id for arg in args.jobs for job_id in arg.split(",")]
    watchers = [Watcher(f"{args.base}/api/jobs/{jobs[i % len(jobs)]}/events") for i in range(args.n)]
    t0 = time.monotonic()
    failed = await connect_all(watchers, args.concurrency)
    print(
        json.dumps({"connected": args.n - failed, "failed": failed, "connect_s": time.monotonic() - t0}),
        flush=True,
    )
    live = [w for w in watchers if w.ws is not None]
    cpu0 = time.process_time()
    tasks = [asyncio.create_task(w.run()) for w in live]
    done, pending = await asyncio.wait(tasks, timeout=args.timeout) if tasks else (set(), set())
    for task in pending:
        task.cancel()
    cpu_s = time.process_time() - cpu0
    print(json.dumps(report(live, bool(pending), cpu_s)), flush=True)
    await asyncio.gather(*(w.ws.close() for w in live if w.ws is not None), return_exceptions=True)


if __name__ == "__main__":
    uvloop.run(main())
