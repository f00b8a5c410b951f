"""Soak run of jobcast under chaos (RELIABILITY.md 3.2 W1 soak figure and 3.3 B1).

N jobs (tests/tasks.py ``record``: about 20 ms of work between two ledger lines) go to a
pool of ``--slots`` worker slots while a random worker process (an agent or a runner
child) is SIGKILLed every 200 ms, and the broker is SIGKILLed and restarted on the same
data dir and URL three times at random moments. Submissions go on across the outages; a
submit with no answer within ``--submit-timeout`` seconds counts as *unanswered*.

After the last submit the chaos stops, the run waits for quiescence (every acknowledged job
final, nothing queued or running) and prints the figures, checked by tests/history.py.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import zmq
from bench_lib import REPO, Procs, children, percentile

sys.path.insert(0, str(REPO / "tests"))
from history import FINAL, Entry, History, read_ledger  # type: ignore[import-not-found]  # noqa: E402

from broker import protocol as p  # noqa: E402
from broker.addresses import endpoints  # noqa: E402
from broker.client import Client  # noqa: E402

DUPLICATED_DEF = ("a job with two or more ledger `end` lines written by PIDs that the soak "
                  "never SIGKILLed (and that were not runner children of a killed agent)")
LOST_DEF = "an acknowledged job id that is not in a final state after quiescence"
DETECT_DEF = ("SIGKILL of the process running attempt a of job J -> the broker's first "
              "event for J that re-queues or fails it (broker-stamped `ts`); kills within "
              "3 s of a broker restart are left out")


@dataclass
class Kill:
    """One worker-process SIGKILL: when, which PIDs died, which attempt was running."""

    at: float  # wall clock
    pids: list[int]
    agent: bool
    job: tuple[str, int] | None = None


@dataclass
class Run:
    """Everything a soak run records while it goes."""

    history: History = field(default_factory=History)
    kills: list[Kill] = field(default_factory=list)
    killed: set[int] = field(default_factory=set)
    outages: list[tuple[float, float]] = field(default_factory=list)  # wall: killed, ready
    events: dict[str, list[tuple[float, str, int]]] = field(default_factory=dict)
    submitted_until: float = 0.0
    stop: threading.Event = field(default_factory=threading.Event)


class LedgerTail:
    """Follows the ledger file: which (job, attempt) each runner PID is running now."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.offset = 0
        self.running: dict[int, tuple[str, int]] = {}

    def update(self) -> None:
        """Read the complete lines appended since the last call."""
        if not os.path.exists(self.path):
            return
        with open(self.path) as ledger:
            ledger.seek(self.offset)
            chunk = ledger.read()
        complete = chunk[: chunk.rfind("\n") + 1]
        self.offset += len(complete.encode())
        for line in complete.splitlines():
            f = line.split()
            if len(f) >= 4 and f[3] == "start":
                self.running[int(f[2])] = (f[0], int(f[1]))
            elif len(f) >= 4:
                self.running.pop(int(f[2]), None)


def worker_tree(pool_pid: int) -> dict[int, list[int]]:
    """The pool's agent PIDs and each one's runner children."""
    return {agent: children(agent) for agent in children(pool_pid)}


def chaos(run: Run, pool_pid: int, ledger: LedgerTail, rng: random.Random, every_s: float) -> None:
    """SIGKILL a random agent or runner every ``every_s`` until ``run.stop`` is set."""
    while not run.stop.wait(every_s):
        tree = worker_tree(pool_pid)
        candidates = [(pid, True) for pid in tree] + [(pid, False) for kids in tree.values() for pid in kids]
        if not candidates:
            continue
        pid, is_agent = rng.choice(candidates)
        ledger.update()
        runners = tree.get(pid, []) if is_agent else [pid]
        job = next((ledger.running[r] for r in runners if r in ledger.running), None)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            continue
        kill = Kill(time.time(), [pid, *(runners if is_agent else [])], is_agent, job)
        run.killed.update(kill.pids)  # a killed agent's runner exits as an orphan
        run.kills.append(kill)


