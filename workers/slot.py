"""What a worker slot is doing, as plain data: the attempts it holds and their deadlines (pure).

A slot holds up to ``prefetch`` attempts at once (the broker sends more than one only for
short tasks), an ``Attempt`` each, in ``Held``. They go to the runner as they come and run
there in order; the first one held is the one running, and only its timeout and cancel
deadlines tick. The agent's I/O shell keeps the ``Held`` and turns the runner's outcome
records into the wire's ``Done`` / ``Failed`` here.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

from broker.protocol import Assign, Done, Failed


@dataclass(slots=True)
class Attempt:
    """An attempt the slot holds (its ``Assign``), with its timeout and cancel deadlines
    (monotonic).

    A slot that prefetches holds several; only the first has begun, and only its deadlines
    tick. ``stop_asked`` records a Stop that came for it.
    """

    assign: Assign
    timeout_s: float | None = None
    deadline: float | None = None
    cancel_deadline: float | None = None
    stop_asked: bool = False

    @property
    def id(self) -> str:
        """The job id."""
        return self.assign.id

    @property
    def attempt(self) -> int:
        """The attempt number."""
        return self.assign.attempt

    @classmethod
    def hold(cls, msg: Assign, timeout_s: float | None) -> Attempt:
        """The bookkeeping for an accepted ``Assign``, not begun yet."""
        return cls(msg, timeout_s)

    def begin(self, now: float, cancel_grace_s: float) -> None:
        """It starts now: its timeout runs from here (and a Stop asked before, its grace)."""
        self.deadline = None if self.timeout_s is None else now + self.timeout_s
        if self.stop_asked:
            self.cancel_deadline = now + cancel_grace_s

    def due(self, now: float) -> bool:
        """Whether its timeout or its cancel grace has run out."""
        return any(
            deadline is not None and now >= deadline for deadline in (self.deadline, self.cancel_deadline)
        )

    def matches(self, job_id: Any, attempt: Any) -> bool:
        """Whether a message is about this very attempt."""
        return bool(job_id == self.id and attempt == self.attempt)

    def failed(self, error: dict[str, str], *, retry: bool = False) -> Failed:
        """A ``Failed`` for this attempt."""
        return Failed(id=self.id, attempt=self.attempt, error=error, retry=retry)


class Held(deque[Attempt]):
    """The attempts a slot holds, in the order the runner runs them: the first one runs
    (it begins when it becomes the first), the others wait in the runner's pipe."""

    def __init__(self, cancel_grace_s: float) -> None:
        super().__init__()
        self.cancel_grace_s = cancel_grace_s

    @property
    def current(self) -> Attempt | None:
        """The attempt running in the runner, if any."""
        return self[0] if self else None

    def hold(self, attempt: Attempt, now: float) -> None:
        """Hold one more attempt; it begins now if no other is held."""
        self.append(attempt)
        if len(self) == 1:
            attempt.begin(now, self.cancel_grace_s)

    def finish(self, now: float) -> None:
        """The running attempt ended: drop it; the next one held begins now."""
        self.popleft()
        if self:
            self[0].begin(now, self.cancel_grace_s)

    def release(self, job_id: str, attempt: int, now: float) -> bool:
        """Drop a held attempt the runner never started (even the first one: the runner may
        not have reached it yet); whether it was held. If it was the first, the next begins."""
        for held in self:
            if held.matches(job_id, attempt):
                first = held is self[0]
                self.remove(held)
                if first and self:
                    self[0].begin(now, self.cancel_grace_s)
                return True
        return False

    def overdue(self, now: float, stop_deadline: float | None, grace_s: float) -> Failed | None:
        """How the running attempt ends if a deadline has passed, else None: first its cancel
        grace, then its timeout, then the warm shutdown's ``stop_deadline`` (``grace_s``
        after the shutdown began; an attempt already asked to stop counts as cancelled)."""
        current = self.current
        if current is None:
            return None
        if current.cancel_deadline is not None and now >= current.cancel_deadline:
            return current.failed(cancelled_error(f"killed after {self.cancel_grace_s:g} s"))
        if current.deadline is not None and now >= current.deadline:
            message = f"job exceeded timeout of {current.timeout_s:g} s"
            return current.failed(error("Timeout", message), retry=True)
        if stop_deadline is None or now < stop_deadline:
            return None
        if current.cancel_deadline is not None:
            return current.failed(cancelled_error("worker shut down"))
        message = f"worker shut down; the job did not end within {grace_s:g} s"
        return current.failed(error("WorkerLost", message), retry=True)


def error(type_: str, message: str, traceback: str = "") -> dict[str, str]:
    """An error record: ``{"type", "message", "traceback"}``."""
    return {"type": type_, "message": message, "traceback": traceback}


def cancelled_error(detail: str = "") -> dict[str, str]:
    """The error record of a cancelled attempt."""
    return error("JobCancelled", "job was cancelled" + (f" ({detail})" if detail else ""))


def outcome_message(current: Attempt, header: dict[str, Any], payload: bytes) -> Done | Failed:
    """Turn the runner's outcome record for ``current`` into the wire message."""
    match header.get("outcome"):
        case "done":
            last, run_s = header.get("last"), header.get("run_s")
            return Done(id=current.id, attempt=current.attempt, result=payload,
                        last=last if isinstance(last, dict) else None,
                        run_s=run_s if isinstance(run_s, float) else None)  # fmt: skip
        case "failed" if isinstance(header.get("error"), dict):
            return current.failed(header["error"], retry=bool(header.get("retry")))
        case "cancelled":
            return current.failed(cancelled_error())
        case other:
            return current.failed(error("WorkerLost", f"runner sent outcome {other!r}"), retry=True)
