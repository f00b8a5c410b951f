"""Test helpers: wait_for(), and ReadyProcess (a real child process with a ready line)."""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import IO, Any

import zmq

PYTHON = sys.executable


def wait_for(predicate: Callable[[], Any], timeout_s: float = 10.0, interval_s: float = 0.02) -> Any:
    """Poll ``predicate`` until it returns a truthy value; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met within {timeout_s} s: {predicate}")
        time.sleep(interval_s)


class ReadyProcess:
    """A child process that prints one line containing ``ready`` once it serves.

    Its stdout and stderr are collected in threads (so a chatty child never blocks) and
    kept for failure messages. ``stop()`` terminates, then kills, then waits.
    """

    def __init__(
        self,
        argv: list[str],
        env: dict[str, str] | None = None,
        ready_timeout_s: float = 20.0,
        cwd: str | None = None,
    ) -> None:
        self.argv = argv
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=full_env,
            cwd=cwd,
            text=True,
            start_new_session=True,
        )
        self.stdout_lines: list[str] = []
        self.stderr_lines: list[str] = []
        self._lines: queue.Queue[str] = queue.Queue()
        self._readers = [
            threading.Thread(target=self._pump, args=(stream, sink, is_out), daemon=True)
            for stream, sink, is_out in (
                (self.proc.stdout, self.stdout_lines, True),
                (self.proc.stderr, self.stderr_lines, False),
            )
        ]
        for reader in self._readers:
            reader.start()
        self.ready_line = self._wait_ready(ready_timeout_s)

    def _pump(self, stream: IO[str] | None, sink: list[str], signal_lines: bool) -> None:
        assert stream is not None
        for line in stream:
            sink.append(line.rstrip("\n"))
            if signal_lines:
                self._lines.put(line)

    def _wait_ready(self, timeout_s: float) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                line = self._lines.get(timeout=0.05)
            except queue.Empty:
                if self.proc.poll() is not None:
                    break
                continue
            if " ready" in line:
                return line.strip()
        self.stop()
        raise RuntimeError(f"{self.argv} never printed its ready line:\n{self.output()}")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        return "\n".join(["--- stdout", *self.stdout_lines, "--- stderr", *self.stderr_lines])

    def signal(self, signum: int) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signum)

    def wait(self, timeout_s: float) -> int:
        return self.proc.wait(timeout=timeout_s)

    def stop(self, timeout_s: float = 10.0) -> int | None:
        """Terminate, then kill the whole process group, then wait."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=timeout_s)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=timeout_s)
        for reader in self._readers:
            reader.join(timeout=2)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
        return self.proc.returncode


def jobcast(*args: str) -> list[str]:
    """argv for the jobcast CLI run by this interpreter (the installed package)."""
    return [PYTHON, "-m", "broker.cli", *args]


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1][0] != "Z"
    except (ProcessLookupError, FileNotFoundError, IndexError):
        return False


def children_of(pid: int) -> list[int]:
    """All descendant pids of ``pid`` (from /proc)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    parents[int(entry)] = int(stat.read().split(") ", 1)[1].split()[1])
            except (ProcessLookupError, FileNotFoundError, IndexError, ValueError):
                continue
    found, frontier = [], [pid]
    while frontier:
        current = frontier.pop()
        kids = [child for child, parent in parents.items() if parent == current]
        found.extend(kids)
        frontier.extend(kids)
    return found


@contextlib.contextmanager
def raw_dealer(endpoint: str) -> Iterator[zmq.Socket[bytes]]:
    """A bare DEALER on ``endpoint`` for sending hand-made frames; closed afterwards."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    try:
        yield sock
    finally:
        sock.close()
        ctx.term()


def waited_across_a_restart(
    base_url: str, broker: ReadyProcess, restart: Callable[[], Any], waiting: int, wait: Callable[[Any], Any]
) -> list[Any]:
    """Run ``wait(client)`` in a thread; once ``waiting`` clients wait at the broker, SIGKILL
    it (it forgets who was waiting) and ``restart()``; what ``wait`` returned, if it did."""
    from broker.client import Client

    results: list[Any] = []

    def run() -> None:
        with Client(base_url, timeout_s=5) as waiter:
            results.append(wait(waiter))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    with Client(base_url, timeout_s=10) as client:
        wait_for(lambda: client.stats()["waiting_clients"] == waiting, timeout_s=10)
    broker.signal(signal.SIGKILL)
    broker.wait(timeout_s=10)
    restart()
    thread.join(timeout=30)
    return results