def listen(run: Run, events_url: str) -> None:
    """Record every published event (id -> [(ts, state, attempts)]) until ``run.stop``."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.RCVHWM, 0)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(events_url)
    try:
        while not run.stop.is_set():
            if not sub.poll(100):
                continue
            while True:
                try:
                    frames = sub.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                msg = p.decode(frames)
                if isinstance(msg, p.Event):
                    run.events.setdefault(msg.id, []).append((msg.ts, msg.state, msg.attempts))
    finally:
        sub.close()
        ctx.term()


def submit_all(run: Run, url: str, args: argparse.Namespace, ledger_path: str) -> tuple[int, int]:
    """Submit ``args.jobs`` jobs at ``args.rate`` per second; (acknowledged, unanswered)."""
    acked = unanswered = 0
    start = time.monotonic()
    client = Client(url, timeout_s=args.submit_timeout)
    try:
        for i in range(args.jobs):
            pause = start + i / args.rate - time.monotonic()
            if pause > 0:
                time.sleep(pause)  # pacing, not synchronisation
            job_args = {"path": ledger_path, "i": i, "seconds": args.task_seconds}
            try:
                job = client.submit("record", job_args, max_attempts=args.max_attempts)
            except TimeoutError:
                run.history.unanswered(str(i))
                unanswered += 1
                client.close()  # a fresh socket: no stale request left queued in it
                client = Client(url, timeout_s=args.submit_timeout)
                continue
            run.history.acknowledged(job.view, str(i))
            acked += 1
    finally:
        client.close()
    run.submitted_until = time.time()
    return acked, unanswered


def restart_broker(procs: Procs, broker: subprocess.Popen[str], argv: list[str], run: Run,
                   rng: random.Random) -> subprocess.Popen[str]:  # fmt: skip
    """SIGKILL the broker, wait a random moment under 1 s, start it again on the same dir."""
    killed_at = time.time()
    os.kill(broker.pid, signal.SIGKILL)
    broker.wait(10)
    time.sleep(rng.uniform(0.0, 1.0))  # the outage itself
    new = procs.start(argv, ready=" ready", timeout=30)
    run.outages.append((killed_at, time.time()))
    return new


def wait_quiet(url: str, ids: list[str], timeout_s: float) -> dict[str, dict[str, Any]]:
    """Each acknowledged job's final status once all are final and nothing is live."""
    views: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout_s
    with Client(url, timeout_s=10) as client:
        while True:
            for job_id in ids:
                if views.get(job_id, {}).get("state") not in FINAL:
                    views[job_id] = client.status(job_id)
            stats = client.stats()
            pending = sum(views[job_id]["state"] not in FINAL for job_id in ids)
            if not pending and stats["queued"] == 0 and stats["running"] == 0:
                return views
            if time.monotonic() > deadline:
                print(f"  NOT QUIET after {timeout_s:.0f} s: {pending} pending, {stats}", file=sys.stderr)
                return views
            time.sleep(0.5)  # polling interval


def detection_times(run: Run) -> tuple[dict[str, list[float]], int, int]:
    """Kill -> re-queue delays of the kills that hit a running attempt, by killed process kind
    ("agent", "runner"); and how many were left out near an outage, and unobserved."""
    delays: dict[str, list[float]] = {"agent": [], "runner": []}
    near_outage = unobserved = 0
    for kill in run.kills:
        if kill.job is None:
            continue
        if any(down - 0.1 <= kill.at <= up + 3.0 for down, up in run.outages):
            near_outage += 1
            continue
        job_id, attempt = kill.job
        after = [e for e in run.events.get(job_id, []) if e[0] >= kill.at - 0.005]
        hit = next((e for e in after if e[1] in FINAL or e[1] == "queued" or e[2] > attempt), None)
        if hit is None:
            unobserved += 1
        elif not (hit[1] == "done" and hit[2] == attempt):  # done before the kill landed: no death
            delays["agent" if kill.agent else "runner"].append(max(0.0, hit[0] - kill.at))
    return delays, near_outage, unobserved


