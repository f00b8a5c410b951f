"""One worker slot: the DEALER loop of Paranoid Pirate around a long-lived runner child.

A slot holds up to ``prefetch`` attempts at once (``workers.slot.Held``: they run in
order, the first one held is the one running). A Stop for one still waiting makes the
runner report it cancelled without running it. On warm shutdown or a lost broker the
agent asks the runner to ``return`` those not started, and gives them back with
``Release``; when the runner dies they go to its successor. While the runner has more
held attempts to run, ``OutcomePacing`` batches its outcomes.

The agent announces itself with ``Ready``, heartbeats per ``Liveness`` and treats any
message from the broker as proof of life. When the broker goes silent (or says
``Bye``) it closes the DEALER, waits ``Backoff.next_delay_s()`` and reconnects with a
fresh ``Ready``. Task code runs in the ``workers.runner`` child, so the loop never
blocks: one ``zmq.Poller`` watches the DEALER, the child's result pipe, a signal wake-up
socket and, while writes to the child wait for room, its control pipe; every timer is
checked on every iteration. ``ParentLink`` tells the pool (or a terminal) that the
agent is up; the command line is ``workers.agent_cli``.

Error ``type`` strings the agent itself reports in ``Failed``: ``Timeout``,
``JobCancelled``, ``WorkerLost`` and ``Busy`` (the runner reports the task's own).
"""

from __future__ import annotations

import logging
import math
import os
import socket
import sys
import time
from typing import Any, Final

import zmq

from broker.errors import UnknownTask
from broker.liveness import Backoff
from broker.protocol import Assign, Bye, Done, Error, Failed, Heartbeat, Log, Message, Ready, Release, Stop
from broker.security import ClientKeys
from workers import registry
from workers.child import Child
from workers.connection import BrokerConnection
from workers.outcome_pacing import OutcomePacing
from workers.parent_link import ParentLink
from workers.signals import SignalFlags
from workers.slot import Attempt, Held, cancelled_error, error, outcome_message

logger = logging.getLogger(__name__)

CANCEL_GRACE_S: Final = 2.0
WARM_GRACE_S: Final = 5.0
MAX_POLL_S: Final = 1.0
CHILD_CHECK_S: Final = 0.1  # a dead runner shows as EOF on its pipe; this catches the rest
DEFAULT_PREFETCH: Final = 64


