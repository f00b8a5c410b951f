"""Web figures for scripts/bench: push latency, WebSocket fan-out and idle RSS, cached report.

Watchers run in a separate load-client process (scripts/bench_ws.py, uvloop), as in the
limits anchor; the worker emits progress with ``bench_push`` (scripts/bench_tasks.py).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from bench_core import stack
from bench_lib import HERE, OtherLoad, Procs, percentile, read_line, status_kib, tree_cpu_s

from broker.client import Client

PY = sys.executable
PUSH_TASKS = ("bench_tasks", "workers.demo")
REPORT_PATH = "/reports/report?region=eu&year=2026&steps=20&step_s=0"
PUSH_METHOD = (
    "one job, N WebSocket watchers on it through the web server; bench_push calls "
    "job.progress() at the target rate with time.time() in the message; the worker's "
    "per-job throttle (workers.context.PROGRESS_INTERVAL_S = 0.1 s, a Final constant, not "
    "configurable) is lifted inside the bench task only, so every watcher is offered every "
    "event, as in the limits anchor (100 clients x RATE events/s each)"
)


def _watchers(procs: Procs, http: str, job_ids: list[str], n: int, timeout: float) -> Any:
    """Start the load client and wait until its n watchers have their snapshots."""
    base = http.replace("http://", "ws://")
    client = procs.start([PY, str(HERE / "bench_ws.py"), "--base", base, f"--jobs={','.join(job_ids)}",
                          "--n", str(n), "--timeout", str(timeout)])
    connected = json.loads(read_line(client, 180))
    if connected["failed"]:
        raise RuntimeError(f"{connected['failed']} of {n} watchers failed to connect")
    return client


def _push_job(client: Client, tmp: str, rate: float, count: int) -> tuple[str, str]:
    """Submit a bench_push job that waits for its go file; (job id, go file)."""
    go = os.path.join(tmp, f"go-{time.time_ns()}")
    job = client.submit("bench_push", {"rate": rate, "count": count, "go_file": go,
                                       "nonce": str(time.time_ns())})
    return job.id, go


def _go(path: str) -> None:
    with open(path, "w"):
        pass


def push_latency(rates: list[float], watchers: int, seconds: float) -> dict[str, Any]:
    """Section 4: worker progress() → WebSocket watcher latency at each rate."""
    out: dict[str, Any] = {"method": PUSH_METHOD}
    with stack(1, PUSH_TASKS, web=True) as s, Client(s["url"], timeout_s=60) as client:
        for rate in rates:
            count = int(rate * seconds)
            job_id, go = _push_job(client, s["tmp"], rate, count)
            ws = _watchers(s["procs"], s["http"], [job_id], watchers, seconds + 120)
            web_cpu0 = tree_cpu_s(s["web"].pid)
            with OtherLoad() as load:
                t0 = time.monotonic()
                _go(go)
                seen = json.loads(read_line(ws, seconds + 180))
                span = time.monotonic() - t0
            sent = client.result(job_id, timeout=60)
            s["procs"].stop(ws)
            expected = count * watchers
            first, last = seen.get("p50_first_fifth_ms"), seen.get("p50_last_fifth_ms")
            collapsed = bool(seen["timeout"] or (first is not None and last is not None
                                                 and last > max(50.0, 5 * first)))
            out[f"r{rate:g}"] = {
                "rate": rate, "worker_rate": sent["rate"], "late_sends": sent["late"],
                "p50_ms": seen["p50_ms"], "p99_ms": seen["p99_ms"], "max_ms": seen["max_ms"],
                "p50_first_fifth_ms": first, "p50_last_fifth_ms": last,
                "delivered_fraction": seen["receipts"] / max(1, expected),
                "saw_final": seen["saw_final"], "collapsed": collapsed,
                "web_cpu_cores": (tree_cpu_s(s["web"].pid) - web_cpu0) / span,
                "others": load.result,
            }
    return out


def fanout(watchers: int, events: int, rate: float) -> dict[str, Any]:
    """Section 5: delivered messages/s to N watchers of one job, and web RSS per idle watcher."""
    with stack(1, PUSH_TASKS, web=True) as s, Client(s["url"], timeout_s=60) as client:
        web = s["web"].pid
        # warm-up: one watcher that sees a whole short job
        warm_id, warm_go = _push_job(client, s["tmp"], 100.0, 5)
        ws = _watchers(s["procs"], s["http"], [warm_id], 1, 60)
        _go(warm_go)
        read_line(ws, 60)
        s["procs"].stop(ws)
        time.sleep(0.5)
        base_kib = status_kib(web, "VmRSS")
        job_id, go = _push_job(client, s["tmp"], rate, events)
        t0 = time.monotonic()
        ws = _watchers(s["procs"], s["http"], [job_id], watchers, events / rate + 180)
        connect_s = time.monotonic() - t0
        time.sleep(1.0)
        idle_kib = status_kib(web, "VmRSS")
        web_cpu0 = tree_cpu_s(web)
        with OtherLoad() as load:
            _go(go)
            seen = json.loads(read_line(ws, events / rate + 240))
        web_cpu = tree_cpu_s(web) - web_cpu0
        s["procs"].stop(ws)
    span = seen.get("span_s") or float("nan")
    return {
        "watchers": watchers, "events": events, "offered_rate": rate,
        "delivered_per_s": seen["receipts"] / span,
        "delivered_fraction": seen["receipts"] / (watchers * events),
        "min_per_watcher": seen["min_per_watcher"], "saw_final": seen["saw_final"],
        "p50_ms": seen["p50_ms"], "p99_ms": seen["p99_ms"],
        "web_cpu_us_per_msg": web_cpu / max(1, seen["receipts"]) * 1e6,
        "handshakes_per_s": watchers / connect_s,
        "rss_base_mib": base_kib / 1024, "rss_idle_mib": idle_kib / 1024,
        "kib_per_idle_watcher": (idle_kib - base_kib) / watchers,
        "others": load.result,
    }


def _get(url: str) -> tuple[int, str, str]:
    """(status, Location, body) without following redirects."""

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(url, timeout=30) as resp:
            return resp.status, resp.headers.get("Location", ""), resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Location", ""), exc.read().decode(errors="replace")


def wrk_path() -> str | None:
    """wrk, installed once from Debian if missing (None if that fails)."""
    if shutil.which("wrk"):
        return shutil.which("wrk")
    try:
        subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], check=True, timeout=300,
                       capture_output=True, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    except (OSError, subprocess.SubprocessError) as exc:
        print(f"  (wrk not installed: {exc}; using the httpx load client)", file=sys.stderr)
    return shutil.which("wrk")


def _wrk(wrk: str, url: str, conns: int, seconds: float) -> dict[str, float]:
    out = subprocess.run([wrk, "-t1", f"-c{conns}", f"-d{max(1, round(seconds))}s", "--latency", url],
                         capture_output=True, text=True, timeout=seconds + 60, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    units = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}

    def pct(label: str) -> float:
        m = re.search(rf"^\s+{label}%\s+([\d.]+)(us|ms|s|m)\b", out, re.M)
        return float(m.group(1)) * units[m.group(2)] if m else float("nan")

    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    return {"requests_per_s": rps, "p50_ms": pct("50"), "p99_ms": pct("99"),
            "non_2xx": float(errors.group(1)) if errors else 0.0}


async def _httpx_load(url: str, conns: int, seconds: float) -> dict[str, float]:
    import httpx

    latencies: list[float] = []
    bad = 0
    limits = httpx.Limits(max_connections=conns, max_keepalive_connections=conns)
    async with httpx.AsyncClient(limits=limits, timeout=30) as http:
        stop = time.monotonic() + seconds

        async def one() -> None:
            nonlocal bad
            while time.monotonic() < stop:
                began = time.perf_counter()
                resp = await http.get(url)
                latencies.append(time.perf_counter() - began)
                bad += resp.status_code != 200

        began = time.monotonic()
        await asyncio.gather(*(one() for _ in range(conns)))
        elapsed = time.monotonic() - began
    return {"requests_per_s": len(latencies) / elapsed, "p50_ms": percentile(latencies, 50) * 1e3,
            "p99_ms": percentile(latencies, 99) * 1e3, "non_2xx": float(bad)}


def cached_report(seconds: float, conns: int = 64) -> dict[str, Any]:
    """Section 6: GET /reports/report?... once cached, under 64 connections."""
    wrk = wrk_path()
    with stack(1, PUSH_TASKS, web=True) as s, Client(s["url"], timeout_s=60) as client:
        url = s["http"] + REPORT_PATH
        status, location, _ = _get(url)
        if status == 303:
            job_id = location.split("/jobs/")[1].split("?")[0]
            client.result(urllib.parse.unquote(job_id), timeout=60)
            status, location, body = _get(url)
        else:
            body = _
        if status != 200 or "Cached result." not in body:
            raise RuntimeError(f"the report was not served from the cache ({status})")
        web_cpu0, t0 = tree_cpu_s(s["web"].pid), time.monotonic()
        if wrk:
            _wrk(wrk, url, conns, 1)  # warm-up
            web_cpu0, t0 = tree_cpu_s(s["web"].pid), time.monotonic()
            with OtherLoad() as load:
                figures = _wrk(wrk, url, conns, seconds)
        else:
            asyncio.run(_httpx_load(url, conns, 1))
            web_cpu0, t0 = tree_cpu_s(s["web"].pid), time.monotonic()
            with OtherLoad() as load:
                figures = asyncio.run(_httpx_load(url, conns, seconds))
        web_cpu = (tree_cpu_s(s["web"].pid) - web_cpu0) / (time.monotonic() - t0)
    return {**figures, "load_client": "wrk" if wrk else "httpx", "connections": conns,
            "body_bytes": len(body.encode()), "web_cpu_cores": web_cpu, "others": load.result}
