"""jobcast benchmark: real processes (broker, workers, web) on this machine, over ipc:// and 127.0.0.1.

One run prints a table of every figure as the median (min–max) of ``--trials``, with the CPU
that other processes on the box took meanwhile; ``--json FILE`` writes every figure and trial.

  1 latency     sequential submit→result of a no-op task that reports progress once
  2 throughput  N no-op jobs on 2 worker slots: submitted one by one, and through client.map
                (with the CPU µs per mapped job of the broker, the worker slots and the client)
  3 cache       submit latency of a cached result next to the cold run of the same task
  4 push        worker progress() → WebSocket watcher latency, 100 watchers, 100/300/1000 events/s
  5 fanout      delivered messages/s to 1,000 watchers; web RSS per idle watcher
  6 report      GET /reports/report?... once cached: requests/s and p99 (64 connections)
  7 queued      broker RSS with 100,000 queued jobs and no workers
  8 scaling     a CPU-bound task on 1, 2 and 4 worker processes

``--compare gearman,celery,rq,limits,floor`` runs the anchors (../shared/anchors) in the same
run and prints jobcast's figures as ratios to theirs; ``floor`` is the smallest Python ZeroMQ
relay doing jobcast's job shape (scripts/bench_floor.py). ``--quick`` runs in about a minute.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

import bench_compare
import bench_core
import bench_web
from bench_lib import flatten, fmt, fmt_range, summary, wait_quiet

SECTIONS = ("latency", "throughput", "cache", "push", "fanout", "report", "queued", "scaling")

# (section, label, figure key, digits); "others" comes from the section's own measurement
ROWS: list[tuple[str, str, str, int]] = [
    ("latency", "submit→result p50 (ms)", "latency.p50_ms", 2),
    ("latency", "submit→result p99 (ms)", "latency.p99_ms", 2),
    ("throughput", "one-by-one submit, jobs/s", "one_by_one.jobs_per_s", 0),
    ("throughput", "client.map, jobs/s", "map.jobs_per_s", 0),
    ("throughput", "client.map, CPU µs per job, all processes", "map.cpu_us_per_job", 0),
    ("throughput", "client.map, CPU µs per job, broker", "map.broker_cpu_us_per_job", 0),
    ("throughput", "client.map, CPU µs per job, worker slots", "map.workers_cpu_us_per_job", 0),
    ("throughput", "client.map, CPU µs per job, client", "map.client_cpu_us_per_job", 0),
    ("cache", "cold submit→result p50 (ms)", "cache.cold.p50_ms", 2),
    ("cache", "cold submit→result p99 (ms)", "cache.cold.p99_ms", 2),
    ("cache", "cache-hit submit p50 (ms)", "cache.hit.p50_ms", 3),
    ("cache", "cache-hit submit p99 (ms)", "cache.hit.p99_ms", 3),
    *[row for rate in ("100", "300", "1000") for row in (
        ("push", f"push {rate}/s: p50 (ms)", f"push.r{rate}.p50_ms", 2),
        ("push", f"push {rate}/s: p99 (ms)", f"push.r{rate}.p99_ms", 2),
        ("push", f"push {rate}/s: p50 in first fifth (ms)", f"push.r{rate}.p50_first_fifth_ms", 2),
        ("push", f"push {rate}/s: p50 in last fifth (ms)", f"push.r{rate}.p50_last_fifth_ms", 2),
        ("push", f"push {rate}/s: delivered fraction", f"push.r{rate}.delivered_fraction", 3),
        ("push", f"push {rate}/s: collapsed (1=yes)", f"push.r{rate}.collapsed", 0),
        ("push", f"push {rate}/s: web CPU (cores)", f"push.r{rate}.web_cpu_cores", 2),
    )],
    ("fanout", "fan-out delivered msgs/s", "fanout.delivered_per_s", 0),
    ("fanout", "fan-out delivered fraction", "fanout.delivered_fraction", 3),
    ("fanout", "fan-out web CPU µs per msg", "fanout.web_cpu_us_per_msg", 1),
    ("fanout", "web KiB per idle watcher", "fanout.kib_per_idle_watcher", 1),
    ("fanout", "web RSS, idle watchers (MiB)", "fanout.rss_idle_mib", 1),
    ("report", "cached report req/s", "report.requests_per_s", 0),
    ("report", "cached report p50 (ms)", "report.p50_ms", 2),
    ("report", "cached report p99 (ms)", "report.p99_ms", 2),
    ("queued", "broker VmRSS, queued jobs (MiB)", "queued.rss_mib", 1),
    ("queued", "broker VmHWM (MiB)", "queued.hwm_mib", 1),
    ("queued", "broker bytes per queued job", "queued.bytes_per_job", 0),
    ("queued", "pipelined submit, jobs/s", "queued.submit_per_s", 0),
    ("scaling", "CPU-bound, 1 process, jobs/s", "scaling.p1.jobs_per_s", 1),
    ("scaling", "CPU-bound, 2 processes, jobs/s", "scaling.p2.jobs_per_s", 1),
    ("scaling", "CPU-bound, 4 processes, jobs/s", "scaling.p4.jobs_per_s", 1),
]


def sizes(args: argparse.Namespace) -> dict[str, Any]:
    """Workload sizes: full or --quick."""
    quick = args.quick
    return {
        "jobs": args.jobs or (2_000 if quick else 20_000),
        "latency_jobs": args.latency_jobs or (300 if quick else 2_000),
        "cache_jobs": 100 if quick else 500,
        "push_seconds": 2.0 if quick else 5.0, "push_watchers": 100,
        "fanout_watchers": 1_000, "fanout_events": 50 if quick else 200, "fanout_rate": 100.0,
        "report_seconds": 2.0 if quick else 5.0,
        "queued": 20_000 if quick else 100_000,
        "scaling_jobs": 40 if quick else 200, "cpu_loops": 200_000,
    }


def run_section(name: str, sz: dict[str, Any], slots: int) -> dict[str, Any]:
    """One section's figures (nested dict); latency, throughput and cache run in trial()."""
    if name == "push":
        return {"push": bench_web.push_latency([100.0, 300.0, 1000.0], sz["push_watchers"],
                                               sz["push_seconds"])}
    if name == "fanout":
        return {"fanout": bench_web.fanout(sz["fanout_watchers"], sz["fanout_events"], sz["fanout_rate"])}
    if name == "report":
        rep = bench_web.cached_report(sz["report_seconds"])
        rep["wrk"] = 1.0 if rep.pop("load_client") == "wrk" else 0.0
        return {"report": rep}
    if name == "queued":
        return {"queued": bench_core.queued_rss(sz["queued"])}
    if name == "scaling":
        return {"scaling": bench_core.scaling([1, 2, 4], sz["scaling_jobs"], sz["cpu_loops"])}
    raise ValueError(name)


