"""jobcast across hosts: throughput with workers on 1, 2 and 3 hosts, and the time to notice a lost host.

Hosts are Linux network namespaces on one bridge (tests/netns.py; needs root and iproute2).
The broker runs alone on one host with CURVE, as it must off loopback; each worker host runs
a pool of ``--slots`` slots; this process is the client, one more host on the bridge.

  throughput  ``--jobs`` sleep-bound jobs of ``--ms`` ms through client.map, with workers on
              1, 2 and 3 hosts (``--slots`` each), next to the same slot count on one host
              (does spreading cost anything?), and a no-op task on 3 hosts (the broker's
              own ceiling over CURVE tcp)
  detection   a job holds a slot; its host is cut off the network (link down: no reset, no
              goodbye). Detection = cut → the broker re-queues it; then the job's final state
              and attempts (2: it ran once more, elsewhere). With the default 1 s heartbeat.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from bench_lib import REPO, OtherLoad, Procs, fmt, fmt_range, summary, tree_cpu_s

sys.path.insert(0, str(REPO / "tests"))
from netns import Network, unavailable  # noqa: E402  (shared with the multi-host tests)

from broker.client import Client  # noqa: E402
from broker.security import ClientKeys, client_keys, create_key_pair  # noqa: E402

PY = sys.executable
HOSTS = ("broker", "h1", "h2", "h3")
PORT = 5555


@dataclass
class Keys:
    """Key files: the broker's pair, its allowlist, one pair per host; this client's keys."""

    broker_secret: str
    broker_public: str
    allow: str
    secrets: dict[str, str]
    client: ClientKeys


def make_keys(tmp: str) -> Keys:
    own, allow = os.path.join(tmp, "keys"), os.path.join(tmp, "allow")
    os.makedirs(allow, mode=0o700)
    broker_public, broker_secret = create_key_pair(own, "broker")
    secrets = {}
    for name in (*HOSTS, "bench"):
        public, secrets[name] = create_key_pair(own, f"host-{name}")
        os.link(public, os.path.join(allow, f"{name}.key"))
    client = client_keys(secrets["bench"], broker_public)
    assert client is not None
    return Keys(broker_secret, broker_public, allow, secrets, client)


@contextmanager
def cluster(net: Network, keys: Keys, tmp: str, slots: dict[str, int],
            heartbeat_s: float) -> Iterator[Procs]:  # fmt: skip
    """A CURVE broker on host ``broker`` and worker pools (``slots`` per host); a fresh data dir."""
    url = broker_url(net)
    data = tempfile.mkdtemp(prefix="data-", dir=tmp)
    env = [f"JOBCAST_HEARTBEAT_S={heartbeat_s}"]
    with Procs() as procs:
        procs.start(net["broker"].argv(["env", *env, PY, "-m", "broker.cli", "broker", "--broker", url,
                                        "--data", data, "--curve-secret", keys.broker_secret,
                                        "--curve-allow", keys.allow]),
                    ready="jobcast broker ready")  # fmt: skip
        for host, count in slots.items():
            argv = ["env", *env, f"JOBCAST_BENCH_HOST={host}", PY, "-m", "broker.cli", "worker",
                    "--broker", url, "-n", str(count), "--tasks", "bench_tasks",
                    "--curve-secret", keys.secrets[host], "--curve-server", keys.broker_public]  # fmt: skip
            procs.start(net[host].argv(argv), ready="jobcast worker ready", timeout=120)
        with Client(url, timeout_s=30, curve=keys.client) as client:
            wait_workers(client, sum(slots.values()))
        yield procs


def broker_url(net: Network) -> str:
    return f"tcp://{net['broker'].address}:{PORT}"


def wait_workers(client: Client, count: int, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while client.stats()["workers"] != count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{count} worker slots did not register")
        time.sleep(0.05)


def throughput(net: Network, keys: Keys, tmp: str, slots: dict[str, int], task: str,
               jobs: int, ms: float) -> dict[str, Any]:  # fmt: skip
    """jobs/s of ``jobs`` jobs through client.map, and the share each host ran."""
    with cluster(net, keys, tmp, slots, 1.0) as procs, \
            Client(broker_url(net), timeout_s=60, curve=keys.client) as client:  # fmt: skip
        client.map(task, [{"warm": i} for i in range(sum(slots.values()) * 2)], timeout=60)
        broker_pid = procs.started[0].pid
        with OtherLoad() as load:
            cpu_before, began = tree_cpu_s(broker_pid), time.perf_counter()
            results = client.map(task, [{"i": i, "ms": ms} for i in range(jobs)], timeout=300)
            elapsed, broker_cpu_s = time.perf_counter() - began, tree_cpu_s(broker_pid) - cpu_before
    total_slots = sum(slots.values())
    ideal = total_slots * 1000 / ms if task == "bench_sleep" else float("nan")
    hosts = [r["host"] for r in results] if task == "bench_sleep" else []
    return {"jobs_per_s": jobs / elapsed, "ideal_per_s": ideal, "efficiency": jobs / elapsed / ideal,
            "hosts_used": len(set(hosts)) if hosts else len(slots), "others": load.result,
            "broker_cpu_us_per_job": broker_cpu_s / jobs * 1e6}  # fmt: skip


def detection(net: Network, keys: Keys, tmp: str, trials: int, heartbeat_s: float,
              hold_s: float) -> list[dict[str, float]]:  # fmt: skip
    """Cut the host running a job; time until it is re-queued, and its final attempts."""
    out = []
    with cluster(net, keys, tmp, {"h1": 2, "h2": 2}, heartbeat_s), \
            Client(broker_url(net), timeout_s=30, curve=keys.client) as client:  # fmt: skip
        for trial in range(trials):
            out.append(one_cut(net, client, heartbeat_s, hold_s, trial))
            wait_workers(client, 4, timeout_s=60)  # the cut host is back and registered again
    return out


def one_cut(net: Network, client: Client, heartbeat_s: float, hold_s: float, trial: int) -> dict[str, float]:
    job = client.submit("bench_hold", {"seconds": hold_s, "trial": trial})
    host = wait_running_on(client, job.id)
    net[host].cut()
    cut_at = time.monotonic()
    try:
        while client.status(job.id)["attempts"] < 2:
            if time.monotonic() - cut_at > 30 * heartbeat_s:
                raise TimeoutError("the lost host was never noticed")
            time.sleep(0.005)
        detected_s = time.monotonic() - cut_at
        result = job.result(timeout=hold_s + 30)
    finally:
        net[host].restore()
    view = client.status(job.id)
    return {"detected_s": detected_s, "detected_heartbeats": detected_s / heartbeat_s,
            "attempts": view["attempts"], "other_host": float(result["host"] != host)}  # fmt: skip


def wait_running_on(client: Client, job_id: str, timeout_s: float = 30.0) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        view = client.status(job_id)
        if view["state"] == "running" and str(view["message"]).startswith("on "):
            return str(view["message"]).removeprefix("on ")
        time.sleep(0.01)
    raise TimeoutError("the job never ran")


def configs(slots: int) -> list[tuple[str, dict[str, int], str]]:
    """(label, slots per host, task) of the throughput rows."""
    spread = [(f"sleep, {n} host(s) x {slots} slots", {f"h{i}": slots for i in range(1, n + 1)},
               "bench_sleep") for n in (1, 2, 3)]  # fmt: skip
    same = [(f"sleep, 1 host x {n * slots} slots", {"h1": n * slots}, "bench_sleep") for n in (2, 3)]
    noop = [(f"no-op, 3 hosts x {slots} slots", {f"h{i}": slots for i in (1, 2, 3)}, "bench_noop")]
    return spread + same + noop


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=200, help="sleep-bound jobs per run (default 200)")
    parser.add_argument("--ms", type=float, default=20.0, help="each job's sleep (default 20 ms)")
    parser.add_argument("--noop-jobs", type=int, default=2000, help="no-op jobs for the ceiling row")
    parser.add_argument("--slots", type=int, default=2, help="slots per worker host (default 2)")
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--cuts", type=int, default=3, help="host cut-offs to time (default 3)")
    parser.add_argument("--heartbeat", type=float, default=1.0, help="JOBCAST_HEARTBEAT_S (default 1)")
    parser.add_argument("--hold", type=float, default=4.0, help="seconds the cut-off job runs")
    parser.add_argument("--only", default="throughput,detection")
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args()
    reason = unavailable()
    if reason:
        print(f"bench_hosts: {reason}", file=sys.stderr)
        return 2
    tmp = tempfile.mkdtemp(prefix="jc-bh-")
    figures: dict[str, Any] = {}
    try:
        with Network(HOSTS) as net:
            keys = make_keys(tmp)
            print(f"hosts: {', '.join(f'{h.name}={h.address}' for h in net.hosts.values())}; "
                  f"this process {net.gateway}; CURVE on", flush=True)  # fmt: skip
            if "throughput" in args.only:
                figures["throughput"] = run_throughput(net, keys, tmp, args)
            if "detection" in args.only:
                figures["detection"] = run_detection(net, keys, tmp, args)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"config": vars(args), "figures": figures}, out, indent=2)
    return 0


def run_throughput(net: Network, keys: Keys, tmp: str, args: argparse.Namespace) -> dict[str, Any]:
    rows: dict[str, Any] = {}
    print(f"\nthroughput: {args.jobs} jobs of {args.ms:g} ms (no-op: {args.noop_jobs} jobs), "
          f"median (min–max) of {args.trials}", flush=True)  # fmt: skip
    print(f"  {'workers':<32} {'jobs/s':>22} {'of ideal':>10} {'broker µs/job':>14}  others (cores)")
    for label, slots, task in configs(args.slots):
        jobs = args.jobs if task == "bench_sleep" else args.noop_jobs
        trials = [throughput(net, keys, tmp, slots, task, jobs, args.ms) for _ in range(args.trials)]
        rate = summary([t["jobs_per_s"] for t in trials])
        eff = summary([t["efficiency"] for t in trials])["median"]
        others = summary([t["others"]["other_cores"] for t in trials])["median"]
        cpu = summary([t["broker_cpu_us_per_job"] for t in trials])["median"]
        rows[label] = {"jobs_per_s": rate, "efficiency": eff, "broker_cpu_us_per_job": cpu, "trials": trials}
        share = "—" if eff != eff else f"{100 * eff:.0f}%"
        print(f"  {label:<32} {fmt_range(rate, 1):>22} {share:>10} {fmt(cpu):>14}  {fmt(others, 2)}",
              flush=True)  # fmt: skip
    noop_us = next(row["broker_cpu_us_per_job"] for name, row in rows.items() if name.startswith("no-op"))
    print(f"  the broker's CPU per no-op job, {fmt(noop_us)} µs: one core holds at most "
          f"~{fmt(1e6 / noop_us)} jobs/s in all, whatever the number of hosts", flush=True)
    return rows


def run_detection(net: Network, keys: Keys, tmp: str, args: argparse.Namespace) -> dict[str, Any]:
    print(f"\ndetection: heartbeat {args.heartbeat:g} s, a slot is dead after 3 silent intervals; "
          f"{args.cuts} cut-offs", flush=True)  # fmt: skip
    cuts = detection(net, keys, tmp, args.cuts, args.heartbeat, args.hold)
    for number, cut in enumerate(cuts, 1):
        where = "other" if cut["other_host"] else "same"
        print(f"  cut {number}: re-queued after {cut['detected_s']:.2f} s "
              f"({cut['detected_heartbeats']:.2f} heartbeats); finished with attempts = "
              f"{cut['attempts']:.0f} on the {where} host", flush=True)  # fmt: skip
    detected = summary([c["detected_s"] for c in cuts])
    print(f"  detection: {fmt_range(detected, 2)} s", flush=True)
    return {"detected_s": detected, "cuts": cuts}


if __name__ == "__main__":
    raise SystemExit(main())
