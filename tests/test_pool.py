"""A real worker pool (N agent processes and their runners) against a scripted broker."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator

import pytest
from fake_broker import FakeBroker
from helpers import PYTHON, ReadyProcess, children_of, pid_alive, wait_for

from broker.protocol import Done, Ready


@pytest.fixture
def fake_broker(base_url: str) -> Iterator[FakeBroker]:
    broker = FakeBroker(base_url)
    yield broker
    broker.close()


def start_pool(base_url: str, env: dict[str, str], processes: list[ReadyProcess], slots: int) -> ReadyProcess:
    argv = [PYTHON, "-m", "workers", "--broker", base_url, "-n", str(slots), "--tasks", "tasks"]
    proc = ReadyProcess(argv, env=env)
    processes.append(proc)
    return proc


def test_pool_is_ready_restarts_agents_and_stops_cleanly(
    fake_broker: FakeBroker,
    base_url: str,
    part_env: dict[str, str],
    processes: list[ReadyProcess],
) -> None:
    pool = start_pool(base_url, part_env, processes, slots=2)
    assert pool.ready_line.startswith(f"jobcast worker ready: 2 slots, broker {base_url}, tasks [")
    assert "echo" in pool.ready_line
    pids = {fake_broker.expect(Ready).pid, fake_broker.expect(Ready).pid}
    assert pids == set(wait_for(lambda: _agents(pool.pid) if len(_agents(pool.pid)) == 2 else []))

    victim = sorted(pids)[0]
    os.kill(victim, signal.SIGKILL)
    replacement = fake_broker.expect(Ready, timeout_s=5.0)
    assert replacement.pid not in pids
    done = fake_broker.run("echo", b'{"n":1}')
    assert isinstance(done, Done)

    everyone = children_of(pool.pid)
    pool.signal(signal.SIGTERM)
    assert pool.wait(timeout_s=10) == 0
    wait_for(lambda: not any(pid_alive(pid) for pid in everyone), timeout_s=5)


def test_pool_refuses_a_missing_task_module(base_url: str, part_env: dict[str, str]) -> None:
    argv = [PYTHON, "-m", "workers", "--broker", base_url, "-n", "1", "--tasks", "nope_mod"]
    proc = subprocess.run(argv, env={**os.environ, **part_env}, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert "cannot import task module 'nope_mod'" in proc.stderr


def _agents(pool_pid: int) -> list[int]:
    return [pid for pid in children_of(pool_pid) if _cmdline(pid).endswith("workers.agent_cli")]


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            parts = cmdline.read().split(b"\0")
    except FileNotFoundError:
        return ""
    return " ".join(p.decode() for p in parts[:3])


@pytest.mark.parametrize("prefetch", ["0", "257"])
def test_pool_refuses_a_prefetch_out_of_range(base_url: str, part_env: dict[str, str], prefetch: str) -> None:
    argv = [
        PYTHON,
        "-m",
        "workers",
        "--broker",
        base_url,
        "-n",
        "1",
        "--tasks",
        "tasks",
        "--prefetch",
        prefetch,
    ]
    proc = subprocess.run(argv, env={**os.environ, **part_env}, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert f"prefetch must be 1-256 (got {prefetch})" in proc.stderr
