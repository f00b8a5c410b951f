"""The agent's handle on its runner child: spawn, talk over pipes, kill, reap.

The handle also remembers which of its two pipes the agent's poller watches: the result
pipe for outcomes (except while ``OutcomePacing`` batches them), the control pipe for
room to write only while control messages wait.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from typing import Any, Final

import zmq

from broker.protocol import Assign
from broker.security import ClientKeys
from workers.pipes import READ_CHUNK_BYTES, MessageReader, PipeMessage, pack

logger = logging.getLogger(__name__)

REAP_TIMEOUT_S: Final = 2.0


class Child:
    """One long-lived ``workers.runner`` process and the two pipes to it."""

    def __init__(self, proc: subprocess.Popen[bytes], control_fd: int, result_fd: int) -> None:
        self.proc = proc
        self.control_fd = control_fd
        self.result_fd = result_fd
        self._reader = MessageReader()
        self._pending = bytearray()  # control messages not written yet (the pipe was full)
        self._closed = False
        self._watching_results = False
        self._watching_control = False

    @classmethod
    def spawn(cls, broker_url: str, task_modules: list[str], curve: ClientKeys | None = None) -> Child:
        """Start a runner child connected to us by a control pipe and a result pipe."""
        control_r, control_w = os.pipe()
        result_r, result_w = os.pipe()
        argv = [sys.executable, "-m", "workers.runner", "--broker", broker_url,
                "--control-fd", str(control_r), "--result-fd", str(result_w)]  # fmt: skip
        for module in task_modules:
            argv += ["--tasks", module]
        argv += curve.argv() if curve is not None else []
        try:
            proc = subprocess.Popen(argv, pass_fds=(control_r, result_w), stdin=subprocess.DEVNULL)
        finally:
            os.close(control_r)
            os.close(result_w)
        os.set_blocking(result_r, False)
        os.set_blocking(control_w, False)  # a slot that prefetches must not block on a busy child
        logger.info("runner child %d started", proc.pid)
        return cls(proc, control_w, result_r)

    @property
    def pid(self) -> int:
        """The child's process id."""
        return self.proc.pid

    def assign(self, msg: Assign) -> None:
        """Queue an attempt for the child (it runs them in order); ``flush`` writes it."""
        header = {"cmd": "assign", "id": msg.id, "attempt": msg.attempt, "task": msg.task}
        self._pending += pack(header, msg.args)

    def cancel(self, job_id: str, attempt: int) -> None:
        """Queue a cancel: the next ``progress()`` of that attempt raises, or it never starts."""
        self._pending += pack({"cmd": "cancel", "id": job_id, "attempt": attempt})

    def return_waiting(self) -> None:
        """Queue a return: the child drops what it has not started and lists it."""
        self._pending += pack({"cmd": "return"})

    @property
    def wants_write(self) -> bool:
        """Whether control messages wait for room in the pipe."""
        return bool(self._pending)

    def flush(self) -> None:
        """Write what the pipe takes now, without blocking; OSError if the child is gone."""
        while self._pending:
            try:
                written = os.write(self.control_fd, self._pending)
            except BlockingIOError:
                return
            del self._pending[:written]

    def read(self) -> tuple[list[PipeMessage], bool]:
        """Messages now readable without blocking, and whether the pipe reached EOF."""
        messages: list[PipeMessage] = []
        while True:
            try:
                data = os.read(self.result_fd, READ_CHUNK_BYTES)
            except BlockingIOError:
                return messages, False
            if not data:
                return messages, True
            messages += self._reader.feed(data)

    def watch_results(self, poller: zmq.Poller, watch: bool) -> None:
        """Have ``poller`` watch the result pipe for outcomes, or stop it (if that changes)."""
        if watch != self._watching_results:
            self._watching_results = _watch(poller, self.result_fd, zmq.POLLIN, watch)

    def watch_control(self, poller: zmq.Poller, watch: bool) -> None:
        """Have ``poller`` watch the control pipe for room to write, or stop it (if that changes)."""
        if watch != self._watching_control:
            self._watching_control = _watch(poller, self.control_fd, zmq.POLLOUT, watch)

    def unwatch(self, poller: zmq.Poller) -> None:
        """Have ``poller`` watch neither pipe (before the agent lets go of this child)."""
        self.watch_results(poller, False)
        self.watch_control(poller, False)

    def kill(self) -> None:
        """SIGKILL the child and reap it."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.reap()

    def reap(self) -> str:
        """Wait for the (exiting) child; describe how it ended."""
        try:
            self.proc.wait(timeout=REAP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            logger.warning("runner child %d closed its pipe but lives; killing it", self.pid)
            self.proc.kill()
            self.proc.wait()
        self.close()
        return describe_exit(self.proc.returncode)

    def has_exited(self) -> bool:
        """Whether the child process has ended (reaps it without blocking)."""
        return self.proc.poll() is not None

    def stop(self, timeout_s: float = REAP_TIMEOUT_S) -> None:
        """Idle shutdown: close the control pipe (the child exits at EOF), then kill."""
        self.close()
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()

    def close(self) -> None:
        """Close our ends of both pipes (idempotent)."""
        if not self._closed:
            self._closed = True
            os.close(self.control_fd)
            os.close(self.result_fd)


def _watch(poller: zmq.Poller, fd: int, events: int, watch: bool) -> bool:
    if watch:
        poller.register(fd, events)
    else:
        poller.unregister(fd)
    return watch


def describe_exit(returncode: Any) -> str:
    """How a process ended, in words: ``killed by SIGKILL`` or ``exited with code 3``."""
    if not isinstance(returncode, int):
        return "is still running"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"killed by {name}"
    return f"exited with code {returncode}"