class Agent:
    """One worker slot: a DEALER to the broker and one runner child."""

    def __init__(self, broker: str, task_modules: list[str], *, grace_s: float = WARM_GRACE_S,
                 notify_fd: int | None = None, curve: ClientKeys | None = None,
                 prefetch: int = DEFAULT_PREFETCH) -> None:  # fmt: skip
        self.broker = broker
        self.prefetch = prefetch
        self.curve = curve
        self.task_modules = task_modules
        self.grace_s = grace_s
        self.context = zmq.Context()
        self.poller = zmq.Poller()
        self.connection = BrokerConnection(self.context, self.poller, broker, self._ready, curve,
                                           on_lost=self._return_waiting)  # fmt: skip
        self.child: Child | None = None
        self.child_backoff = Backoff()
        self.pacing = OutcomePacing()
        self.respawn_at: float | None = None
        self.next_child_check = 0.0
        self.held = Held(CANCEL_GRACE_S)  # the first one runs; the others wait in the pipe
        self.signals = SignalFlags()
        self.handled_signals = 0
        self.stop_deadline: float | None = None
        self.exit_code: int | None = None
        self.parent = ParentLink(notify_fd)

    # --- the loop ----------------------------------------------------------------------

    def run(self) -> int:
        """Serve until a signal ends it; return the exit code."""
        self.signals.install()
        self.poller.register(self.signals.fd, zmq.POLLIN)
        try:
            now = time.monotonic()
            self._spawn_child()
            self.connection.connect(now)
            self.parent.announce(self.broker, registry.names())
            while self.exit_code is None:
                self._step()
            return self.exit_code
        finally:
            self._close()

    def _step(self) -> None:
        events = dict(self.poller.poll(self._timeout_ms(time.monotonic())))
        now = time.monotonic()
        if self.signals.fd in events:
            self.signals.drain()
        dealer = self.connection.dealer
        if dealer is not None and dealer in events:
            for msg in self.connection.receive(now):
                self._dispatch(msg, now)
            if self.connection.ever_heard:
                self.parent.connected()
        if self.child is not None and self.child.result_fd in events:
            self._read_child(now)
            self._pause_results(now)
        self._tick(now)
        self._flush_child(now)
        self.connection.flush()

    def _tick(self, now: float) -> None:
        """Every timer, on every iteration (never inside one branch)."""
        self._resume_results(now)
        self._check_signals(now)
        if self.parent.pool_gone():
            self._cold_shutdown(now, "the pool is gone")
        self._check_child(now)
        self._check_deadlines(now)
        self.connection.tick(now)
        if self.stop_deadline is not None and not self.held and self.exit_code is None:
            self.exit_code = 0

    def _timeout_ms(self, now: float) -> int:
        deadlines = [now + MAX_POLL_S, self.respawn_at, self.stop_deadline,
                     self.connection.next_deadline(), self.pacing.paused_until]  # fmt: skip
        current = self.held.current
        if current is not None:
            deadlines += [current.deadline, current.cancel_deadline]
        earliest = min(d for d in deadlines if d is not None)
        return max(0, math.ceil((earliest - now) * 1000) + 1)

    # --- messages from the broker -------------------------------------------------------

    def _dispatch(self, msg: Message, now: float) -> None:
        match msg:
            case Heartbeat():
                pass
            case Assign():
                self._on_assign(msg, now)
            case Stop():
                self._on_stop(msg, now)
            case Bye():
                self.connection.disconnect(now, "broker said Bye")
            case Error():
                logger.warning("broker error %s: %s", msg.code, msg.message)
            case _:
                logger.warning("dropped an unexpected %s from the broker", type(msg).__name__)

    # --- jobs ----------------------------------------------------------------------------

    def _on_assign(self, msg: Assign, now: float) -> None:
        if len(self.held) >= self.prefetch or self.stop_deadline is not None:
            running = self.held.current.id if self.held.current is not None else "none"
            why = "shutting down" if self.stop_deadline is not None else f"busy with job {running}"
            why += f" and holds {len(self.held) - 1} more" if len(self.held) > 1 else ""
            logger.warning("job %s refused: worker is %s", msg.id, why)
            busy = error("Busy", f"worker is {why}")
            self.connection.send(Failed(id=msg.id, attempt=msg.attempt, error=busy), now)
            return
        self.held.hold(Attempt.hold(msg, _task_timeout_s(msg)), now)
        logger.debug("job %s attempt %d assigned: %s", msg.id, msg.attempt, msg.task)
        if self.child is None:
            self._spawn_child()  # hands it every held attempt
        else:
            self.child.assign(msg)

    def _on_stop(self, msg: Stop, now: float) -> None:
        held = next((a for a in self.held if a.matches(msg.id, msg.attempt)), None)
        if held is None:
            logger.info("job %s attempt %d: Stop for an attempt not held here", msg.id,
                        msg.attempt)  # fmt: skip
            return
        if held.stop_asked:
            return
        held.stop_asked = True
        if held is self.held.current:
            held.cancel_deadline = now + CANCEL_GRACE_S
        logger.info("job %s attempt %d cancelling", msg.id, msg.attempt)
        if self.child is not None:
            self.child.cancel(msg.id, msg.attempt)

    def _finish(self, msg: Done | Failed, now: float) -> None:
        """The running attempt ended: report it; the next one held starts now."""
        self.held.finish(now)
        state = "done" if isinstance(msg, Done) else f"failed ({msg.error.get('type')})"
        logger.debug("job %s attempt %d %s", msg.id, msg.attempt, state)
        self.connection.send(msg, now)

    def _release(self, job_id: str, attempt: int, now: float) -> None:
        """Give back a held attempt the runner never started."""
        if self.held.release(job_id, attempt, now):
            self.connection.send(Release(id=job_id, attempt=attempt), now)

    def _return_waiting(self) -> None:
        """Ask the runner for the attempts it has not started (it answers ``returned``)."""
        if len(self.held) > 1 and self.child is not None:
            self.child.return_waiting()

    def _check_deadlines(self, now: float) -> None:
        outcome = self.held.overdue(now, self.stop_deadline, self.grace_s)
        if outcome is not None:
            self._kill_running(outcome, now)

    def _kill_running(self, outcome: Failed, now: float) -> None:
        """Kill the runner in the middle of the running attempt, which ends with ``outcome``."""
        child = self._drop_child()
        if child is not None:
            child.kill()
        self._finish(outcome, now)
        self._after_child_lost(now)

    def _after_child_lost(self, now: float) -> None:
        """The runner is gone: what it had not started goes back (shutting down) or to the
        next runner, which starts now, or on its respawn."""
        if self.stop_deadline is not None:
            while self.held:  # none of them ran (the first had begun on paper only)
                held = self.held.popleft()
                self.connection.send(Release(id=held.id, attempt=held.attempt), now)
            return
        if self.child is None and self.respawn_at is None:
            self._spawn_child()

    # --- the runner child --------------------------------------------------------------

    def _spawn_child(self) -> None:
        """Start a runner and hand it every attempt held (none of them has run)."""
        self.child = Child.spawn(self.broker, self.task_modules, self.curve)
        self.child.watch_results(self.poller, True)
        self.respawn_at = None
        for held in self.held:
            self.child.assign(held.assign)
            if held.stop_asked:
                self.child.cancel(held.id, held.attempt)

    def _drop_child(self) -> Child | None:
        child, self.child = self.child, None
        if child is not None:
            child.unwatch(self.poller)
        return child

    def _flush_child(self, now: float) -> None:
        """Write what waits for the runner; watch its pipe for room while some is left."""
        child = self.child
        if child is None:
            return
        try:
            child.flush()
        except OSError as exc:
            logger.warning("the runner's control pipe broke: %s", exc)
            self._read_child(now)
            if self.child is not None:
                self._on_child_exit(now)
            return
        child.watch_control(self.poller, child.wants_write)

    def _pause_results(self, now: float) -> None:
        """Leave the runner's outcomes in the pipe for a while (``OutcomePacing``)."""
        if self.child is not None and self.pacing.pause(now, self.held):
            self.child.watch_results(self.poller, False)

    def _resume_results(self, now: float) -> None:
        """Watch and read the pipe again once ``OutcomePacing`` ends the pause."""
        if self.pacing.resume(now, self.held, self.stop_deadline) and self.child is not None:
            self.child.watch_results(self.poller, True)
            self._read_child(now)

    def _read_child(self, now: float) -> None:
        child = self.child
        if child is None:
            return
        try:
            messages, eof = child.read()
        except ValueError as exc:
            logger.error("runner child %d sent garbage (%s); killing it", child.pid, exc)
            child.kill()
            messages, eof = [], True
        for header, payload in messages:
            self._on_outcome(header, payload, now)
        if eof and self.child is child:
            self._on_child_exit(now)

    def _on_outcome(self, header: dict[str, Any], payload: bytes, now: float) -> None:
        returned = header.get("returned")
        if isinstance(returned, list):
            for key in returned:
                if isinstance(key, list) and len(key) == 2:
                    self._release(key[0], key[1], now)
            return
        current = self.held.current
        if current is None or not current.matches(header.get("id"), header.get("attempt")):
            logger.warning("job %s: dropped a stale outcome from the runner", header.get("id"))
            return
        if isinstance(header.get("log"), list):  # log lines go out ahead of the outcome, in order
            self.connection.send(Log(id=current.id, attempt=current.attempt, lines=header["log"]), now)
            return
        self.child_backoff.reset()
        self._finish(outcome_message(current, header, payload), now)

    def _on_child_exit(self, now: float) -> None:
        child = self._drop_child()
        how = child.reap() if child is not None else "is gone"
        current = self.held.current
        if current is None:
            logger.warning("idle runner child %s", how)
            self.respawn_at = now + self.child_backoff.next_delay_s()
            return
        if current.cancel_deadline is not None:
            self._finish(current.failed(cancelled_error(f"worker process {how}")), now)
        else:
            lost = error("WorkerLost", f"worker process {how}")
            self._finish(current.failed(lost, retry=True), now)
        self.respawn_at = now  # the job killed it: not a crash loop
        self._after_child_lost(now)

    def _check_child(self, now: float) -> None:
        if now >= self.next_child_check:  # not every turn: reaping costs a waitpid each time
            self.next_child_check = now + CHILD_CHECK_S
            if self.child is not None and self.child.has_exited():
                self._read_child(now)  # an outcome may still sit in the pipe
                if self.child is not None:
                    self._on_child_exit(now)
        due = self.respawn_at is not None and now >= self.respawn_at
        if self.child is None and due and self.stop_deadline is None:
            self._spawn_child()

    # --- signals and shutdown -------------------------------------------------------------

    def _check_signals(self, now: float) -> None:
        if self.signals.count == self.handled_signals:
            return
        self.handled_signals = self.signals.count
        if self.stop_deadline is None:
            logger.info("warm shutdown: finishing the current job (grace %g s)", self.grace_s)
            self.stop_deadline = now + self.grace_s
            self.connection.send(Bye(), now)
            self._return_waiting()
        else:
            self._cold_shutdown(now, "cold shutdown")

    def _cold_shutdown(self, now: float, reason: str) -> None:
        logger.warning("%s: killing the runner and exiting", reason)
        self.stop_deadline = now
        self.exit_code = 1
        self._check_deadlines(now)

    def _ready(self) -> Ready:
        return Ready(tasks=registry.names(), options=registry.options(), pid=os.getpid(),
                     host=socket.gethostname(), busy=self.held.current is not None,
                     prefetch=self.prefetch, bundles=True)  # fmt: skip

    def _close(self) -> None:
        child = self._drop_child()
        if child is not None:
            child.stop()
        self.poller.unregister(self.signals.fd)
        self.signals.close()
        self.connection.close()
        self.context.term()


def _task_timeout_s(msg: Assign) -> float | None:
    if msg.timeout_s is not None:
        return msg.timeout_s
    try:
        return registry.lookup(msg.task).timeout_s
    except UnknownTask:
        return None


if __name__ == "__main__":
    sys.exit("run a worker slot with: python -m workers.agent_cli (or: jobcast worker)")
