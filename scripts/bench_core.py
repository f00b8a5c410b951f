"""Broker + worker figures for scripts/bench: latency, throughput, cache hit, queued RSS, scaling.

Every function starts its own processes over ipc:// in a temp dir and ends them by PID.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from bench_lib import OtherLoad, Procs, percentile, status_kib, tree_cpu_s

from broker.batches import batch_messages, batch_views
from broker.client import MAP_BATCHES_IN_FLIGHT, Client
from broker.replies import batch_options

PY = sys.executable


@contextmanager
def stack(slots: int, tasks: tuple[str, ...] = ("bench_tasks",),
          web: bool = False) -> Iterator[dict[str, Any]]:
    """A broker, a worker pool with ``slots`` processes (0: none) and optionally the web server.

    Yields ``{"url", "tmp", "procs", "broker", "worker", "web", "http"}``.
    """
    tmp = tempfile.mkdtemp(prefix="jc-bench-")
    url = f"ipc://{tmp}/jc"
    try:
        with Procs() as procs:
            broker = procs.start([PY, "-m", "broker.cli", "broker", "--broker", url, "--data",
                                  f"{tmp}/data"], ready="jobcast broker ready")
            out: dict[str, Any] = {"url": url, "tmp": tmp, "procs": procs, "broker": broker,
                                   "worker": None, "web": None, "http": None}
            if slots:
                argv = [PY, "-m", "broker.cli", "worker", "--broker", url, "-n", str(slots)]
                for module in tasks:
                    argv += ["--tasks", module]
                out["worker"] = procs.start(argv, ready="jobcast worker ready", timeout=120)
                with Client(url, timeout_s=30) as client:
                    deadline = time.monotonic() + 60
                    while client.stats()["workers"] < slots:
                        if time.monotonic() > deadline:
                            raise TimeoutError(f"{slots} worker slots did not register")
                        time.sleep(0.05)
            if web:
                out["web"] = procs.start([PY, "-m", "web", "--broker", url, "--data", f"{tmp}/data",
                                          "--port", "0"], ready="jobcast web ready")
                out["http"] = _web_url(out["web"])
            yield out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _web_url(proc: Any) -> str:
    """``http://HOST:PORT`` from the web server's ready line."""
    return str(proc.ready_line).split()[-1]


def ms_stats(samples_s: list[float]) -> dict[str, float]:
    """p50/p99 in ms of latencies in seconds."""
    return {"p50_ms": percentile(samples_s, 50) * 1e3, "p99_ms": percentile(samples_s, 99) * 1e3}


def sequential(client: Client, task: str, n: int, salt: str) -> list[float]:
    """n sequential submit→result round trips with unique args, each one ``client.run``
    (one request, as gearmand's doNormal); seconds each."""
    samples = []
    for i in range(n):
        began = time.perf_counter()
        client.run(task, {"i": i, "s": salt}, timeout=30)
        samples.append(time.perf_counter() - began)
    return samples


def cache_hits(client: Client, n: int, salt: str) -> list[float]:
    """Submit latency of n results already in the cache (the same args as the cold run)."""
    samples = []
    for i in range(n):
        began = time.perf_counter()
        job = client.submit("bench_cached", {"i": i, "s": salt})
        samples.append(time.perf_counter() - began)
        if not job.cached or job.view.get("state") != "done":
            raise RuntimeError(f"second submit of the same args was not a cache hit: {job.view}")
    return samples


def one_by_one(client: Client, n: int, salt: str) -> float:
    """n jobs submitted one by one (each submit waits for its reply, as web requests do),
    then all waited with one ``client.results(ids)`` (pipelined WAITs): jobs/s.

    The gearman anchor this figure is set against submits with doBackground in a loop and
    sees completion through gearmand's admin status, not by one fetch per job: so the
    submits stay one round trip each, and the wait is one fan-in, not n round trips.
    """
    began = time.perf_counter()
    ids = [client.submit("bench_noop", {"i": i, "s": salt}).id for i in range(n)]
    client.results(ids, timeout=300)
    return n / (time.perf_counter() - began)


