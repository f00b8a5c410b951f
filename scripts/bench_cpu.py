"""CPU per job of each jobcast process: the figure that wall-clock throughput hides on a busy box.

Starts a broker and a 2-slot worker pool from ``--repo`` (default: this checkout), runs
``--jobs`` no-op jobs one by one and then through ``client.map``, and prints, per phase,
the CPU microseconds per job that the broker, the worker pool (pool, agents and runners)
and the client took, read from /proc/PID/stat, next to the wall-clock jobs/s::

    .venv/bin/python scripts/bench_cpu.py --jobs 2000 --trials 3
    .venv/bin/python scripts/bench_cpu.py --repo /tmp/base --jobs 2000   # another tree, same venv
    .venv/bin/python scripts/bench_cpu.py --profile /tmp/prof            # py-spy raw profiles
    .venv/bin/python scripts/bench_cpu.py --ab /tmp/base --trials 10     # A/B, both stacks up

With ``--ab TREE`` a stack from each tree runs side by side and the trials alternate
between them (ABBA order), so both see the same load on a busy machine. Each stack is
driven by a client from its own tree (a driver process, ``--drive``: the wire protocol
may differ between the trees), and the client figure is that process's CPU.

The one_by_one phase submits one job at a time, then waits for all with
``client.results(ids)`` (a tree without it: the same pipelined WAITs, ``_wait_final``).

The ``--repo`` tree's ``broker``/``workers`` packages are imported by the children and by
this process (for the client), so two checkouts can be compared run by run.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def _args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repo", default=str(HERE.parent), help="the jobcast tree to run")
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--trials", type=int, default=1)
    parser.add_argument("--slots", type=int, default=2)
    parser.add_argument("--task", default="bench_noop", help="bench_noop, or bench_bare (no progress call)")
    parser.add_argument("--phases", default="one_by_one,map", help="comma list: one_by_one, map, latency")
    parser.add_argument("--profile", default=None, help="directory for py-spy raw profiles")
    parser.add_argument("--ab", default=None, help="another tree: alternate trials between both")
    parser.add_argument("--json", default=None, help="append one JSON line per trial to FILE")
    parser.add_argument("--drive", default=None, help=argparse.SUPPRESS)  # URL: be an --ab driver
    return parser.parse_args()


ARGS = _args()
REPO = os.path.abspath(ARGS.repo)
sys.path[:0] = [REPO, str(HERE)]  # the client comes from the tree under test

import bench_lib  # noqa: E402

from broker.client import Client  # noqa: E402

bench_lib.REPO = Path(REPO)  # children run from the tree under test (bench_env, cwd)


def own_ticks(pid: int) -> int:
    """utime+stime of one process in ticks (0 if gone)."""
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    return sum(int(x) for x in data[data.rindex(")") + 2 :].split()[11:13])


def tree_ticks(pid: int) -> int:
    """utime+stime of pid and its live descendants."""
    return sum(own_ticks(p) for p in bench_lib.descendants(pid))


def role_pids(pool: int) -> dict[str, list[int]]:
    """The worker pool's processes by role: the pool itself, its agents, their runners."""
    agents = bench_lib.children(pool)
    runners = [pid for agent in agents for pid in bench_lib.children(agent)]
    return {"pool": [pool], "agents": agents, "runners": runners}


def run_phase(name: str, client: Client, n: int, salt: str) -> None:
    """One phase's workload."""
    if name == "one_by_one":
        ids = [client.submit(ARGS.task, {"i": i, "s": salt}).id for i in range(n)]
        wait_all(client, ids)
    elif name == "map":
        client.map(ARGS.task, [{"i": i, "s": salt} for i in range(n)], timeout=600)
    elif name == "latency":
        for i in range(n):
            if hasattr(client, "run"):
                client.run(ARGS.task, {"i": i, "s": salt}, timeout=30)
            else:  # a tree older than ``run``
                client.submit(ARGS.task, {"i": i, "s": salt}).result(timeout=30)
    else:
        raise SystemExit(f"unknown phase {name}")


def wait_all(client: Client, ids: list[str]) -> None:
    """Every job's result, with pipelined WAITs (a tree older than ``results``: the private way)."""
    if hasattr(client, "results"):
        client.results(ids, timeout=300)
        return
    from broker.replies import final_result, job_view

    for reply in client._wait_final(ids, time.monotonic() + 300):
        final_result(job_view(reply))


def timed_phase(name: str, client: Client, n: int, salt: str) -> tuple[float, float]:
    """Run one phase here: (client CPU seconds, wall seconds)."""
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    run_phase(name, client, n, salt)
    return time.process_time() - cpu0, time.perf_counter() - t0


def measure(name: str, run: Any, pids: dict[str, int], n: int) -> dict[str, float]:
    """CPU µs per job of each process group over one phase (``run()`` → client CPU s, wall s)."""
    before = {role: tree_ticks(pid) for role, pid in pids.items()}
    split = role_pids(pids["workers"])
    split_before = {role: sum(own_ticks(p) for p in group) for role, group in split.items()}
    cpu, wall = run()
    out = {
        f"{role}_us": (tree_ticks(pid) - before[role]) / bench_lib.HZ / n * 1e6 for role, pid in pids.items()
    }
    for role, group in split.items():
        out[f"{role}_us"] = (sum(own_ticks(p) for p in group) - split_before[role]) / bench_lib.HZ / n * 1e6
    out["client_us"] = cpu / n * 1e6
    out["jobs_per_s"] = n / wall
    return out