def trial(number: int, only: list[str], sz: dict[str, Any], slots: int,
          quiet_wait: float) -> dict[str, Any]:
    """Every selected section once; a failing section is recorded, not fatal."""
    figures: dict[str, Any] = {}
    steps: list[tuple[str, Callable[[], dict[str, Any]]]] = []
    if {"latency", "throughput", "cache"} & set(only):
        steps.append(("latency+throughput+cache", lambda: bench_core.core_figures(
            sz["jobs"], sz["latency_jobs"], sz["cache_jobs"], slots)))
    for name in only:
        if name not in ("latency", "throughput", "cache"):
            steps.append((name, lambda name=name: run_section(name, sz, slots)))  # type: ignore[misc]
    for label, step in steps:
        busy = wait_quiet(quiet_wait) if quiet_wait > 0 else float("nan")
        began = time.monotonic()
        try:
            figures.setdefault("busy_before", {})[label] = busy
            figures.update(step())
            print(f"  trial {number + 1}: {label} done in {time.monotonic() - began:.0f}s", flush=True)
        except Exception as exc:  # noqa: BLE001 (recorded and reported)
            figures.setdefault("errors", {})[label] = repr(exc)
            print(f"  trial {number + 1}: {label} FAILED: {exc!r}", flush=True)
            traceback.print_exc(limit=3)
    return figures


def numeric(flat: dict[str, Any]) -> dict[str, float]:
    """Numbers only (booleans as 0/1, None as NaN)."""
    out: dict[str, float] = {}
    for key, value in flat.items():
        if isinstance(value, bool | int | float):
            out[key] = float(value)
        elif value is None:
            out[key] = math.nan
    return out


