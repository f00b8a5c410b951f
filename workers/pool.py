"""The worker pool: N agent processes (one per slot), kept alive, stopped cleanly.

``run_pool`` starts ``python -m workers.agent_cli`` N times, each in its own process group
(so a terminal's Ctrl-C reaches only the pool, which forwards it once), restarts any
agent that dies after a capped back-off, and prints one ready line when every agent has
heard from the broker. On SIGTERM/SIGINT it forwards SIGTERM (warm), waits up to the
grace plus a margin (a second signal is forwarded too: cold), then kills every group.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Final, TextIO

from broker.addresses import broker_url, endpoints
from broker.liveness import Backoff
from broker.security import ClientKeys, client_keys
from broker.workforce import MAX_PREFETCH
from workers import registry
from workers.agent import DEFAULT_PREFETCH, WARM_GRACE_S
from workers.agent_cli import check_prefetch
from workers.signals import SignalFlags

logger = logging.getLogger(__name__)

STOP_MARGIN_S: Final = 3.0
MAX_WAIT_S: Final = 0.5


@dataclass(slots=True)
class AgentProcess:
    """One slot's agent process and the pipe on which it says ``connected``."""

    index: int
    proc: subprocess.Popen[bytes] | None = None
    notify_fd: int | None = None
    connected: bool = False
    restart_at: float | None = None
    backoff: Backoff = field(default_factory=Backoff)

    def alive(self) -> bool:
        """Whether the agent process is running."""
        return self.proc is not None and self.proc.poll() is None