def mapped(client: Client, n: int, salt: str, pids: dict[str, int]) -> dict[str, float]:
    """n jobs through client.map (batched submits, pipelined waits): jobs/s, and the CPU
    µs per job that each process took (``pids``: role → pid, its children counted; the
    client is this process)."""
    cpu_before = {role: tree_cpu_s(pid) for role, pid in pids.items()}
    client_before = time.process_time()
    began = time.perf_counter()
    client.map("bench_noop", [{"i": i, "s": salt} for i in range(n)], timeout=600)
    out = {"jobs_per_s": n / (time.perf_counter() - began)}
    for role, pid in pids.items():
        out[f"{role}_cpu_us_per_job"] = (tree_cpu_s(pid) - cpu_before[role]) / n * 1e6
    out["client_cpu_us_per_job"] = (time.process_time() - client_before) / n * 1e6
    out["cpu_us_per_job"] = sum(out[f"{role}_cpu_us_per_job"] for role in (*pids, "client"))
    return out


def core_figures(jobs: int, latency_jobs: int, cache_jobs: int, slots: int) -> dict[str, Any]:
    """Sections 1-3: latency, cache hit vs cold, throughput one-by-one and mapped."""
    out: dict[str, Any] = {}
    with stack(slots) as s, Client(s["url"], timeout_s=60) as client:
        salt = f"{time.time()}"
        client.submit("bench_noop", {"warm": salt}).result(timeout=30)
        with OtherLoad() as load:
            out["latency"] = ms_stats(sequential(client, "bench_noop", latency_jobs, salt))
        out["latency"]["others"] = load.result
        with OtherLoad() as load:
            cold = sequential(client, "bench_cached", cache_jobs, salt)
            hot = cache_hits(client, cache_jobs, salt)
        out["cache"] = {"cold": ms_stats(cold), "hit": ms_stats(hot), "others": load.result}
        with OtherLoad() as load:
            per_s = one_by_one(client, jobs, salt + "a")
        out["one_by_one"] = {"jobs_per_s": per_s, "others": load.result}
        pids = {"broker": s["broker"].pid, "workers": s["worker"].pid}
        with OtherLoad() as load:
            out["map"] = mapped(client, jobs, salt + "b", pids)
        out["map"]["others"] = load.result
    return out


def submit_pipelined(client: Client, n: int, salt: str) -> None:
    """Submit n jobs as ``client.map`` does (batches of 1000, a few in flight), no waits.

    Uses the client's own batching (``_call_many``): the public ``map`` also waits for
    the results, which never come without workers.
    """
    args_list = [{"i": i, "s": salt} for i in range(n)]
    msgs = batch_messages(client._reqs, "bench_noop", args_list, batch_options({}))
    replies = client._call_many(msgs, time.monotonic() + 600, window=MAP_BATCHES_IN_FLIGHT)
    batch_views(replies, msgs, n)


def queued_rss(queued: int) -> dict[str, Any]:
    """Section 7: broker VmRSS/VmHWM before and after ``queued`` jobs wait with no worker."""
    with stack(0, tasks=()) as s, Client(s["url"], timeout_s=60) as client:
        pid = s["broker"].pid
        time.sleep(0.3)  # with no worker connected the broker accepts any task name
        before = status_kib(pid, "VmRSS")
        with OtherLoad() as load:
            began = time.perf_counter()
            submit_pipelined(client, queued, f"{time.time()}")
            submit_s = time.perf_counter() - began
        stats = client.stats()
        time.sleep(0.5)
        after, peak = status_kib(pid, "VmRSS"), status_kib(pid, "VmHWM")
    return {"queued": stats.get("queued", 0), "rss_before_mib": before / 1024,
            "rss_mib": after / 1024, "hwm_mib": peak / 1024,
            "bytes_per_job": (after - before) * 1024 / max(1, queued),
            "submit_per_s": queued / submit_s, "others": load.result}


def scaling(processes: list[int], jobs: int, loops: int) -> dict[str, Any]:
    """Section 8: CPU-bound jobs/s through client.map on 1, 2, 4 worker processes."""
    out: dict[str, Any] = {}
    for n in processes:
        with stack(n) as s, Client(s["url"], timeout_s=60) as client:
            salt = f"{time.time()}"
            client.map("bench_cpu", [{"loops": loops, "w": i, "s": salt} for i in range(2 * n)],
                       timeout=120)
            with OtherLoad() as load:
                began = time.perf_counter()
                client.map("bench_cpu", [{"loops": loops, "i": i, "s": salt} for i in range(jobs)],
                           timeout=600)
                per_s = jobs / (time.perf_counter() - began)
        out[f"p{n}"] = {"jobs_per_s": per_s, "others": load.result}
    return out
