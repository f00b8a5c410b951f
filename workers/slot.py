"""What a worker slot is doing, as plain data: the attempt it holds and its deadlines (pure).

The agent's I/O shell keeps one ``Attempt`` while its runner child works, and turns the
runner's outcome records into the wire's ``Done`` / ``Failed`` here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from broker.protocol import Assign, Done, Failed


@dataclass(slots=True)
class Attempt:
    """The attempt a slot is running, with its timeout and cancel deadlines (monotonic)."""

    id: str
    attempt: int
    task: str
    started_at: float
    timeout_s: float | None = None
    deadline: float | None = None
    cancel_deadline: float | None = None

    @classmethod
    def start(cls, msg: Assign, timeout_s: float | None, now: float) -> Attempt:
        """The bookkeeping for an ``Assign`` accepted at ``now``."""
        deadline = None if timeout_s is None else now + timeout_s
        return cls(msg.id, msg.attempt, msg.task, now, timeout_s, deadline)

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
            last = header.get("last")
            return Done(id=current.id, attempt=current.attempt, result=payload,
                        last=last if isinstance(last, dict) else None)  # fmt: skip
        case "failed" if isinstance(header.get("error"), dict):
            return current.failed(header["error"], retry=bool(header.get("retry")))
        case "cancelled":
            return current.failed(cancelled_error())
        case other:
            return current.failed(error("WorkerLost", f"runner sent outcome {other!r}"), retry=True)
