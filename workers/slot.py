"""What a worker slot is doing, as plain data: the attempts it holds and their deadlines (pure).

The agent's I/O shell keeps an ``Attempt`` per job it holds, and turns the
runner's outcome records into the wire's ``Done`` / ``Failed`` here.
"""

from __future__ import annotations

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