class Driver:
    """A client from one tree in its own process (``--drive``), running phases on request."""

    def __init__(self, tree: str, url: str) -> None:
        argv = [
            sys.executable,
            str(HERE / "bench_cpu.py"),
            "--repo",
            tree,
            "--drive",
            url,
            "--task",
            ARGS.task,
        ]
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.call({"phase": "warm", "n": 200, "salt": f"{time.time()}{tree}"})

    def call(self, request: dict[str, Any]) -> tuple[float, float]:
        """Run one phase in the driver: (its CPU seconds, wall seconds)."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        reply = json.loads(self.proc.stdout.readline())
        return reply["cpu_s"], reply["wall_s"]

    def close(self) -> None:
        """End the driver (it exits when its stdin closes)."""
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(30)


def drive(url: str) -> None:
    """Be a driver: one JSON request per stdin line, one JSON reply per stdout line."""
    with Client(url, timeout_s=60) as client:
        for line in sys.stdin:
            request = json.loads(line)
            if request["phase"] == "warm":
                client.map(
                    "bench_noop", [{"w": i, "s": request["salt"]} for i in range(request["n"])], timeout=60
                )
                cpu_s, wall_s = 0.0, 0.0
            else:
                cpu_s, wall_s = timed_phase(request["phase"], client, request["n"], request["salt"])
            print(json.dumps({"cpu_s": cpu_s, "wall_s": wall_s}), flush=True)


def spy(pid: int, path: str) -> subprocess.Popen[bytes]:
    """py-spy recording one process until it is interrupted."""
    exe = os.path.join(os.path.dirname(sys.executable), "py-spy")
    argv = [exe, "record", "-p", str(pid), "-f", "raw", "-o", path, "-r", "200", "--nonblocking"]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def ab_trials(phases: list[str], other: str) -> dict[str, list[dict[str, Any]]]:
    """Both trees' stacks up at once; each trial measures one, then the other (ABBA)."""
    import bench_core

    trees = [REPO, os.path.abspath(other)]
    setups = {}
    results: dict[str, list[dict[str, Any]]] = {tree: [] for tree in trees}
    with contextlib.ExitStack() as stack:
        for tree in trees:
            bench_lib.REPO = Path(tree)
            s = stack.enter_context(bench_core.stack(ARGS.slots))
            driver = Driver(tree, s["url"])
            stack.callback(driver.close)
            setups[tree] = (driver, {"broker": s["broker"].pid, "workers": s["worker"].pid})
        salt = f"{time.time()}"
        for i in range(ARGS.trials):
            for tree in trees if i % 2 == 0 else trees[::-1]:
                driver, pids = setups[tree]
                out = {}
                for name in phases:
                    request = {"phase": name, "n": ARGS.jobs, "salt": f"{salt}{i}{tree}{name}"}
                    out[name] = measure(name, functools.partial(driver.call, request), pids, ARGS.jobs)
                results[tree].append(out)
                record(tree, i, out)
    return results


def record(tree: str, i: int, result: dict[str, Any]) -> None:
    """Print one trial; append it to --json."""
    print(f"{tree} trial {i + 1}: {json.dumps(result, default=lambda v: round(v, 1))}", flush=True)
    if ARGS.json:
        with open(ARGS.json, "a") as fh:
            fh.write(json.dumps({"repo": tree, "jobs": ARGS.jobs, **result}) + "\n")


def trial(phases: list[str]) -> dict[str, Any]:
    """One stack, every phase once."""
    import bench_core

    out: dict[str, Any] = {}
    with bench_core.stack(ARGS.slots) as s, Client(s["url"], timeout_s=60) as client:
        pids = {"broker": s["broker"].pid, "workers": s["worker"].pid}
        salt = f"{time.time()}"
        client.map("bench_noop", [{"w": i, "s": salt} for i in range(200)], timeout=60)  # warm
        spies = start_spies(pids) if ARGS.profile else []
        try:
            for name in phases:
                run = functools.partial(timed_phase, name, client, ARGS.jobs, f"{salt}{name}")
                out[name] = measure(name, run, pids, ARGS.jobs)
        finally:
            for proc in spies:
                proc.send_signal(2)
                proc.wait(30)
    return out


def start_spies(pids: dict[str, int]) -> list[subprocess.Popen[bytes]]:
    """py-spy on the broker, one agent and its runner."""
    os.makedirs(ARGS.profile, exist_ok=True)
    agent = min(bench_lib.children(pids["workers"]))
    runner = min(bench_lib.children(agent))
    targets = {"broker": pids["broker"], "agent": agent, "runner": runner}
    spies = [spy(pid, os.path.join(ARGS.profile, f"{role}.txt")) for role, pid in targets.items()]
    time.sleep(1.0)  # py-spy attaches
    return spies


def main() -> None:
    """Run the trials; print each and the medians."""
    if ARGS.drive:
        drive(ARGS.drive)
        return
    phases = ARGS.phases.split(",")
    if ARGS.ab:
        by_tree = ab_trials(phases, ARGS.ab)
    else:
        by_tree = {REPO: []}
        for i in range(ARGS.trials):
            by_tree[REPO].append(trial(phases))
            record(REPO, i, by_tree[REPO][-1])
    for tree, trials in by_tree.items():
        print(f"{tree}: medians of {len(trials)}")
        for name in phases:
            keys = trials[0][name].keys()
            medians = {k: statistics.median(t[name][k] for t in trials) for k in keys}
            print(f"  {name:>10}: " + "  ".join(f"{k} {v:,.0f}" for k, v in medians.items()))


if __name__ == "__main__":
    main()