def duplicated(ledger: list[Entry], killed: set[int]) -> list[str]:
    """Jobs with two or more ``end`` lines from PIDs never killed (see DUPLICATED_DEF)."""
    ends = Counter(e.job_id for e in ledger if e.phase == "end" and e.pid not in killed)
    return sorted(job_id for job_id, n in ends.items() if n > 1)


def report(run: Run, args: argparse.Namespace, acked: int, unanswered: int,
           finals: dict[str, dict[str, Any]], ledger: list[Entry], wall_s: float) -> int:  # fmt: skip
    """Print the figures; return 0 for a clean run, 1 otherwise."""
    states = Counter(view["state"] for view in finals.values())
    problems = run.history.check(finals, ledger, exactly_once=True, killed=run.killed)
    kinds = Counter(problem.split(":")[0] for problem in problems)
    lost = kinds["lost"]
    dups = duplicated(ledger, run.killed)
    acked_tags = {tag for tags in run.history.tags.values() for tag in tags}
    ran_unanswered = {e.tag for e in ledger if e.tag in run.history.indeterminate and e.tag not in acked_tags}
    by_kind, near_outage, unobserved = detection_times(run)
    delays = by_kind["agent"] + by_kind["runner"]
    hits = sum(kill.job is not None for kill in run.kills)
    agents = sum(kill.agent for kill in run.kills)
    rows = [
        ("submitted (acknowledged)", f"{acked:,}"),
        ("unanswered", f"{unanswered:,}  ({len(ran_unanswered)} of them ran anyway)"),
        ("done", f"{states['done']:,}"),
        ("failed", f"{states['failed']:,}"),
        ("cancelled", f"{states['cancelled']:,}"),
        ("lost", f"{lost:,}"),
        ("duplicated", f"{len(dups):,}"),
        ("worker kills", f"{len(run.kills):,} ({agents} agents, {len(run.kills) - agents} runners; "
                         f"{hits} hit a running job)"),  # fmt: skip
        ("broker kills", f"{len(run.outages)} (restarted after "
                         + ", ".join(f"{up - down:.2f}" for down, up in run.outages) + " s)"),
        ("worst death detection", f"{max(delays):.3f} s" if delays else "n/a"),
        *((f"  {kind} kills", _spread(values)) for kind, values in by_kind.items()),
        ("  not measured", f"{near_outage} near a broker restart, {unobserved} with no event seen"),
        ("checker violations", ", ".join(f"{k} {n}" for k, n in sorted(kinds.items())) or "none"),
        ("wall time", f"{wall_s:.1f} s"),
    ]
    print(f"jobcast soak: {args.jobs:,} jobs, {args.slots} slots, seed {args.seed}, a worker kill "
          f"every {args.kill_every * 1000:.0f} ms, {args.broker_kills} broker kills, "
          f"H = {args.heartbeat_s} s")  # fmt: skip
    for name, value in rows:
        print(f"  {name:<26} {value}")
    print("definitions:")
    print(f"  lost: {LOST_DEF}")
    print(f"  duplicated: {DUPLICATED_DEF}")
    print(f"  detection: {DETECT_DEF}")
    for problem in problems[:10]:
        print(f"  ! {problem}")
    for job_id in dups[:5]:
        print(f"  ! duplicated {job_id}: {[e for e in ledger if e.job_id == job_id]}")
    clean = not problems and not dups and states["done"] == acked
    print("result:", "clean" if clean else "VIOLATIONS")
    return 0 if clean else 1


