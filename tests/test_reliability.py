"""Fault injection on real processes (RELIABILITY.md 3.2-3.4): SIGKILL, SIGSTOP, restarts.

Heartbeats are H = 0.1 s with liveness L = 3 (``part_env``). Runs are checked by the
Jepsen-style ``history.History`` checker and the side-effect ledger of ``tasks.record``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import zmq
from helpers import ReadyProcess, children_of, jobcast, pid_alive, wait_for
from history import FINAL, History, read_ledger

from broker.client import Client
from broker.errors import JobCancelled, JobFailed

H = 0.1  # part_env's JOBCAST_HEARTBEAT_S
L = 3  # broker.liveness.HEARTBEAT_LIVENESS


# --- helpers ------------------------------------------------------------------------------


def parent_of(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as stat:
        return int(stat.read().split(") ", 1)[1].split()[1])


def slot_tree(pool_pid: int) -> dict[int, list[int]]:
    """The pool's live agent processes and each one's live runner children."""
    pids = [pid for pid in children_of(pool_pid) if pid_alive(pid)]
    tree: dict[int, list[int]] = {}
    for pid in pids:
        try:
            parent = parent_of(pid)
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        if parent == pool_pid:
            tree.setdefault(pid, [])
    for pid in pids:
        try:
            parent = parent_of(pid)
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        if parent in tree:
            tree[parent].append(pid)
    return tree


def kill_a_slot(pool_pid: int, rng: random.Random, killed: set[int], whole_chance: float) -> bool:
    """SIGKILL a random slot's runner, or (with ``whole_chance``) its agent and runner too;
    the pids go into ``killed``. Whether anything was killed."""
    tree = slot_tree(pool_pid)
    agent = rng.choice(sorted(tree)) if tree else None
    if agent is None:
        return False
    victims = [agent, *tree[agent]] if rng.random() < whole_chance else tree[agent][:1]
    for pid in victims:
        killed.add(pid)
        os.kill(pid, signal.SIGKILL)
    return bool(victims)


def final_views(client: Client, ids: list[str], timeout_s: float) -> dict[str, dict[str, Any]]:
    """Each job's status once all of them are final (fails after ``timeout_s``)."""
    views: dict[str, dict[str, Any]] = {}

    def all_final() -> bool:
        for job_id in ids:
            if views.get(job_id, {}).get("state") not in FINAL:
                views[job_id] = client.status(job_id)
        return all(views[job_id]["state"] in FINAL for job_id in ids)

    wait_for(all_final, timeout_s=timeout_s, interval_s=0.1)
    return views


