"""``scripts/bench --compare``: run the anchor benchmarks in the same run and form ratios.

Anchors live in ../shared/anchors (read-only): their results go to a temp dir through
ANCHOR_RESULTS_DIR / LIMITS_RESULTS_DIR. A failing anchor is reported and skipped.
``floor`` is measured here (scripts/bench_floor.py): the smallest Python ZeroMQ relay
doing jobcast's job shape, with jobcast's own sizes and trial count.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import bench_floor
from bench_lib import REPO, Procs, fmt, status_kib

ANCHORS = (REPO / ".." / "shared" / "anchors").resolve()
BENCH_SYSTEMS = {"gearman": ["gearman"], "celery": ["celery"], "rq": ["rq-fork", "rq-simple"],
                 "gearman-python": ["gearman-python"], "zmq": ["zmq"]}
LIMIT_RUNS = (
    ("ws-latency", ["--servers", "starlette:websockets-sansio", "bare", "--rate", "100", "300",
                    "1000"]),
    ("ws-fanout", ["--servers", "starlette:websockets-sansio", "--n", "1000"]),
    ("http", ["--impls", "httptools"]),
)


def _run(argv: list[str], env: dict[str, str], timeout: float, label: str) -> bool:
    """Run one anchor command, its output indented; False (and why) when it fails."""
    print(f"  anchor: {' '.join(argv[1:])}", flush=True)
    began = time.monotonic()
    try:
        proc = subprocess.run(argv, env=env, timeout=timeout, capture_output=True, text=True)
    except (OSError, subprocess.TimeoutExpired) as exc:
        print(f"  anchor {label} failed: {exc}", flush=True)
        return False
    for line in (proc.stdout + proc.stderr).splitlines()[-8:]:
        print(f"    | {line}")
    print(f"  anchor {label}: exit {proc.returncode} after {time.monotonic() - began:.0f}s",
          flush=True)
    return proc.returncode == 0


def run_anchors(names: list[str], trials: int, floor: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run the named anchors (gearman, celery, rq, ..., limits, floor); their parsed results.

    ``floor``: keyword arguments of ``bench_floor.floor_figures`` (jobs, latency_jobs,
    trials, quiet_wait), so the floor runs jobcast's sizes rather than ``trials``.
    """
    out: dict[str, Any] = {"errors": {}}
    tmp = tempfile.mkdtemp(prefix="jc-anchors-")
    env = {**os.environ, "ANCHOR_RESULTS_DIR": tmp, "LIMITS_RESULTS_DIR": tmp,
           "ANCHOR_QUIET_WAIT": os.environ.get("ANCHOR_QUIET_WAIT", "60")}
    try:
        for name in names:
            if name == "limits":
                for what, extra in LIMIT_RUNS:
                    argv = ["bash", str(ANCHORS / "limits" / "run.sh"), what, *extra,
                            "--trials", str(trials)]
                    if not _run(argv, env, 1800, what):
                        out["errors"][what] = "run failed (see above)"
                    path = Path(tmp) / f"{what}.json"
                    if path.exists():
                        out[what] = json.loads(path.read_text())
            elif name == "floor":
                try:
                    out["floor"] = bench_floor.floor_figures(**(floor or {}))
                    bench_floor.print_table(out["floor"])
                except Exception as exc:  # noqa: BLE001 (reported like a failing anchor)
                    out["errors"]["floor"] = repr(exc)
            elif name in BENCH_SYSTEMS:
                argv = ["bash", str(ANCHORS / "bench" / "run.sh"), name, "--trials", str(trials)]
                if not _run(argv, env, 1500, name):
                    out["errors"][name] = "run failed (see above)"
                for system in BENCH_SYSTEMS[name]:
                    path = Path(tmp) / f"{system}.json"
                    if path.exists():
                        out[system] = json.loads(path.read_text())
                if name == "gearman" and "gearman" in out:
                    try:
                        out["gearmand_queued"] = gearmand_queued_rss(100_000)
                    except Exception as exc:  # noqa: BLE001 (an anchor may fail in any way)
                        out["errors"]["gearmand_queued"] = repr(exc)
            else:
                out["errors"][name] = "unknown anchor"
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for name, why in out["errors"].items():
        print(f"  anchor {name}: {why}", flush=True)
    return out


