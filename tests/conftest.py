"""Fixtures: a short ipc base URL, a real broker, real worker pools, a client."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator

import pytest
from helpers import ReadyProcess, children_of, jobcast, pid_alive, wait_for

pytest_plugins = ["web_fixtures"]

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
HEARTBEAT_S = "0.1"  # small heartbeats so that death is detected in a fraction of a second


def _own_processes() -> set[int]:
    """Live descendants of this pytest process, except a shared browser driver."""
    found = set()
    for pid in children_of(os.getpid()):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                argv = cmdline.read()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if pid_alive(pid) and b"playwright" not in argv and b"chrom" not in argv:
            found.add(pid)
    return found


@pytest.fixture(autouse=True)
def no_orphans() -> Iterator[None]:
    """Every process a test starts is gone when it ends."""
    before = _own_processes()
    yield
    wait_for(lambda: not (_own_processes() - before), timeout_s=15)


@pytest.fixture
def tmpdir_short() -> Iterator[str]:
    """A short temp dir (ipc paths are limited to about 107 bytes); 0700."""
    path = tempfile.mkdtemp(prefix="jc-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def base_url(tmpdir_short: str) -> str:
    """The broker base URL for one test: ipc:// in a short private temp dir."""
    return f"ipc://{tmpdir_short}/jc"


@pytest.fixture
def part_env() -> dict[str, str]:
    """Environment for every process a test starts: test tasks importable, fast heartbeats."""
    path = os.pathsep.join(filter(None, [TESTS_DIR, os.environ.get("PYTHONPATH")]))
    return {"PYTHONPATH": path, "JOBCAST_HEARTBEAT_S": HEARTBEAT_S}


@pytest.fixture
def processes() -> Iterator[list[ReadyProcess]]:
    """Every process a test starts; all are stopped (term, kill, wait) at teardown."""
    started: list[ReadyProcess] = []
    yield started
    for proc in reversed(started):
        proc.stop()


@pytest.fixture
def start_broker(
    base_url: str, tmpdir_short: str, part_env: dict[str, str], processes: list[ReadyProcess]
) -> Callable[..., ReadyProcess]:
    """Start a real broker on ``base_url`` with its data dir in the test's temp dir."""

    def start(*extra: str) -> ReadyProcess:
        data = os.path.join(tmpdir_short, "data")
        proc = ReadyProcess(jobcast("broker", "--broker", base_url, "--data", data, *extra), env=part_env)
        processes.append(proc)
        return proc

    return start


@pytest.fixture
def start_workers(
    base_url: str, part_env: dict[str, str], processes: list[ReadyProcess]
) -> Callable[..., ReadyProcess]:
    """Start a real worker pool of ``n`` slots running the test tasks."""

    def start(n: int = 2, *extra: str) -> ReadyProcess:
        proc = ReadyProcess(
            jobcast("worker", "--broker", base_url, "-n", str(n), "--tasks", "tasks", *extra),
            env=part_env,
        )
        processes.append(proc)
        return proc

    return start


@pytest.fixture
def broker(start_broker: Callable[..., ReadyProcess]) -> ReadyProcess:
    """A running broker."""
    return start_broker()


@pytest.fixture
def client(broker: ReadyProcess, base_url: str) -> Iterator[object]:
    """A ``broker.client.Client`` connected to the test's broker."""
    from broker.client import Client

    with Client(base_url, timeout_s=10) as connected:
        yield connected