class Watchers:
    """Threads that follow jobs with ``client.events()`` and record each stream."""

    def __init__(self, base_url: str, history: History) -> None:
        self.base_url = base_url
        self.history = history
        self.threads: list[threading.Thread] = []
        self.errors: list[BaseException] = []
        self.streams: dict[str, list[dict[str, Any]]] = {}

    def follow(self, job_ids: list[str]) -> None:
        """Start one thread that watches ``job_ids`` one after the other."""
        thread = threading.Thread(target=self._run, args=(job_ids,), daemon=True)
        thread.start()
        self.threads.append(thread)

    def _run(self, job_ids: list[str]) -> None:
        try:
            with Client(self.base_url, timeout_s=30) as client:
                for job_id in job_ids:
                    events = self.streams.setdefault(job_id, [])
                    events.extend(client.events(job_id))
                    self.history.watched(job_id, events)
        except BaseException as exc:  # reported by join(), not lost in a thread
            self.errors.append(exc)

    def join(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        assert not any(t.is_alive() for t in self.threads), "a watcher never saw its job end"
        if self.errors:
            raise self.errors[0]


def moment(event: dict[str, Any]) -> float:
    """When an event happened: its stamp, or for a snapshot its state's start or end."""
    if "ts" in event:
        return float(event["ts"])
    return float(event["finished_at"] if event["state"] in FINAL else event["started_at"])


def collapse(states: list[str]) -> list[str]:
    """States with consecutive repeats removed."""
    return [s for i, s in enumerate(states) if i == 0 or states[i - 1] != s]


def assert_all_done_once(
    history: History, finals: dict[str, dict[str, Any]], ledger: str, **checks: Any
) -> None:
    """The history checker finds nothing wrong with the ledger, and every job ended done."""
    problems = history.check(finals, read_ledger(ledger), **checks)
    assert problems == [], problems[:10]
    assert {view["state"] for view in finals.values()} == {"done"}


def acked_after_restarts(base_url: str, history: History, ledger: str) -> dict[str, Any]:
    """Every acknowledged job ends done, once by the ledger; the broker's stats after that."""
    with Client(base_url, timeout_s=10) as client:
        finals = final_views(client, list(history.acked), timeout_s=60)
        stats: dict[str, Any] = client.stats()
    assert_all_done_once(history, finals, ledger)
    return stats


def submit_short_records(client: Client, ledger: str, history: History, count: int, seconds: float) -> None:
    """With 2 worker slots up: make ``record``'s mean run short (so slots prefetch it), queue
    ``count`` records of ``seconds`` one by one while the task is paused, then let them go;
    fails unless slots then hold several jobs each."""
    wait_for(lambda: client.stats()["workers"] == 2, timeout_s=10)
    client.map("record", [{"path": ledger + ".warm", "i": k} for k in range(4)])  # its own ledger
    client.pause("record")  # all queued first: the chaos then finds the slots full
    for i in range(count):
        job = client.submit("record", {"path": ledger, "i": i, "seconds": seconds})
        history.acknowledged(job.view, str(i))
    client.resume("record")
    assert client.stats()["prefetched"] > 0, "no slot held more than one job"


@pytest.fixture
def ledger(tmpdir_short: str) -> str:
    return os.path.join(tmpdir_short, "ledger")


@pytest.fixture
def history() -> History:
    return History()


@pytest.fixture
def watchers(base_url: str, history: History) -> Iterator[Watchers]:
    found = Watchers(base_url, history)
    yield found
    for thread in found.threads:
        thread.join(timeout=5)


# --- W1-W8: worker faults ------------------------------------------------------------------


@pytest.mark.timeout(90)
def test_w1_sigkill_chaos_every_job_done_exactly_once(
    client: Client, start_workers: Callable[..., ReadyProcess], base_url: str, ledger: str,
    history: History, watchers: Watchers,
) -> None:  # fmt: skip
    pool = start_workers(4)
    wait_for(lambda: client.stats()["workers"] == 4, timeout_s=10)
    for i in range(200):
        job = client.submit("record", {"path": ledger, "i": i, "seconds": 0.05})
        history.acknowledged(job.view, str(i))
    ids = list(history.acked)
    for k in range(4):
        watchers.follow(ids[120 + 20 * k : 125 + 20 * k])  # joined while queued
    rng = random.Random(1)
    killed: set[int] = set()
    kills = 0
    chaos_until = time.monotonic() + 2.5
    while time.monotonic() < chaos_until:
        kills += kill_a_slot(pool.pid, rng, killed, whole_chance=0.4)
        time.sleep(0.3)  # the chaos period, not a synchronisation
    last_kill = time.monotonic()
    wait_for(lambda: len(slot_tree(pool.pid)) == 4 and client.stats()["workers"] == 4, timeout_s=10)
    back_s = time.monotonic() - last_kill
    finals = final_views(client, ids, timeout_s=60)
    watchers.join(timeout_s=20)
    assert_all_done_once(history, finals, ledger, exactly_once=True, killed=killed)
    assert kills >= 6
    assert any(view["attempts"] > 1 for view in finals.values()), "the chaos hit no job"
    assert back_s < 2.0, f"the pool took {back_s:.2f} s to be back to 4 workers"
    assert pool.proc.poll() is None


@pytest.mark.timeout(90)
def test_w1b_sigkill_chaos_with_prefetched_short_jobs_runs_each_exactly_once(
    client: Client, start_workers: Callable[..., ReadyProcess], ledger: str, history: History
) -> None:
    """W1 with jobs of 5 ms, so every slot holds several at once (``broker.prefetch``)."""
    pool = start_workers(2, "--prefetch", "8")
    submit_short_records(client, ledger, history, 600, seconds=0.005)
    ids = list(history.acked)
    rng = random.Random(2)
    killed: set[int] = set()
    for _ in range(5):
        kill_a_slot(pool.pid, rng, killed, whole_chance=0.5)
        time.sleep(0.3)  # the chaos period, not a synchronisation
    finals = final_views(client, ids, timeout_s=60)
    assert_all_done_once(history, finals, ledger, exactly_once=True, killed=killed)
    assert any(view["attempts"] > 1 for view in finals.values()), "the chaos hit no job"


def test_w2_killed_slot_is_requeued_within_l_h_plus_h_and_watchers_see_it(
    client: Client, start_workers: Callable[..., ReadyProcess], ledger: str, history: History,
    watchers: Watchers,
) -> None:  # fmt: skip
    start_workers(1)
    start_workers(1)
    job = client.submit("record", {"path": ledger, "seconds": 2.0, "steps": 40})
    history.acknowledged(job.view, "w2")
    watchers.follow([job.id])
    wait_for(lambda: any(e.get("done", 0) >= 10 for e in watchers.streams.get(job.id, [])), timeout_s=10)
    child = read_ledger(ledger)[0].pid
    agent = parent_of(child)
    killed_at = time.time()
    os.kill(agent, signal.SIGKILL)
    os.kill(child, signal.SIGKILL)
    result = job.result(timeout=20)
    watchers.join(timeout_s=10)
    events = watchers.streams[job.id]
    states = collapse([e["state"] for e in events])
    assert states[states.index("running") :] == ["running", "queued", "running", "done"], states
    requeued = next(e for e in events if e["state"] == "queued" and e.get("ts", 0) >= killed_at - 0.01)
    latency_s = requeued["ts"] - killed_at
    assert latency_s <= L * H + H + 0.05, f"re-queued {latency_s:.3f} s after the kill"
    rerun = events[events.index(requeued) + 1]
    assert (requeued["attempts"], rerun["state"], rerun["attempts"]) == (1, "running", 2)
    assert result["attempt"] == 2 and result["pid"] != child
    finals = {job.id: client.status(job.id)}
    assert history.check(finals, read_ledger(ledger), gapless=True) == []


def test_w3_zombie_slot_result_is_fenced_off(
    client: Client, start_workers: Callable[..., ReadyProcess], ledger: str, history: History,
    watchers: Watchers,
) -> None:  # fmt: skip
    start_workers(2)
    wait_for(lambda: client.stats()["idle_workers"] == 2, timeout_s=10)
    job = client.submit("record", {"path": ledger, "seconds": 1.0, "steps": 20})
    history.acknowledged(job.view, "w3")
    watchers.follow([job.id])
    zombie_child = wait_for(lambda: read_ledger(ledger), timeout_s=10)[0].pid
    zombie_agent = parent_of(zombie_child)
    stale_before = client.stats()["stale_messages"]
    stopped_at = time.monotonic()
    for pid in (zombie_agent, zombie_child):
        os.kill(pid, signal.SIGSTOP)
    try:
        wait_for(lambda: client.status(job.id)["attempts"] == 2, timeout_s=5)
        time.sleep(max(0.0, stopped_at + 5 * H - time.monotonic()))  # the pause is the fault
    finally:
        for pid in (zombie_agent, zombie_child):
            os.kill(pid, signal.SIGCONT)
    result = job.result(timeout=20)
    wait_for(lambda: any(e.phase == "end" and e.attempt == 1 for e in read_ledger(ledger)), timeout_s=10)
    wait_for(lambda: client.stats()["stale_messages"] > stale_before, timeout_s=10)
    status = client.status(job.id)
    assert (status["state"], status["attempts"]) == ("done", 2)
    assert result == status["result"]
    assert result["attempt"] == 2 and result["pid"] != zombie_child
    ends = [e for e in read_ledger(ledger) if e.phase == "end"]
    assert [e.attempt for e in ends if e.pid != zombie_child] == [2]
    watchers.join(timeout_s=10)
    assert history.check({job.id: status}, read_ledger(ledger), exactly_once=True,
                         killed={zombie_child}) == []  # fmt: skip
    assert client.submit("echo", {"after": "zombie"}).result(timeout=10) == {"after": "zombie"}


def test_w4_poison_pill_fails_after_exactly_3_attempts_while_50_jobs_run(
    client: Client, start_workers: Callable[..., ReadyProcess], ledger: str, history: History,
) -> None:  # fmt: skip
    pool = start_workers(4)
    wait_for(lambda: client.stats()["workers"] == 4, timeout_s=10)
    agents = set(slot_tree(pool.pid))
    pill = client.submit("crash", {"how": "sigkill"}, max_attempts=3)
    for i in range(50):
        history.acknowledged(client.submit("record", {"path": ledger, "i": i, "seconds": 0.02}).view, str(i))
    with pytest.raises(JobFailed) as caught:
        pill.result(timeout=30)
    error = caught.value.error
    assert error["type"] == "WorkerLost"
    assert "killed by SIGKILL" in error["message"] and "attempt 3 of 3" in error["message"]
    assert client.status(pill.id)["attempts"] == 3
    finals = final_views(client, list(history.acked), timeout_s=30)
    assert_all_done_once(history, finals, ledger, exactly_once=True)
    assert set(slot_tree(pool.pid)) == agents, "only runner children died, no agent"
    assert client.stats()["workers"] == 4


def test_w5_gil_holding_task_keeps_its_slot_alive(
    client: Client, start_workers: Callable[..., ReadyProcess]
) -> None:
    start_workers(1)
    job = client.submit("gil_hog", {"n": 25})
    assert job.result(timeout=30) == 0
    status, stats = client.status(job.id), client.stats()
    held_s = status["finished_at"] - status["started_at"]
    assert held_s > 2 * L * H, f"the GIL was held {held_s:.2f} s only: calibrate n"
    assert status["attempts"] == 1
    assert (stats["workers_lost"], stats["retried"]) == (0, 0)


def test_w6_timeout_kills_each_attempt_within_timeout_plus_grace(
    client: Client, start_workers: Callable[..., ReadyProcess], ledger: str
) -> None:
    start_workers(1)
    args = {"path": ledger, "seconds": 30.0, "steps": 600}  # progress every 50 ms: pushed events
    job = client.submit("record", args, timeout=1, max_attempts=2)
    events = list(job.events())
    with pytest.raises(JobFailed) as caught:
        job.result(timeout=10)
    assert caught.value.error["type"] == "Timeout"
    assert "exceeded timeout of 1 s" in caught.value.error["message"]
    assert client.status(job.id)["attempts"] == 2
    for attempt, how in ((1, "queued"), (2, "failed")):
        start = next(e for e in events if e["state"] == "running" and e["attempts"] == attempt)
        end = next(e for e in events if e["state"] == how and e["attempts"] == attempt)
        assert 1.0 <= moment(end) - moment(start) <= 3.0, (start, end)
    assert [(e.attempt, e.phase) for e in read_ledger(ledger)] == [(1, "start"), (2, "start")]
    assert client.submit("echo", {"next": 1}).result(timeout=10) == {"next": 1}


@pytest.mark.parametrize("stubborn", [False, True], ids=["cooperative", "swallows-JobCancelled"])
def test_w7_cancel_running_job_never_ends_done(
    client: Client, start_workers: Callable[..., ReadyProcess], ledger: str, stubborn: bool
) -> None:
    pool = start_workers(1)
    if stubborn:
        job = client.submit("stubborn", {"path": ledger})
    else:
        job = client.submit("record", {"path": ledger, "seconds": 30.0, "steps": 600})
    child = wait_for(lambda: read_ledger(ledger), timeout_s=10)[0].pid
    wait_for(lambda: client.status(job.id)["done"] >= 1, timeout_s=5)
    cancelled_at = time.monotonic()
    assert client.cancel(job.id)["state"] == "cancelled"
    wait_for(lambda: client.stats()["idle_workers"] == 1, timeout_s=5)  # the slot reported back
    freed_s = time.monotonic() - cancelled_at
    with pytest.raises(JobCancelled):
        job.result(timeout=5)
    assert client.status(job.id)["state"] == "cancelled"
    phases = [e.phase for e in read_ledger(ledger)]
    if stubborn:
        assert phases == ["start", "swallowed"]
        assert 1.9 <= freed_s <= 3.5, f"killed {freed_s:.2f} s after the cancel (grace 2 s)"
        assert not pid_alive(child)
    else:
        assert phases == ["start"]
        assert freed_s < 1.0
        assert child in slot_tree(pool.pid)[parent_of(child)], "cooperative: the runner is kept"
    assert client.submit("echo", {"after": "cancel"}).result(timeout=10) == {"after": "cancel"}
    assert "end" not in [e.phase for e in read_ledger(ledger)]


def test_w8_workers_rejoin_a_restarted_broker_by_themselves(
    start_broker: Callable[..., ReadyProcess], start_workers: Callable[..., ReadyProcess], base_url: str
) -> None:
    from broker.liveness import RECONNECT_MAX_S

    first = start_broker()
    pool = start_workers(2)
    with Client(base_url, timeout_s=10) as client:
        wait_for(lambda: client.stats()["workers"] == 2, timeout_s=10)
    before = slot_tree(pool.pid)
    first.signal(signal.SIGKILL)
    first.wait(timeout_s=10)
    time.sleep(2.0)  # the outage is the fault
    start_broker()
    back = time.monotonic()
    with Client(base_url, timeout_s=10) as client:
        wait_for(lambda: client.stats()["workers"] == 2, timeout_s=RECONNECT_MAX_S + 2)
        rejoin_s = time.monotonic() - back
        assert client.map("echo", [{"i": i} for i in range(8)], timeout=20) == [{"i": i} for i in range(8)]
    assert rejoin_s <= RECONNECT_MAX_S + 1
    assert slot_tree(pool.pid) == before, "no agent or runner process was restarted"


# --- B1-B7: broker and storage faults ----------------------------------------------------------


def journaled_log(data: str, job_id: str) -> list[str]:
    """The log lines the broker's journal holds for a live job (read beside the broker)."""
    import sqlite3

    with contextlib.closing(sqlite3.connect(f"file:{data}/journal.sqlite3?mode=ro", uri=True)) as db:
        row = db.execute("SELECT record FROM jobs WHERE id = ?", (job_id,)).fetchone()
    return list(json.loads(row[0]).get("log", [])) if row else []


def test_b_the_lines_a_running_task_logged_survive_a_broker_restart(
    start_broker: Callable[..., ReadyProcess], start_workers: Callable[..., ReadyProcess], base_url: str,
    tmpdir_short: str,
) -> None:  # fmt: skip
    broker = start_broker()
    start_workers(1)
    before = ["hello", "line 1 <b>&amp;</b>"]
    with Client(base_url, timeout_s=10) as client:
        job = client.submit("chatty", {"lines": 3, "seconds": 4.5, "say": "hello"})
        data = os.path.join(tmpdir_short, "data")
        wait_for(lambda: journaled_log(data, job.id)[:2] == before, timeout_s=10)  # written, not just sent
        broker.signal(signal.SIGKILL)
        broker.wait(timeout_s=10)
        start_broker()
        assert job.result(timeout=30) == {"lines": 3}
        final = job.status()
    assert final["log"][:2] == before, final["log"]  # the lines from before the restart are kept
    assert final["log_count"] >= 2 and len(final["log"]) == final["log_count"]


@pytest.mark.parametrize("before_end_s", [0.1, 0.7], ids=["dealer-still-open", "after-reconnect"])
def test_b2_result_finished_while_the_broker_is_down_is_taken_once(
    start_broker: Callable[..., ReadyProcess], start_workers: Callable[..., ReadyProcess],
    base_url: str, ledger: str, before_end_s: float,
) -> None:  # fmt: skip
    """The broker dies ``before_end_s`` before the job ends: within the agent's L·H (the
    result goes to a DEALER whose peer is gone) or well before it (the result waits in the
    agent's outbox for the next connection)."""
    first = start_broker()
    start_workers(1)
    with Client(base_url, timeout_s=10) as client:
        wait_for(lambda: client.stats()["workers"] == 1, timeout_s=10)
        job = client.submit("record", {"path": ledger, "seconds": 1.0, "steps": 10})
    wait_for(lambda: read_ledger(ledger), timeout_s=10)
    time.sleep(1.0 - before_end_s)  # places the fault in the job's run, not a synchronisation
    first.signal(signal.SIGKILL)
    first.wait(timeout_s=10)
    wait_for(lambda: len(read_ledger(ledger)) == 2, timeout_s=10)  # it ended while down
    time.sleep(0.5)  # the outage goes on after the result: the agent has noticed
    start_broker()
    with Client(base_url, timeout_s=10) as client:
        status = final_views(client, [job.id], timeout_s=20)[job.id]
    lines = read_ledger(ledger)
    assert [(e.attempt, e.phase) for e in lines] == [(1, "start"), (1, "end")], "re-run"
    assert (status["state"], status["attempts"]) == ("done", 1)
    assert status["result"]["pid"] == lines[0].pid


@pytest.mark.timeout(90)
def test_b1_broker_sigkill_under_load_loses_and_duplicates_nothing(
    start_broker: Callable[..., ReadyProcess], start_workers: Callable[..., ReadyProcess],
    base_url: str, ledger: str, history: History,
) -> None:  # fmt: skip
    broker = start_broker()
    start_workers(4)
    with Client(base_url, timeout_s=10) as client:
        wait_for(lambda: client.stats()["workers"] == 4, timeout_s=10)
        for i in range(200):
            job = client.submit("record", {"path": ledger, "i": i, "seconds": 0.03})
            history.acknowledged(job.view, str(i))
    rng = random.Random(2)
    outage_errors: list[BaseException] = []

    def submit_during_outage(first_i: int) -> None:
        try:
            with Client(base_url, timeout_s=3) as late:  # Lazy Pirate bound: never a hang
                for i in range(first_i, first_i + 3):
                    try:
                        view = late.submit("record", {"path": ledger, "i": i, "seconds": 0.03}).view
                        history.acknowledged(view, str(i))
                    except TimeoutError:
                        history.unanswered(str(i))
        except BaseException as exc:
            outage_errors.append(exc)

    for crash in range(2):
        time.sleep(rng.uniform(0.3, 0.8))  # a random moment under load
        if crash == 0:
            assert sum(e.phase == "end" for e in read_ledger(ledger)) < 150, "crash under load"
        broker.signal(signal.SIGKILL)
        broker.wait(timeout_s=10)
        submitter = threading.Thread(target=submit_during_outage, args=(1000 + 10 * crash,))
        submitter.start()
        broker = start_broker()
        submitter.join(timeout=15)
        assert not submitter.is_alive() and not outage_errors, outage_errors
    stats = acked_after_restarts(base_url, history, ledger)
    assert stats["epoch"] == 3 and (stats["queued"], stats["running"]) == (0, 0)


@pytest.mark.timeout(90)
def test_b1b_broker_sigkill_while_slots_hold_prefetched_jobs_loses_nothing(
    start_broker: Callable[..., ReadyProcess], start_workers: Callable[..., ReadyProcess],
    base_url: str, ledger: str, history: History,
) -> None:  # fmt: skip
    """B1 with jobs of 5 ms: the broker dies while slots hold several jobs each."""
    broker = start_broker()
    start_workers(2, "--prefetch", "8")
    with Client(base_url, timeout_s=10) as client:
        submit_short_records(client, ledger, history, 600, seconds=0.005)
    for crash in range(2):
        if crash == 0:
            assert sum(e.phase == "end" for e in read_ledger(ledger)) < 600, "crash under load"
        broker.signal(signal.SIGKILL)
        broker.wait(timeout_s=10)
        broker = start_broker()
        with Client(base_url, timeout_s=10) as client:  # the workers rejoin before the next kill
            wait_for(lambda: client.stats()["workers"] == 2, timeout_s=10)
    stats = acked_after_restarts(base_url, history, ledger)
    assert stats["epoch"] == 3 and (stats["queued"], stats["running"], stats["prefetched"]) == (0, 0, 0)


@pytest.mark.timeout(60)
def test_b3_every_acknowledged_submit_survives_an_immediate_kill(
    start_broker: Callable[..., ReadyProcess], start_workers: Callable[..., ReadyProcess], base_url: str
) -> None:
    broker = start_broker()
    ids = []
    with Client(base_url, timeout_s=10) as client:
        for trial in range(20):
            ids.append(client.submit("echo", {"trial": trial}).id)
            broker.signal(signal.SIGKILL)
            broker.wait(timeout_s=10)
            broker = start_broker()
        start_workers(2)
        finals = final_views(client, ids, timeout_s=30)
    assert [finals[job_id].get("result") for job_id in ids] == [{"trial": t} for t in range(20)]


def _damage(path: str, how: str) -> None:
    size = os.path.getsize(path)
    with open(path, "r+b") as db:
        if how == "truncate":
            db.truncate(size // 2)
            return
        offset, length = (0, 16) if how == "flip-header" else (size - 4096 + 1024, 1024)
        db.seek(offset)
        data = bytes(b ^ 0xFF for b in db.read(length))
        db.seek(offset)
        db.write(data)


@pytest.mark.parametrize("how", ["truncate", "flip-header", "flip-records"])
def test_b5_corrupted_journal_is_refused_naming_the_file(
    start_broker: Callable[..., ReadyProcess], base_url: str, tmpdir_short: str,
    part_env: dict[str, str], how: str,
) -> None:  # fmt: skip
    import subprocess

    broker = start_broker()
    with Client(base_url, timeout_s=10) as client:
        for i in range(60):  # no workers: all stay queued, several pages of journal
            client.submit("echo", {"i": i, "pad": "x" * 300})
    broker.signal(signal.SIGTERM)
    assert broker.wait(timeout_s=10) == 0
    data = os.path.join(tmpdir_short, "data")
    journal = os.path.join(data, "journal.sqlite3")
    assert not os.path.exists(journal + "-wal") or os.path.getsize(journal + "-wal") == 0
    _damage(journal, how)
    proc = subprocess.run(jobcast("broker", "--broker", base_url, "--data", data),
                          env={**os.environ, **part_env}, capture_output=True, text=True,
                          timeout=20)  # fmt: skip
    assert proc.returncode != 0, proc.stdout
    assert " ready" not in proc.stdout
    assert journal in proc.stderr, proc.stderr


# --- P4: progress pipeline ------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_p4_watchers_joining_at_random_moments_see_no_gap_and_the_end(
    client: Client, start_workers: Callable[..., ReadyProcess], base_url: str, history: History,
) -> None:  # fmt: skip
    start_workers(4)
    wait_for(lambda: client.stats()["idle_workers"] == 4, timeout_s=10)
    rng = random.Random(4)
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    errors: list[BaseException] = []
    jobs = []
    for k in range(50):  # 200 ms jobs, 4 at a time: job k runs from about (k // 4) * 0.2 s
        job = client.submit("slow", {"seconds": 0.2 + k / 10_000, "steps": 8})
        history.acknowledged(job.view, str(k))
        jobs.append(job.id)
    started = time.monotonic()

    def trial(k: int, join_at: float) -> None:
        try:
            with Client(base_url, timeout_s=10, context=context) as watcher:
                if k % 2:  # odd jobs: join once running, at a random moment of the run
                    wait_for(lambda: watcher.status(jobs[k])["state"] != "queued", timeout_s=20,
                             interval_s=0.005)  # fmt: skip
                    time.sleep(rng_join[k])
                else:  # even jobs: at a random moment around the planned start
                    time.sleep(max(0.0, started + join_at - time.monotonic()))
                history.watched(jobs[k], list(watcher.events(jobs[k])))
        except BaseException as exc:
            errors.append(exc)

    rng_join = [rng.uniform(0.0, 0.1) for _ in range(50)]
    threads = [
        threading.Thread(target=trial, args=(k, (k // 4) * 0.2 + rng.uniform(-0.05, 0.25)), daemon=True)
        for k in range(50)
    ]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert not any(t.is_alive() for t in threads) and not errors, errors[:3]
    finally:
        context.term()
    finals = final_views(client, jobs, timeout_s=30)
    assert history.check(finals, [], gapless=True) == []
    joined_running = sum(events[0]["state"] == "running" for _, events in history.streams)
    assert len(history.streams) == 50 and joined_running >= 10, joined_running  # odd ones joined mid-run


def _stop_up_while_jobs_run_then_restart(
    base_url: str, data: str, env: dict[str, str], processes: list[ReadyProcess], ledger: str,
    history: History,
) -> tuple[dict[str, dict[str, Any]], set[tuple[str, int]]]:  # fmt: skip
    """B7: SIGTERM ``jobcast up`` while 2 of 6 one-second jobs run; check the stop; start
    ``up`` again on the same data dir. Returns the final views and the (id, attempt) pairs
    whose ledger ``end`` was written before the restart."""
    import socket
    from urllib.parse import urlsplit

    argv = jobcast("up", "--port", "0", "--workers", "2", "--broker", base_url, "--data", data,
                   "--tasks", "tasks")  # fmt: skip
    up = ReadyProcess(argv, env=env, ready_timeout_s=60)
    processes.append(up)
    port = urlsplit(up.ready_line.split(" ready ", 1)[1].split()[0]).port
    with Client(base_url, timeout_s=10) as client:
        for i in range(6):
            job = client.submit("record", {"path": ledger, "i": i, "seconds": 1.0, "steps": 10})
            history.acknowledged(job.view, str(i))
    wait_for(lambda: len(read_ledger(ledger)) >= 2, timeout_s=10)
    parts = children_of(up.pid)
    stopping = time.monotonic()
    up.signal(signal.SIGTERM)
    assert up.wait(timeout_s=15) == 0
    wait_for(lambda: not any(pid_alive(pid) for pid in parts), timeout_s=10)
    assert time.monotonic() - stopping <= 10.0, "every part exits within 10 s"
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", port or 0))  # the port is released
    ended = {(e.job_id, e.attempt) for e in read_ledger(ledger) if e.phase == "end"}
    processes.append(ReadyProcess(argv, env=env, ready_timeout_s=60))
    with Client(base_url, timeout_s=10) as client:
        finals = final_views(client, list(history.acked), timeout_s=30)
    return finals, ended


@pytest.mark.timeout(90)
def test_b7_graceful_stop_of_up_while_jobs_run_loses_nothing(
    base_url: str, tmpdir_short: str, part_env: dict[str, str], processes: list[ReadyProcess],
    ledger: str, history: History,
) -> None:  # fmt: skip
    data = os.path.join(tmpdir_short, "data")
    finals, _ = _stop_up_while_jobs_run_then_restart(base_url, data, part_env, processes, ledger, history)
    assert history.check(finals, read_ledger(ledger)) == []
    assert {view["state"] for view in finals.values()} == {"done"}


@pytest.mark.timeout(90)
def test_b7_a_job_finished_during_the_stop_of_up_is_not_run_again(
    base_url: str, tmpdir_short: str, part_env: dict[str, str], processes: list[ReadyProcess],
    ledger: str, history: History,
) -> None:  # fmt: skip
    data = os.path.join(tmpdir_short, "data")
    finals, ended = _stop_up_while_jobs_run_then_restart(base_url, data, part_env, processes, ledger,
                                                         history)  # fmt: skip
    assert ended, "the running jobs finished during the warm stop"
    rerun = [(e.job_id, e.attempt) for e in read_ledger(ledger)
             if e.phase == "start" and (e.job_id, e.attempt - 1) in ended]  # fmt: skip
    assert rerun == [], "a job that finished during the stop ran again after the restart"


# --- the checker itself ---------------------------------------------------------------------


def test_history_checker_flags_each_violation() -> None:
    from history import Entry

    history = History()
    done = {"state": "done", "attempts": 2, "max_attempts": 1, "result": {"id": "a", "attempt": 1, "pid": 7}}
    history.acknowledged({"id": "a"}, "1")
    history.acknowledged({"id": "a"}, "2")  # two distinct submits answered with one id
    history.acknowledged({"id": "b"}, "3")
    history.unanswered("9")
    history.watched("a", [{"seq": 2, "state": "running"}, {"seq": 2, "state": "done"}])
    history.watched("a", [{"seq": 1, "state": "queued"}, {"seq": 3, "state": "done"}])
    ledger = [Entry("a", 1, 7, "start"), Entry("a", 1, 7, "end"), Entry("a", 2, 8, "start"),
              Entry("z", 1, 9, "start", "5"), Entry("y", 1, 9, "start", "9")]  # fmt: skip
    problems = history.check({"a": done, "b": {"state": "running"}}, ledger, exactly_once=True,
                             gapless=True)  # fmt: skip
    kinds = sorted({problem.split(":")[0] for problem in problems})
    assert kinds == ["attempts", "duplicated", "gap", "lost", "once", "seq", "unexpected"], problems
    assert not any("'9'" in problem for problem in problems), "indeterminate submits may run"
    assert History().check({}, []) == []


# --- P1, P3b, B4: web stall, watchers across a broker restart, a queue past the cache size ---


async def _watch_ws(web: Any, job_id: str, received: list[tuple[float, dict[str, Any]]],
                    reconnects: int = 0) -> None:  # fmt: skip
    """Follow a job's WebSocket until a final state, as the browser does: on a lost connection
    reconnect with ``after=<last seq>`` (at most ``reconnects`` times). Each message is kept
    with its wall-clock arrival time."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed, InvalidStatus

    for attempt in range(reconnects + 1):
        after = received[-1][1]["seq"] if received else None
        try:  # the Origin header is the server's own URL
            async with connect(web.events_url(job_id, after), origin=web.url, open_timeout=5) as ws:
                async for raw in ws:
                    received.append((time.time(), json.loads(raw)))
        except (ConnectionClosed, InvalidStatus, OSError, TimeoutError):
            if attempt == reconnects:
                raise
        if received and received[-1][1]["state"] in FINAL:
            return
        await asyncio.sleep(0.3)  # the browser's reconnect back-off, not a synchronisation
    raise AssertionError(f"watcher of {job_id} never saw a final state")


def _run_watchers(coros: list[Any], timeout_s: float) -> None:
    async def all_of() -> None:
        await asyncio.gather(*coros)

    asyncio.run(asyncio.wait_for(all_of(), timeout_s))


BURST = 10_000  # progress events, as RELIABILITY.md P1


def _burst(base_url: str, jobs: dict[str, int]) -> None:
    """Publish ``BURST`` progress events for the running ``jobs`` (id -> attempt) into the
    broker's events input, as a runner's PUB does (the runners' own progress is throttled to
    10 per second per job, too slow for a burst). An XPUB, so that the broker's subscription
    proves the connection before anything is sent."""
    from broker.addresses import endpoints
    from broker.protocol import Progress, encode

    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    pub = context.socket(zmq.XPUB)
    try:
        pub.setsockopt(zmq.SNDHWM, 0)
        pub.setsockopt(zmq.LINGER, 5000)
        pub.connect(endpoints(base_url).events_in)
        assert pub.poll(5000), "the broker never subscribed to the test publisher"
        assert pub.recv()[:1] == b"\x01"
        ids = sorted(jobs)
        for i in range(BURST):
            job_id = ids[i % len(ids)]
            pub.send_multipart(encode(Progress(id=job_id, attempt=jobs[job_id], done=i, total=BURST)))
    finally:
        pub.close()
        context.term()


@pytest.fixture
def web_resync(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The web's quiet-stream snapshot interval (``JOBCAST_WS_RESYNC_S``) for this test."""
    import web_fixtures

    monkeypatch.setitem(web_fixtures.WEB_TEST_ENV, "JOBCAST_WS_RESYNC_S", request.param)
    return str(request.param)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("web_resync", ["1", "30"], ids=["resync-1s", "backlog-drain"], indirect=True)
def test_p1_stalled_web_delivers_every_final_state_within_1_s_of_sigcont(
    web_resync: str, web_stack: Any, start_workers: Callable[..., ReadyProcess], base_url: str,
    history: History,
) -> None:  # fmt: skip
    """4 watched jobs run; the web process is SIGSTOPped for 2 s while 10,000 progress events
    for them go out, and every job ends during the stop. With a 1 s resync the final comes
    from a fresh snapshot; with 30 s it must come through the relay's SUB backlog."""
    start_workers(2)  # 4 slots with the stack's 2
    web = web_stack.web
    with Client(base_url, timeout_s=10) as client:
        wait_for(lambda: client.stats()["idle_workers"] == 4, timeout_s=10)
        jobs = [client.submit("slow", {"seconds": 1.5 + k / 1000, "steps": 15}).id for k in range(4)]
        streams: dict[str, list[tuple[float, dict[str, Any]]]] = {job_id: [] for job_id in jobs}
        paused: dict[str, float] = {}

        async def fault() -> None:
            while not all(any(m["state"] == "running" for _, m in stream) for stream in streams.values()):
                await asyncio.sleep(0.01)
            attempts = {job_id: stream[-1][1]["attempts"] for job_id, stream in streams.items()}
            web.proc.signal(signal.SIGSTOP)
            paused["at"] = time.time()
            try:
                await asyncio.to_thread(_burst, base_url, attempts)
                await asyncio.sleep(paused["at"] + 2.0 - time.time())  # the stall is the fault
            finally:
                web.proc.signal(signal.SIGCONT)
                paused["until"] = time.time()

        _run_watchers([fault(), *(_watch_ws(web, job_id, streams[job_id]) for job_id in jobs)], timeout_s=30)
        finals = final_views(client, jobs, timeout_s=10)
    late = {}
    for job_id, stream in streams.items():
        history.watched(job_id, [message for _, message in stream])
        assert paused["at"] < finals[job_id]["finished_at"] < paused["until"], "the job ended during the stop"
        final_at = next(at for at, message in stream if message["state"] in FINAL)
        late[job_id] = final_at - paused["until"]
    assert history.check(finals, []) == []
    assert {view["state"] for view in finals.values()} == {"done"}
    # the burst went through the broker (seq counts each job's events) while the web watched
    assert all(finals[job_id]["seq"] > BURST // len(jobs) for job_id in jobs), finals
    assert max(late.values()) <= 1.0 + 0.2, f"final states {late} s after SIGCONT"


@pytest.mark.timeout(60)
def test_p3b_websocket_watchers_across_a_broker_sigkill_see_no_gap_in_states_and_a_new_epoch(
    start_broker: Callable[..., ReadyProcess], start_workers: Callable[..., ReadyProcess],
    start_web: Callable[..., Any], base_url: str, history: History,
) -> None:  # fmt: skip
    """Two jobs run (progress every 50 ms) with two WebSocket watchers each, reconnecting as
    the browser does; the broker is SIGKILLed mid-run and restarted on the same data dir."""
    broker = start_broker()
    web = start_web()
    start_workers(2)
    with Client(base_url, timeout_s=10) as client:
        wait_for(lambda: client.stats()["idle_workers"] == 2, timeout_s=10)
        jobs = [client.submit("slow", {"seconds": 3.0 + k / 1000, "steps": 60}).id for k in range(2)]
        epoch_before = client.stats()["epoch"]
    streams: list[tuple[str, list[tuple[float, dict[str, Any]]]]] = [(j, []) for j in jobs for _ in range(2)]
    restarted: dict[str, float] = {}

    async def fault() -> None:
        nonlocal broker
        while not all(any(m.get("done", 0) >= 10 for _, m in stream) for _, stream in streams):
            await asyncio.sleep(0.01)
        broker.signal(signal.SIGKILL)
        await asyncio.to_thread(broker.wait, 10)
        broker = await asyncio.to_thread(start_broker)
        restarted["at"] = time.time()

    _run_watchers([fault(), *(_watch_ws(web, job_id, stream, reconnects=10)
                              for job_id, stream in streams)], timeout_s=40)  # fmt: skip
    with Client(base_url, timeout_s=10) as client:
        finals = final_views(client, jobs, timeout_s=20)
        assert client.stats()["epoch"] == epoch_before + 1
    for job_id, stream in streams:
        messages = [message for _, message in stream]
        history.watched(job_id, messages)
        epochs = [message["epoch"] for message in messages]
        assert epochs == sorted(epochs), epochs
        assert epochs[0] == epoch_before and epochs[-1] == epoch_before + 1, epochs
    assert history.check(finals, []) == []
    assert {view["state"] for view in finals.values()} == {"done"}


@pytest.mark.timeout(90)
def test_b4_queued_jobs_past_the_result_cache_size_survive_a_kill_and_all_run(
    start_workers: Callable[..., ReadyProcess], base_url: str, tmpdir_short: str,
    part_env: dict[str, str], processes: list[ReadyProcess],
) -> None:  # fmt: skip
    """2,000 queued jobs of 10 KiB args (20 MiB) against a 1 MiB result cache, no workers;
    kill -9 and restart the broker: all still queued, then all done once workers start."""
    import sqlite3

    data = os.path.join(tmpdir_short, "data")
    small_cache = {**part_env, "JOBCAST_RESULT_CACHE_MB": "1"}

    def start() -> ReadyProcess:
        proc = ReadyProcess(jobcast("broker", "--broker", base_url, "--data", data), env=small_cache)
        processes.append(proc)
        return proc

    broker = start()
    pad = "x" * 10 * 1024
    with Client(base_url, timeout_s=10) as client:
        ids = [client.submit("echo", {"i": i, "pad": pad}).id for i in range(2000)]
    broker.signal(signal.SIGKILL)
    broker.wait(timeout_s=10)
    start()
    with sqlite3.connect(f"file:{data}/results/cache.db?mode=ro", uri=True) as db:
        size_limit = db.execute("SELECT value FROM Settings WHERE key = 'size_limit'").fetchone()[0]
    assert size_limit == 1 << 20 < 2000 * len(pad)
    sample = random.Random(5).sample(ids, 50)
    with Client(base_url, timeout_s=10) as client:
        assert client.stats()["queued"] == 2000
        assert {client.status(job_id)["state"] for job_id in sample} == {"queued"}
        start_workers(4)
        finals = final_views(client, ids, timeout_s=60)
    assert {view["state"] for view in finals.values()} == {"done"}
    assert all(finals[job_id]["result"] == {"i": ids.index(job_id), "pad": pad} for job_id in sample)
