"""End to end on real processes: a broker, worker pools, clients over ipc://."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest
from helpers import ReadyProcess, children_of, pid_alive, raw_dealer, wait_for, waited_across_a_restart

from broker import protocol as p
from broker.client import Client
from broker.errors import JobFailed, UnknownJob, UnknownTask


def ledger_lines(path: str) -> list[list[str]]:
    if not os.path.exists(path):
        return []
    with open(path) as ledger:
        return [line.split() for line in ledger if line.strip()]


def test_submit_progress_events_then_result(
    client: Client, start_workers: Callable[..., ReadyProcess]
) -> None:
    start_workers(1)
    job = client.submit("progress_n", {"n": 50_000})
    events = list(job.events())
    seqs = [event["seq"] for event in events]
    assert seqs == sorted(set(seqs)), "seq strictly increasing, no duplicates"
    assert events[-1]["state"] == "done"
    assert all(event["state"] != "done" for event in events[:-1])
    assert events[-1]["done"] == events[-1]["total"] == 50_000
    assert job.result(timeout=10) == 50_000
    assert client.status(job.id)["attempts"] == 1


def test_map_200_jobs_over_4_slots_in_order(
    client: Client, start_workers: Callable[..., ReadyProcess]
) -> None:
    start_workers(4)
    results = client.map("echo", [{"i": i} for i in range(200)], timeout=60)
    assert results == [{"i": i} for i in range(200)]


def test_killed_child_mid_job_is_requeued_and_done_on_attempt_2(
    client: Client, start_workers: Callable[..., ReadyProcess], tmpdir_short: str
) -> None:
    start_workers(2)
    ledger = os.path.join(tmpdir_short, "ledger")
    job = client.submit("ledger", {"path": ledger, "seconds": 1.0})
    first = wait_for(lambda: ledger_lines(ledger), timeout_s=10)[0]
    assert first[0] == job.id and first[3] == "start"
    os.kill(int(first[2]), signal.SIGKILL)
    assert job.result(timeout=20) is not None
    status = client.status(job.id)
    assert status["state"] == "done" and status["attempts"] == 2
    ends = [line for line in ledger_lines(ledger) if line[3] == "end"]
    assert len(ends) == 1 and ends[0][1] == "2"


def test_killed_slot_is_detected_by_heartbeats(
    client: Client, start_workers: Callable[..., ReadyProcess], tmpdir_short: str
) -> None:
    pool = start_workers(1)
    start_workers(1)
    ledger = os.path.join(tmpdir_short, "ledger")
    job = client.submit("ledger", {"path": ledger, "seconds": 1.0})
    child_pid = int(wait_for(lambda: ledger_lines(ledger), timeout_s=10)[0][2])
    with open(f"/proc/{child_pid}/stat") as stat:
        agent_pid = int(stat.read().split(") ", 1)[1].split()[1])
    os.kill(agent_pid, signal.SIGKILL)
    os.kill(child_pid, signal.SIGKILL)
    job.result(timeout=20)
    assert client.status(job.id)["attempts"] == 2
    assert pool.proc.poll() is None, "the pool survives the loss of one slot"


def test_failure_is_reported_with_its_error(
    client: Client, start_workers: Callable[..., ReadyProcess]
) -> None:
    start_workers(1)
    job = client.submit("fail", {})
    with pytest.raises(JobFailed) as caught:
        job.result(timeout=10)
    assert caught.value.error["type"] == "ValueError"
    assert "boom" in caught.value.error["message"]
    assert "Traceback" in caught.value.error["traceback"]


def test_unknown_task_is_refused_and_next_job_runs(
    client: Client, start_workers: Callable[..., ReadyProcess]
) -> None:
    start_workers(1)
    wait_for(lambda: client.stats()["workers"] >= 1, timeout_s=10)
    with pytest.raises(UnknownTask, match="no worker offers task 'nope'"):
        client.submit("nope", {})
    assert client.submit("echo", {"ok": 1}).result(timeout=10) == {"ok": 1}


def test_unknown_and_malformed_job_ids_are_unknown(client: Client) -> None:
    for job_id in ("A" * 22, "not-an-id", "", "x" * 500):
        with pytest.raises(UnknownJob):
            client.status(job_id)


def test_malformed_frames_get_an_error_and_change_nothing(
    client: Client, start_workers: Callable[..., ReadyProcess]
) -> None:
    start_workers(1)
    junk = [
        [b"junk"],
        [p.TAG, b"NOPE", b"{}"],
        [p.TAG, b"SUBMIT", b"not json"],
        [p.TAG, b"SUBMIT", b'{"req": "x"}', b"{}"],
        [b"x"] * 9,
    ]
    with raw_dealer(client.endpoints.clients) as raw:
        for frames in junk:
            raw.send_multipart(frames)
            assert raw.poll(5000), f"no reply to {frames!r}"
            reply = p.decode(raw.recv_multipart())
            assert isinstance(reply, p.Error) and reply.code == "protocol"
    assert client.stats()["invalid_messages"] == 5
    assert client.submit("echo", {"after": "junk"}).result(timeout=10) == {"after": "junk"}


def assigned_id(worker: Any, timeout_s: float = 5.0) -> str:
    """The id of the first Assign a raw worker socket receives (heartbeats skipped)."""
    deadline = time.monotonic() + timeout_s
    while (left_s := deadline - time.monotonic()) > 0 and worker.poll(max(1, int(left_s * 1000))):
        msg = p.decode(worker.recv_multipart())
        if isinstance(msg, p.Assign):
            return msg.id
    raise AssertionError("no job was sent to the worker")


def test_a_worker_that_vanishes_holding_a_job_is_dropped_and_the_job_runs_elsewhere(
    client: Client, start_workers: Callable[..., ReadyProcess]
) -> None:
    with raw_dealer(client.endpoints.workers) as ghost:
        ghost.send_multipart(p.encode(p.Ready(tasks=["echo"])))
        wait_for(lambda: client.stats()["workers"] == 1, timeout_s=5)
        job = client.submit("echo", {"to": "the ghost"})  # the only worker: it is sent there
        assert assigned_id(ghost) == job.id
    # its socket is gone: the broker's next send to it fails (ROUTER_MANDATORY), and the
    # job goes back to the queue once the turn's writes are done
    wait_for(lambda: client.stats()["workers"] == 0, timeout_s=5)
    start_workers(1)
    assert job.result(timeout=20) == {"to": "the ghost"}
    assert job.status()["attempts"] == 2  # the ghost's attempt counts: it might have run
    assert client.stats()["workers_lost"] == 1


def test_client_that_vanishes_while_waiting_leaves_broker_healthy(
    client: Client,
    start_workers: Callable[..., ReadyProcess],
    base_url: str,
    part_env: dict[str, str],
) -> None:
    start_workers(1)
    code = (
        "import sys; from broker.client import Client\n"
        "c = Client(sys.argv[1]); j = c.submit('slow', {'seconds': 1.0})\n"
        "print(j.id, flush=True); j.result(timeout=30)\n"
    )
    with subprocess.Popen(
        [sys.executable, "-c", code, base_url],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, **part_env},
    ) as waiter:
        assert waiter.stdout is not None
        job_id = waiter.stdout.readline().strip()
        waiter.kill()
    assert client.result(job_id, timeout=20) is not None
    assert client.submit("echo", {"still": "fine"}).result(timeout=10) == {"still": "fine"}


def test_cancel_queued_job(client: Client) -> None:
    job = client.submit("echo", {"never": "run"})  # no workers: it stays queued
    assert client.cancel(job.id)["state"] == "cancelled"
    assert client.status(job.id)["state"] == "cancelled"


def test_pool_stops_cleanly_without_orphans(
    start_workers: Callable[..., ReadyProcess], client: Client
) -> None:
    pool = start_workers(2)
    wait_for(lambda: client.stats()["workers"] == 2, timeout_s=10)
    descendants = children_of(pool.pid)
    assert len(descendants) >= 4, "two agents, each with a long-lived child"
    pool.signal(signal.SIGTERM)
    assert pool.wait(timeout_s=15) == 0
    wait_for(lambda: not any(pid_alive(pid) for pid in descendants), timeout_s=10)


def test_broker_killed_and_restarted_keeps_acknowledged_jobs(
    start_broker: Callable[..., ReadyProcess],
    start_workers: Callable[..., ReadyProcess],
    base_url: str,
) -> None:
    first = start_broker()
    with Client(base_url, timeout_s=10) as client:
        ids = [client.submit("echo", {"i": i}).id for i in range(20)]
    first.signal(signal.SIGKILL)
    first.wait(timeout_s=10)
    second = start_broker()
    assert '"epoch": 2' in second.ready_line
    start_workers(2)
    with Client(base_url, timeout_s=10) as client:
        assert [client.result(job_id, timeout=20) for job_id in ids] == [{"i": i} for i in range(20)]


def test_a_second_pool_started_later_takes_work_at_once(
    client: Client, start_workers: Callable[..., ReadyProcess], tmpdir_short: str
) -> None:
    start_workers(1)
    ledger = os.path.join(tmpdir_short, "ledger")
    jobs = [client.submit("ledger", {"path": ledger, "seconds": 1.5 + n / 100}) for n in range(2)]
    wait_for(lambda: len(ledger_lines(ledger)) == 1, timeout_s=10)
    start_workers(1)
    wait_for(lambda: len(ledger_lines(ledger)) >= 3, timeout_s=10)
    first_two = [line[3] for line in ledger_lines(ledger)[:3]]
    assert first_two[:2] == ["start", "start"], "the new pool started the queued job while the first ran"
    for job in jobs:
        job.result(timeout=10)


def test_async_client_submit_events_result(
    broker: ReadyProcess, base_url: str, start_workers: Callable[..., ReadyProcess]
) -> None:
    import asyncio

    from broker.client import AsyncClient

    start_workers(1)

    async def scenario() -> None:
        client = AsyncClient(base_url, timeout_s=10)
        try:
            job = await client.submit("slow", {"seconds": 0.3, "steps": 3})
            events = [event async for event in job.events()]
            assert events[-1]["state"] == "done"
            assert [e["seq"] for e in events] == sorted({e["seq"] for e in events})
            assert await job.result(timeout=10) == {"steps": 3}
            assert (await client.status(job.id))["state"] == "done"
            again = await client.submit("slow", {"seconds": 0.3, "steps": 3})
            assert again.view["cached"] and again.view["result"] == {"steps": 3}
        finally:
            await client.aclose()

    asyncio.run(asyncio.wait_for(scenario(), 30))


def test_warm_stop_of_a_pool_finishes_its_running_job_once(
    client: Client, start_workers: Callable[..., ReadyProcess], tmpdir_short: str
) -> None:
    pool = start_workers(1)
    ledger = os.path.join(tmpdir_short, "ledger")
    job = client.submit("ledger", {"path": ledger, "seconds": 1.0})
    wait_for(lambda: ledger_lines(ledger), timeout_s=10)
    pool.signal(signal.SIGTERM)
    assert job.result(timeout=15) is not None
    assert pool.wait(timeout_s=15) == 0
    assert client.status(job.id)["attempts"] == 1
    assert [line[3] for line in ledger_lines(ledger)] == ["start", "end"]


def test_a_waiting_client_survives_a_broker_restart(
    start_broker: Callable[..., ReadyProcess],
    start_workers: Callable[..., ReadyProcess],
    base_url: str,
) -> None:
    first = start_broker()
    with Client(base_url, timeout_s=10) as client:
        job_id = client.submit("echo", {"waited": "across a restart"}).id

    def restart() -> None:
        start_broker()
        start_workers(1)

    results = waited_across_a_restart(
        base_url, first, restart, 1, lambda waiter: waiter.result(job_id, timeout=40)
    )
    assert results == [{"waited": "across a restart"}], "the WAIT was repeated to the new broker"
