"""The runner's end of its control pipe: assignments in order, cancels and returns at once.

The agent may write several assignments ahead (a slot that prefetches short jobs), so the
runner cannot simply read one message per job: a cancel or a return written after them
must take effect before the assignments it concerns start. ``ControlInbox`` reads
whatever the pipe holds, in chunks, and sorts it:

- ``assign``: kept in order until ``next_assign`` hands it out;
- ``cancel``: remembered for that attempt, whether it waits here or runs now
  (``cancelled`` is what ``Job.progress`` asks);
- ``return``: every assignment waiting here is dropped unstarted and passed to
  ``on_return``, so the agent can give it back to the broker.

End of file (the agent is gone) cancels whatever runs and ends ``next_assign``.
"""

from __future__ import annotations

import os
import select
from collections import deque
from collections.abc import Callable
from typing import Any

from workers.pipes import READ_CHUNK_BYTES, MessageReader, PipeMessage

AttemptKey = tuple[str, int]
ReturnSink = Callable[[list[AttemptKey]], None]


class ControlInbox:
    """Reads and sorts the control pipe; see the module docstring."""

    def __init__(self, fd: int, on_return: ReturnSink | None = None) -> None:
        self.fd = fd
        self.on_return = on_return
        self.eof = False
        os.set_blocking(fd, False)
        self._reader = MessageReader()
        self._waiting: deque[PipeMessage] = deque()
        self._cancels: set[AttemptKey] = set()

    def next_assign(self) -> tuple[dict[str, Any], bytes, bool] | None:
        """The next assignment ``(header, args, cancelled)``, blocking until one comes;
        None at end of file. A cancelled one must be reported, not run."""
        if self._waiting:
            self.poll()  # a cancel or a return written behind them counts first
        while not self._waiting:
            if self.eof:
                return None
            select.select([self.fd], [], [])  # wait for the agent to write
            self.poll()
        header, payload = self._waiting.popleft()
        key = attempt_key(header)
        cancelled = key in self._cancels
        if self._cancels:  # older cancels are moot (rare: no set built per job otherwise)
            self._cancels &= {attempt_key(h) for h, _ in self._waiting}
        return header, payload, cancelled

    @property
    def has_waiting(self) -> bool:
        """Whether assignments wait here behind the one handed out last."""
        return bool(self._waiting)

    def cancelled(self, key: AttemptKey) -> bool:
        """Whether the agent asked to stop this attempt (or is gone); reads what is there."""
        self.poll()
        return self.eof or key in self._cancels

    def poll(self) -> None:
        """Read and sort what the pipe holds now (one read: more is seen on the next poll)."""
        if self.eof:
            return
        try:
            data = os.read(self.fd, READ_CHUNK_BYTES)
        except BlockingIOError:
            return
        if not data:
            self.eof = True
            return
        for header, payload in self._reader.feed(data):
            self._sort(header, payload)

    def _sort(self, header: dict[str, Any], payload: bytes) -> None:
        match header.get("cmd"):
            case "assign":
                self._waiting.append((header, payload))
            case "cancel":
                self._cancels.add(attempt_key(header))
            case "return":
                returned = [attempt_key(h) for h, _ in self._waiting]
                self._waiting.clear()
                self._cancels.difference_update(returned)
                if self.on_return is not None:
                    self.on_return(returned)


def attempt_key(header: dict[str, Any]) -> AttemptKey:
    """``(id, attempt)`` of a control message."""
    return str(header.get("id")), int(header.get("attempt") or 0)
