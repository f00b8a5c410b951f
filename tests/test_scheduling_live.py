"""Scheduling on real processes: concurrency limits, periodic runs, pause/resume across a restart."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable

from helpers import ReadyProcess, jobcast, wait_for

from broker.client import Client


def ledger_lines(path: str) -> list[list[str]]:
    if not os.path.exists(path):
        return []
    with open(path) as ledger:
        return [line.split() for line in ledger if line.strip()]


def assert_never_overlapping(lines: list[list[str]]) -> None:
    """Every start is followed by its own end before the next start."""
    marks = [(line[0], line[3]) for line in lines]
    for (first_id, first), (second_id, second) in zip(marks[::2], marks[1::2], strict=True):
        assert (first, second) == ("start", "end") and first_id == second_id, marks


def run_cli(base_url: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(jobcast(*args, "--broker", base_url), capture_output=True, text=True,
                          timeout=30, env={**os.environ, **env}, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done


def test_concurrency_1_over_4_slots_never_overlaps_and_others_flow(
    client: Client, start_workers: Callable[..., ReadyProcess], tmpdir_short: str
) -> None:
    start_workers(4)
    wait_for(lambda: client.stats()["idle_workers"] == 4, timeout_s=15)
    ledger = os.path.join(tmpdir_short, "ledger")
    jobs = [client.submit("one_at_a_time", {"path": ledger, "i": i, "seconds": 0.4}) for i in range(4)]
    assert client.submit("echo", {"beside": "the limit"}).result(timeout=10) == {"beside": "the limit"}
    states = [client.status(job.id)["state"] for job in jobs]
    assert "queued" in states, states  # the echo ran while limited jobs still waited their turn
    assert [job.result(timeout=30) for job in jobs] == [0, 1, 2, 3]
    lines = ledger_lines(ledger)
    assert len(lines) == 8
    assert_never_overlapping(lines)
    assert client.stats()["concurrency"] == {"one_at_a_time": 1}


def test_periodic_task_runs_once_per_period_across_pools_never_overlapping(
    start_broker: Callable[..., ReadyProcess],
    start_workers: Callable[..., ReadyProcess],
    base_url: str,
    part_env: dict[str, str],
    tmpdir_short: str,
) -> None:
    ledger = os.path.join(tmpdir_short, "periodic")
    part_env["JOBCAST_TEST_LEDGER"] = ledger
    began = time.monotonic()
    start_broker()
    for _ in range(3):  # three pools advertise the schedule: still one run per period
        start_workers(1, "--tasks", "periodic_tasks")
    wait_for(lambda: sum(line[3] == "end" for line in ledger_lines(ledger)) >= 3, timeout_s=20)
    with Client(base_url, timeout_s=10) as client:
        submitted = client.stats()["submitted"]
    elapsed_s = time.monotonic() - began
    runs = {line[0] for line in ledger_lines(ledger)}
    assert 3 <= len(runs) <= submitted <= elapsed_s / 0.5 + 1
    ended = [line for line in ledger_lines(ledger)]
    assert_never_overlapping(ended[: len(ended) // 2 * 2])  # a 0.7 s run is never doubled


def test_pause_survives_a_broker_restart_and_resume_runs_the_jobs(
    start_broker: Callable[..., ReadyProcess],
    start_workers: Callable[..., ReadyProcess],
    base_url: str,
    part_env: dict[str, str],
) -> None:
    first = start_broker()
    start_workers(2)
    assert "echo paused" in run_cli(base_url, part_env, "pause", "echo").stdout
    with Client(base_url, timeout_s=10) as client:
        held = client.submit("echo", {"held": True})  # accepted while paused
        assert client.submit("noop", {}).result(timeout=10) == {}  # other tasks still run
        assert client.status(held.id)["state"] == "queued"
        assert client.status(held.id)["position"] == 1
    first.stop()
    start_broker()
    with Client(base_url, timeout_s=10) as client:
        wait_for(lambda: client.stats()["workers"] == 2, timeout_s=15)
        assert client.stats()["paused"] == ["echo"]
        assert client.submit("slow", {"seconds": 0.1, "steps": 1}).result(timeout=10) == {"steps": 1}
        assert client.status(held.id)["state"] == "queued"
    stats = run_cli(base_url, part_env, "stats").stdout
    assert "paused" in stats and "echo" in stats
    assert "paused tasks: none" in run_cli(base_url, part_env, "resume", "echo").stdout
    with Client(base_url, timeout_s=10) as client:
        assert client.result(held.id, timeout=10) == {"held": True}
        assert "position" not in client.status(held.id)
