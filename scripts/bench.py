"""jobcast benchmark: latency and throughput on real processes over ipc://.

Prints a table; ``--json FILE`` writes every figure. Figures are medians of ``--trials``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

from broker.client import Client

HERE = os.path.dirname(os.path.abspath(__file__))


def start(argv: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    assert proc.stdout is not None
    for line in proc.stdout:
        if " ready" in line:
            return proc
    raise RuntimeError(f"{argv} did not start")


def stop(procs: list[subprocess.Popen[str]]) -> None:
    for proc in reversed(procs):
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout:
            proc.stdout.close()


def latency(client: Client, n: int, salt: str) -> dict[str, float]:
    samples = []
    for i in range(n):
        began = time.perf_counter()
        client.submit("bench_noop", {"i": i, "s": salt}).result(timeout=30)
        samples.append((time.perf_counter() - began) * 1000)
    samples.sort()
    return {"p50_ms": samples[len(samples) // 2], "p99_ms": samples[int(len(samples) * 0.99)]}


def one_by_one(client: Client, n: int, salt: str) -> float:
    began = time.perf_counter()
    ids = [client.submit("bench_noop", {"i": i, "s": salt}).id for i in range(n)]
    for job_id in ids:
        client.result(job_id, timeout=120)
    return n / (time.perf_counter() - began)


def mapped(client: Client, n: int, salt: str) -> float:
    began = time.perf_counter()
    client.map("bench_noop", [{"i": i, "s": salt} for i in range(n)], timeout=300)
    return n / (time.perf_counter() - began)


def trial(args: argparse.Namespace, number: int) -> dict[str, Any]:
    tmp = tempfile.mkdtemp(prefix="jc-bench-")
    url = f"ipc://{tmp}/jc"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([HERE, os.environ.get("PYTHONPATH", "")]),
           "JOBCAST_LOG": "WARNING"}
    python = sys.executable
    procs = [start([python, "-m", "broker.cli", "broker", "--broker", url, "--data", f"{tmp}/data"], env)]
    try:
        procs.append(start([python, "-m", "broker.cli", "worker", "--broker", url, "-n", str(args.slots),
                            "--tasks", "bench_tasks"], env))
        with Client(url, timeout_s=60) as client:
            salt = f"{number}-{time.time()}"
            client.submit("bench_noop", {"warm": salt}).result(timeout=30)
            figures: dict[str, Any] = latency(client, args.latency_jobs, salt)
            figures["one_by_one_per_s"] = one_by_one(client, args.jobs, salt + "a")
            figures["map_per_s"] = mapped(client, args.jobs, salt + "b")
        return figures
    finally:
        stop(procs)


def summarise(trials: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    return {
        key: {"median": statistics.median(t[key] for t in trials),
              "min": min(t[key] for t in trials), "max": max(t[key] for t in trials)}
        for key in trials[0]
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, one trial")
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--latency-jobs", type=int, default=2_000)
    parser.add_argument("--slots", type=int, default=2)
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args()
    if args.quick:
        args.trials, args.jobs, args.latency_jobs = 1, 2_000, 300
    cpu_before = os.times()
    trials = [trial(args, number) for number in range(args.trials)]
    summary = summarise(trials)
    print(f"jobcast bench: {args.slots} worker slots, {args.jobs} jobs, {args.trials} trial(s)")
    for key, value in summary.items():
        print(f"  {key:<18} {value['median']:>10.2f}   ({value['min']:.2f}–{value['max']:.2f})")
    del cpu_before
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"config": vars(args), "figures": summary, "trials": trials}, out, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