def _spread(values: list[float]) -> str:
    if not values:
        return "none measured"
    return (f"worst {max(values):.3f} s, median {percentile(values, 50):.3f} s, "
            f"p99 {percentile(values, 99):.3f} s ({len(values)} measured)")


def soak(args: argparse.Namespace) -> int:
    """Run the soak once; return the exit code."""
    rng = random.Random(args.seed)
    tmp = tempfile.mkdtemp(prefix="jc-soak-")
    url, data, ledger = f"ipc://{tmp}/jc", os.path.join(tmp, "data"), os.path.join(tmp, "ledger")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO / "tests"), os.environ.get("PYTHONPATH", "")])
    os.environ["JOBCAST_HEARTBEAT_S"] = str(args.heartbeat_s)
    broker_argv = [sys.executable, "-m", "broker.cli", "broker", "--broker", url, "--data", data]
    pool_argv = [sys.executable, "-m", "broker.cli", "worker", "--broker", url, "-n", str(args.slots),
                 "--tasks", "tasks"]  # fmt: skip
    run = Run()
    started = time.monotonic()
    try:
        with Procs() as procs:
            broker = procs.start(broker_argv, ready=" ready", timeout=30)
            pool = procs.start(pool_argv, ready=" ready", timeout=60)
            tail = LedgerTail(ledger)
            chaos_args = (run, pool.pid, tail, random.Random(rng.random()), args.kill_every)
            threads = [threading.Thread(target=chaos, args=chaos_args, daemon=True),
                       threading.Thread(target=listen, args=(run, endpoints(url).events_out), daemon=True)]
            for thread in threads:
                thread.start()
            outcome: list[tuple[int, int]] = []
            submitter = threading.Thread(target=lambda: outcome.append(submit_all(run, url, args, ledger)))
            submitter.start()
            span = args.jobs / args.rate
            for at in sorted(rng.uniform(0.1 * span, 0.9 * span) for _ in range(args.broker_kills)):
                time.sleep(max(0.0, started + at - time.monotonic()))  # a random moment of the run
                broker = restart_broker(procs, broker, broker_argv, run, rng)
            submitter.join()
            run.stop.set()  # chaos ends with the submissions; then quiescence
            threads[0].join()
            acked, unanswered = outcome[0]
            finals = wait_quiet(url, list(run.history.acked), args.quiet_timeout)
            wall_s = time.monotonic() - started
            time.sleep(0.5)  # lets the listener take the last events
            threads[1].join()
            return report(run, args, acked, unanswered, finals, read_ledger(ledger), wall_s)
    finally:
        run.stop.set()
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    """Parse the options and run the soak."""
    parser = argparse.ArgumentParser(prog="scripts/soak", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--jobs", type=int, default=10_000, help="jobs to submit (default 10,000)")
    parser.add_argument("--quick", action="store_true", help="1,000 jobs")
    parser.add_argument("--slots", type=int, default=4, help="worker slots (default 4)")
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    parser.add_argument("--rate", type=float, default=100.0, help="submits per second (default 100)")
    parser.add_argument("--kill-every", type=float, default=0.2, help="seconds between worker kills")
    parser.add_argument("--broker-kills", type=int, default=3, help="broker SIGKILLs (default 3)")
    parser.add_argument("--task-seconds", type=float, default=0.02, help="work per job (default 0.02)")
    parser.add_argument("--max-attempts", type=int, default=5, help="per job (default 5)")
    parser.add_argument("--heartbeat-s", type=float, default=0.1, help="JOBCAST_HEARTBEAT_S (default 0.1)")
    parser.add_argument("--submit-timeout", type=float, default=3.0, help="seconds before 'unanswered'")
    parser.add_argument("--quiet-timeout", type=float, default=600.0, help="seconds to reach quiescence")
    args = parser.parse_args(argv)
    if args.quick:
        args.jobs = 1000
    return soak(args)


if __name__ == "__main__":
    sys.exit(main())