class Pool:
    """Starts, watches and stops the agent processes of one worker."""

    def __init__(self, broker: str, slots: int, task_modules: list[str], *,
                 grace_s: float = WARM_GRACE_S, ready_stream: TextIO | None = None,
                 curve: ClientKeys | None = None, prefetch: int = DEFAULT_PREFETCH) -> None:  # fmt: skip
        self.broker = broker
        self.prefetch = prefetch
        self.curve = curve
        self.task_modules = task_modules
        self.grace_s = grace_s
        self.ready_stream = ready_stream
        self.agents = [AgentProcess(index) for index in range(slots)]
        self.announced = False
        self.signals = SignalFlags()

    def run(self) -> int:
        """Serve until SIGTERM/SIGINT, then stop every agent; return the exit code."""
        self.signals.install()
        try:
            for agent in self.agents:
                self._start(agent)
            while not self.signals.count:
                self._step(time.monotonic())
            self._shutdown()
            return 0
        finally:
            self._kill_all()
            self.signals.close()

    def _step(self, now: float) -> None:
        poller = select.poll()
        poller.register(self.signals.fd, select.POLLIN)
        by_fd = {a.notify_fd: a for a in self.agents if a.notify_fd is not None}
        for fd in by_fd:
            poller.register(fd, select.POLLIN)
        for fd, _ in poller.poll(self._timeout_s(now) * 1000):
            if fd in by_fd:
                self._read_notify(by_fd[fd])
        self.signals.drain()
        now = time.monotonic()
        for agent in self.agents:
            self._check(agent, now)
        self._announce()

    def _timeout_s(self, now: float) -> float:
        restarts = [a.restart_at - now for a in self.agents if a.restart_at is not None]
        return max(0.0, min([MAX_WAIT_S, *restarts]))

    def _start(self, agent: AgentProcess) -> None:
        read_fd, write_fd = os.pipe()
        argv = [sys.executable, "-m", "workers.agent_cli", "--broker", self.broker,
                "--grace-s", str(self.grace_s), "--notify-fd", str(write_fd),
                "--prefetch", str(self.prefetch)]  # fmt: skip
        for module in self.task_modules:
            argv += ["--tasks", module]
        argv += self.curve.argv() if self.curve is not None else []
        try:
            agent.proc = subprocess.Popen(argv, pass_fds=(write_fd,), start_new_session=True,
                                          stdin=subprocess.DEVNULL)  # fmt: skip
        finally:
            os.close(write_fd)
        agent.notify_fd, agent.restart_at = read_fd, None
        logger.info("slot %d: agent %d started", agent.index, agent.proc.pid)

    def _read_notify(self, agent: AgentProcess) -> None:
        if agent.notify_fd is None:
            return
        data = os.read(agent.notify_fd, 4096)
        if b"connected" in data:
            agent.connected = True
            agent.backoff.reset()
        if not data:
            os.close(agent.notify_fd)
            agent.notify_fd = None

    def _check(self, agent: AgentProcess, now: float) -> None:
        if agent.proc is not None and agent.proc.poll() is not None:
            self._reap(agent, now)
        if agent.proc is None and agent.restart_at is not None and now >= agent.restart_at:
            self._start(agent)

    def _reap(self, agent: AgentProcess, now: float) -> None:
        proc, agent.proc = agent.proc, None
        if proc is None:
            return
        _kill_group(proc.pid)  # its runner child, if it outlived it
        if agent.notify_fd is not None:
            os.close(agent.notify_fd)
            agent.notify_fd = None
        delay_s = agent.backoff.next_delay_s()
        agent.restart_at = now + delay_s
        logger.warning("slot %d: agent %d exited with code %s; restarting in %.2f s",
                       agent.index, proc.pid, proc.returncode, delay_s)  # fmt: skip

    def _announce(self) -> None:
        if self.announced or not all(agent.connected for agent in self.agents):
            return
        self.announced = True
        stream = self.ready_stream or sys.stdout
        tasks = ", ".join(registry.names())
        stream.write(f"jobcast worker ready: {len(self.agents)} slots, broker {self.broker}, "
                     f"tasks [{tasks}]\n")  # fmt: skip
        stream.flush()

    # --- signals and shutdown ------------------------------------------------------------

    def _shutdown(self) -> None:
        logger.info("stopping %d agents (grace %g s)", len(self.agents), self.grace_s)
        self._forward(signal.SIGTERM)
        forwarded = self.signals.count
        deadline = time.monotonic() + self.grace_s + STOP_MARGIN_S
        while any(a.alive() for a in self.agents) and time.monotonic() < deadline:
            select.select([self.signals.fd], [], [], 0.05)
            self.signals.drain()
            if self.signals.count > forwarded:  # a second Ctrl-C: cold shutdown
                forwarded = self.signals.count
                self._forward(signal.SIGTERM)

    def _forward(self, signum: int) -> None:
        for agent in self.agents:
            if agent.alive() and agent.proc is not None:
                agent.proc.send_signal(signum)

    def _kill_all(self) -> None:
        for agent in self.agents:
            if agent.proc is not None:
                _kill_group(agent.proc.pid)
                agent.proc.wait()
            if agent.notify_fd is not None:
                os.close(agent.notify_fd)
                agent.notify_fd = None


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def run_pool(broker: str, slots: int, task_modules: list[str], *,
             grace_s: float = WARM_GRACE_S, ready_stream: TextIO | None = None,
             curve: ClientKeys | None = None, prefetch: int = DEFAULT_PREFETCH) -> int:  # fmt: skip
    """Run ``slots`` agents for ``broker`` until SIGTERM/SIGINT; return the exit code.

    Raises:
        TaskModuleError: a task module does not import (checked before any agent starts).
        ValueError: a bad broker URL, slot count, prefetch or CURVE key file.
    """
    endpoints(broker)
    check_prefetch(prefetch)
    if slots < 1:
        raise ValueError(f"slots must be >= 1 (got {slots})")
    registry.load_modules(task_modules)
    pool = Pool(broker, slots, task_modules, grace_s=grace_s, ready_stream=ready_stream, curve=curve,
                prefetch=prefetch)  # fmt: skip
    return pool.run()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jobcast worker", description="run a worker pool")
    parser.add_argument(
        "--broker", default=None, help="broker base URL (default $JOBCAST_BROKER or tcp://127.0.0.1:5555)"
    )
    parser.add_argument(
        "-n",
        "--slots",
        type=int,
        default=os.cpu_count() or 1,
        help="worker slots, one process each (default: number of cores)",
    )
    parser.add_argument(
        "--tasks",
        action="append",
        default=[],
        metavar="MODULE",
        help="module registering tasks (repeatable; default workers.demo)",
    )
    parser.add_argument(
        "--grace-s",
        type=float,
        default=WARM_GRACE_S,
        help="how long a warm shutdown lets running jobs finish",
    )
    parser.add_argument(
        "--prefetch",
        type=int,
        default=DEFAULT_PREFETCH,
        help=f"jobs a slot may hold at once, 1-{MAX_PREFETCH}; the broker sends more than one "
        f"only for tasks whose runs are short (default {DEFAULT_PREFETCH})",
    )
    parser.add_argument(
        "--curve-secret",
        default=None,
        metavar="FILE",
        help="own CURVE key pair (.key_secret) for an off-loopback broker ($JOBCAST_CURVE_SECRET)",
    )
    parser.add_argument(
        "--curve-server",
        default=None,
        metavar="FILE",
        help="the broker's public .key file ($JOBCAST_CURVE_SERVER)",
    )
    return parser  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """``jobcast worker``: parse options, check the task modules, run the pool."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    logging.basicConfig(level=os.environ.get("JOBCAST_LOG", "INFO"),
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")  # fmt: skip
    modules = args.tasks or list(registry.DEFAULT_TASK_MODULES)
    try:
        curve = client_keys(args.curve_secret, args.curve_server)
        return run_pool(broker_url(args.broker), args.slots, modules, grace_s=args.grace_s, curve=curve,
                        prefetch=args.prefetch)  # fmt: skip
    except (ValueError, ImportError) as exc:
        sys.stderr.write(f"jobcast worker: {exc}\n")
        return 2
