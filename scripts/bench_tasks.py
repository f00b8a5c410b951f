"""Tasks used by scripts/bench (loaded with ``--tasks bench_tasks``)."""

from __future__ import annotations

import os
import time
from typing import Any

from workers import Job, task
from workers import context as _context

GO_WAIT_S = 120.0


@task("bench_noop", ttl=0)
def bench_noop(job: Job, **args: Any) -> dict[str, Any]:
    """Report progress once and return at once."""
    job.progress(1, 1, "done")
    return {}


@task("bench_bare", ttl=0)
def bench_bare(job: Job, **args: Any) -> dict[str, Any]:
    """Return at once, without a progress call (what that call's event costs, by difference)."""
    return {}


@task("bench_cached", ttl=3600)
def bench_cached(job: Job, **args: Any) -> dict[str, Any]:
    """Like bench_noop, but its result is cached (the cache-hit figure)."""
    job.progress(1, 1, "done")
    return {"args": args}


@task("bench_cpu", ttl=0)
def bench_cpu(job: Job, loops: int = 200_000, **args: Any) -> int:
    """CPU-bound: a pure-Python loop (about 10-20 ms for the default on this machine kind)."""
    total = 0
    for i in range(loops):
        total += i * i % 7
    job.progress(1, 1, "done")
    return total


@task("bench_push", ttl=0, timeout=900)
def bench_push(job: Job, rate: float = 100.0, count: int = 500, go_file: str = "",
               unthrottled: bool = True, **args: Any) -> dict[str, Any]:
    """Emit ``count`` progress events at ``rate``/s, each message carrying ``t=<time.time()>``.

    Waits (bounded) for ``go_file`` to exist first, so that the watchers are connected before
    the first event. With ``unthrottled`` the worker's per-job progress throttle
    (``workers.context.PROGRESS_INTERVAL_S``, 0.1 s, not configurable) is lifted for this
    process while the task runs, so one job can carry more than 10 events/s.
    """
    deadline = time.monotonic() + GO_WAIT_S
    while go_file and not os.path.exists(go_file):
        if time.monotonic() > deadline:
            raise TimeoutError("bench_push: no go signal")
        time.sleep(0.005)
    saved = _context.PROGRESS_INTERVAL_S
    if unthrottled:
        setattr(_context, "PROGRESS_INTERVAL_S", 0.0)  # noqa: B010 (Final in the product)
    try:
        period = 1.0 / rate
        start = time.monotonic() + 0.01
        late = 0
        for i in range(1, count + 1):
            due = start + (i - 1) * period
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            elif wait < -period:
                late += 1
            job.progress(i, count, f"t={time.time():.6f}")
        elapsed = time.monotonic() - start
    finally:
        setattr(_context, "PROGRESS_INTERVAL_S", saved)  # noqa: B010
    return {"sent": count, "rate": count / elapsed if elapsed > 0 else 0.0, "late": late}


@task("bench_sleep", ttl=0)
def bench_sleep(job: Job, ms: float = 20.0, **args: Any) -> dict[str, Any]:
    """Sleep-bound: ``ms`` milliseconds of waiting, as a job that waits on I/O does."""
    time.sleep(ms / 1000)
    return {"host": os.environ.get("JOBCAST_BENCH_HOST", "?")}


@task("bench_hold", ttl=0, max_attempts=3)
def bench_hold(job: Job, seconds: float = 4.0, **args: Any) -> dict[str, Any]:
    """Say which host runs it (progress message ``on HOST``), then hold the slot ``seconds``."""
    host = os.environ.get("JOBCAST_BENCH_HOST", "?")
    job.progress(0, 1, f"on {host}")
    time.sleep(seconds)
    return {"host": host}