def summarise(trials: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Median/min/max of every numeric figure across trials."""
    flats = [numeric(flatten(t)) for t in trials]
    keys = sorted({k for f in flats for k in f})
    return {k: summary([f.get(k, math.nan) for f in flats]) for k in keys}


def others_of(figs: dict[str, dict[str, float]], key: str) -> str:
    """The 'others' column for a figure: other processes' cores (and steal) meanwhile."""
    parts = key.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        base = ".".join(parts[:cut])
        if f"{base}.others.other_cores" in figs:
            o, st = figs[f"{base}.others.other_cores"], figs[f"{base}.others.steal_cores"]
            return f"{fmt_range(o, 2)} (+steal {fmt(st['median'], 2)})"
    return ""


def print_table(figs: dict[str, dict[str, float]], trials: int) -> None:
    """The main table."""
    print(f"\njobcast figures, median (min–max) of {trials} trial(s); 'others' = cores taken by "
          "processes outside this benchmark meanwhile")
    print(f"  {'figure':<42} {'value':>30}   others (cores)")
    for _section, label, key, digits in ROWS:
        if key in figs:
            print(f"  {label:<42} {fmt_range(figs[key], digits):>30}   {others_of(figs, key)}")
    sys.stdout.flush()


def code_version() -> dict[str, Any]:
    """The commit measured, and the product files that differ from it (others' work in progress)."""
    def git(*argv: str) -> str:
        try:
            return subprocess.run(["git", *argv], capture_output=True, text=True, timeout=10,
                                  cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    dirty = [line[3:] for line in git("status", "--porcelain").splitlines()
             if line[3:].startswith(("broker/", "workers/", "web/"))]
    return {"commit": git("rev-parse", "--short", "HEAD"), "dirty_product_files": dirty}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes, one trial (about a minute)")
    parser.add_argument("--trials", type=int, default=None, help="default 3 (1 with --quick)")
    parser.add_argument("--jobs", type=int, default=0, help="throughput jobs (default 20,000)")
    parser.add_argument("--latency-jobs", type=int, default=0, help="default 2,000")
    parser.add_argument("--slots", type=int, default=2)
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma list of {', '.join(SECTIONS)}")
    parser.add_argument("--compare", default="", help="comma list: gearman, celery, rq, limits, floor")
    parser.add_argument("--anchor-trials", type=int, default=1)
    parser.add_argument("--quiet-wait", type=float, default=None,
                        help="seconds to wait for a quiet box before each section (default 20; 0 quick)")
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args()
    trials = args.trials or (1 if args.quick else 3)
    only = [s for s in args.only.split(",") if s]
    unknown = set(only) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown section(s): {', '.join(sorted(unknown))}")
    sz = sizes(args)
    began = time.monotonic()
    version = code_version()
    dirty = ", ".join(version["dirty_product_files"])
    print(f"code: {version['commit']}" + (f", uncommitted product changes in {dirty}" if dirty else ""),
          flush=True)
    print(f"jobcast bench: {trials} trial(s), {args.slots} worker slots, sizes {json.dumps(sz)}", flush=True)
    print(f"push method: {bench_web.PUSH_METHOD}", flush=True)
    anchors: dict[str, Any] = {}
    compare = [c for c in args.compare.split(",") if c]
    quiet = args.quiet_wait if args.quiet_wait is not None else (0.0 if args.quick else 20.0)
    if compare:
        print("anchors first (same run):", flush=True)
        floor = {"jobs": sz["jobs"], "latency_jobs": sz["latency_jobs"], "trials": trials,
                 "quiet_wait": quiet}
        anchors = bench_compare.run_anchors(compare, args.anchor_trials, floor)
    results = []
    for number in range(trials):
        results.append(trial(number, only, sz, args.slots, quiet))
    figs = summarise(results)
    print_table(figs, trials)
    for rate in ("100", "300", "1000"):
        key = f"push.r{rate}.collapsed"
        if key in figs:
            verdict = "collapses (latency grows over the run)" if figs[key]["max"] >= 1 \
                else "does not collapse (latency flat over the run)"
            print(f"  at {rate} events/s the push queue {verdict}: p50 first fifth "
                  f"{fmt(figs[f'push.r{rate}.p50_first_fifth_ms']['median'], 2)} ms → last fifth "
                  f"{fmt(figs[f'push.r{rate}.p50_last_fifth_ms']['median'], 2)} ms; watchers got "
                  f"{fmt(100 * figs[f'push.r{rate}.delivered_fraction']['median'], 1)}% of the events "
                  "(the rest shed by the keep-latest queues)")
    rows = bench_compare.ratios(figs, anchors) if compare else []
    if compare:
        bench_compare.print_ratios(rows)
    errors = [(i + 1, e) for i, t in enumerate(results) for e in t.get("errors", {}).items()]
    for number, (label, why) in errors:
        print(f"  trial {number}: {label} failed: {why}")
    elapsed = time.monotonic() - began
    print(f"\nwall time: {elapsed:.0f}s", flush=True)
    if args.json:
        with open(args.json, "w") as out:
            config = {**vars(args), "trials": trials, "sizes": sz, "wall_s": elapsed,
                      "push_method": bench_web.PUSH_METHOD, "cores": os.cpu_count(), **version}
            json.dump({"config": config,
                       "figures": figs, "trials": results, "ratios": rows,
                       "anchors": anchors}, out, indent=2, default=str)
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