def gearmand_queued_rss(n: int) -> dict[str, float]:
    """gearmand's VmRSS idle and with n background jobs queued (no workers), like section 7."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with Procs() as procs:
        server = procs.start(["gearmand", "-L", "127.0.0.1", "-p", str(port), "--log-file", "none",
                              "--verbose", "ERROR"])
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        time.sleep(0.3)
        before = status_kib(server.pid, "VmRSS")
        subprocess.run(["php", str(ANCHORS / "bench" / "gearman" / "submit_bg.php"), str(port),
                        str(n), "batch"], check=True, timeout=300, capture_output=True)
        time.sleep(0.5)
        after = status_kib(server.pid, "VmRSS")
    return {"queued": n, "rss_before_mib": before / 1024, "rss_mib": after / 1024,
            "bytes_per_job": (after - before) * 1024 / n}


def _m(tree: Any, *keys: str) -> float | None:
    """tree[k1][k2]...['median'] (or the value itself), None when absent."""
    for key in keys:
        if not isinstance(tree, dict) or key not in tree:
            return None
        tree = tree[key]
    if isinstance(tree, dict):
        tree = tree.get("median")
    return float(tree) if isinstance(tree, int | float) else None


def _limit_run(data: dict[str, Any], prefix: str) -> dict[str, Any]:
    for label, run in data.get("runs", {}).items():
        if label.startswith(prefix):
            return dict(run.get("agg") or {})
    return {}


def ratios(ours: dict[str, dict[str, float]], anchors: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows (what, subject, its figure, anchor, anchor figure, ratio, sense) for every anchor
    present. ``subject`` is "jobcast" (the figure under the key "jobcast"), or "floor" for
    the relay floor set against gearman (under "floor"): what the transport alone allows."""
    def me(key: str) -> float | None:
        fig = ours.get(key)
        return None if fig is None or fig["median"] != fig["median"] else fig["median"]

    rows: list[dict[str, Any]] = []

    def add(what: str, key: str, anchor: str, theirs: float | None, sense: str,
            subject: str = "jobcast", mine: float | None = None) -> None:
        mine = me(key) if subject == "jobcast" else mine
        if mine is None or theirs is None or not theirs:
            return
        rows.append({"what": what, "subject": subject, subject: mine, "anchor": anchor,
                     "theirs": theirs, "ratio": mine / theirs, "sense": sense})

    g = anchors.get("gearman", {}).get("summary", {})
    add("submit→result p50 (ms)", "latency.p50_ms", "gearman PHP doNormal p50", _m(g, "fg", "p50_ms"),
        "lower is better")
    add("one-by-one jobs/s", "one_by_one.jobs_per_s", "gearman PHP doBackground loop",
        _m(g, "bg_jobs_per_s"), "higher is better")
    pipelined = _m(g, "bg_batch_jobs_per_s")
    add("map jobs/s", "map.jobs_per_s", "gearman PHP pipelined", pipelined, "higher is better")
    if pipelined:  # above 1x, this box's cores cannot run jobcast's processes at gearmand's rate
        cores = os.cpu_count() or 1
        add("map CPU µs per job", "map.cpu_us_per_job", f"{cores} cores / gearman pipelined rate",
            cores * 1e6 / pipelined, "lower is better")
    fl = anchors.get("floor", {}).get("summary", {})
    floor_figs = (("submit→result p50 (ms)", "latency.p50_ms", "lower is better"),
                  ("one-by-one jobs/s", "one_by_one.jobs_per_s", "higher is better"),
                  ("map jobs/s", "map.jobs_per_s", "higher is better"))
    for what, key, sense in floor_figs:
        add(what, key, "pyzmq relay floor", _m(fl, key), sense)
    for (what, key, sense), anchor, theirs in zip(floor_figs, (
            "gearman PHP doNormal p50", "gearman PHP doBackground loop", "gearman PHP pipelined"), (
            _m(g, "fg", "p50_ms"), _m(g, "bg_jobs_per_s"), _m(g, "bg_batch_jobs_per_s")), strict=True):
        add(what, key, anchor, theirs, sense, subject="floor", mine=_m(fl, key))
    gq = anchors.get("gearmand_queued")
    if gq:
        add("broker bytes per queued job", "queued.bytes_per_job",
            f"gearmand, {gq['queued']:,} queued (no workers)", gq["bytes_per_job"], "lower is better")
    for system, label in (("celery", "celery"), ("rq-simple", "rq SimpleWorker"), ("rq-fork", "rq fork")):
        summ = anchors.get(system, {}).get("summary", {})
        add("submit→result p50 (ms)", "latency.p50_ms", f"{label} sequential p50", _m(summ, "seq", "p50_ms"),
            "lower is better")
        add("one-by-one jobs/s", "one_by_one.jobs_per_s", f"{label} jobs/s", _m(summ, "jobs_per_s"),
            "higher is better")
    lat = anchors.get("ws-latency", {})
    for server, name in (("starlette:websockets-sansio ", "bare relay, Starlette"),
                         ("bare ", "bare relay, websockets lib")):
        for rate in ("100", "300", "1000"):
            agg = _limit_run(lat, f"{server}clients=100 rate={rate}/s")
            add(f"push p50 at {rate}/s (ms)", f"push.r{rate}.p50_ms", f"{name} p50", _m(agg, "p50_ms"),
                "lower is better")
            add(f"push p99 at {rate}/s (ms)", f"push.r{rate}.p99_ms", f"{name} p99", _m(agg, "p99_ms"),
                "lower is better")
    fan = _limit_run(anchors.get("ws-fanout", {}), "starlette:websockets-sansio N=1000")
    add("fan-out msgs/s, 1,000 watchers", "fanout.delivered_per_s", "bare Starlette N=1000",
        _m(fan, "msgs_per_s"), "higher is better")
    add("fan-out web CPU µs per msg", "fanout.web_cpu_us_per_msg", "bare Starlette server CPU µs/msg",
        _m(fan, "server_cpu_us_per_msg"), "lower is better")  # the load client's speed aside
    add("web KiB per idle watcher", "fanout.kib_per_idle_watcher", "bare Starlette KiB/conn",
        _m(fan, "server_kib_per_idle_conn"), "lower is better")
    http = anchors.get("http", {}).get("impls", {}).get("httptools", {}).get("agg", {})
    tool = ours.get("report.wrk", {}).get("median", 1.0)
    key = "/report/disk c=64" if tool else "httpx /report/disk c=64"
    add("cached report req/s (64 conns)", "report.requests_per_s", f"bare Starlette+diskcache {key}",
        _m(http, key, "requests_per_s"), "higher is better")
    add("cached report p99 (ms)", "report.p99_ms", f"bare Starlette+diskcache {key}",
        _m(http, key, "p99_ms"), "lower is better")
    return rows


def print_ratios(rows: list[dict[str, Any]]) -> None:
    """The ratio table."""
    if not rows:
        print("\nno anchor figures to compare with")
        return
    for subject, title in (("jobcast", "jobcast / anchor, same run (median of each):"),
                           ("floor", "pyzmq relay floor / anchor, same run: what the transport alone "
                                     "allows (no storage, no parsing)")):
        mine = [r for r in rows if r.get("subject", "jobcast") == subject]
        if not mine:
            continue
        print(f"\n{title}")
        print(f"  {'figure':<32} {subject:>12}  {'anchor':<44} {'anchor fig':>12} {'ratio':>7}")
        for r in mine:
            digits = 2 if min(r["theirs"], r[subject]) < 100 else 0
            print(f"  {r['what']:<32} {fmt(r[subject], digits):>12}  {r['anchor']:<44} "
                  f"{fmt(r['theirs'], digits):>12} {r['ratio']:>6.2f}x  ({r['sense']})")
    sys.stdout.flush()
