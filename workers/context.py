"""The ``Job`` handed to a task: its identity, throttled ``progress()``, ``log()`` and cancellation.

Progress is published on the runner's own PUB socket (topic = job id) at most every
``PROGRESS_INTERVAL_S``; the latest call is always remembered, flushed when the task
ends and reported in ``Done.last``, so the last figures are never lost. A job started
``quiet`` (more jobs wait behind it in its slot: a short task, prefetched) publishes
nothing in its first ``PROGRESS_INTERVAL_S``: most such jobs end before, and their
outcome carries the last figures, so the broker and the browsers are spared an event
per job that the final state supersedes a millisecond later. When the agent
asks for a cancel (``cancel_check``, the runner's look at its control pipe), the next
``progress()`` raises ``JobCancelled``.

``log(text)`` lines go to ``log_sink`` (the runner writes them to the agent, which sends
them to the broker on its DEALER, so they arrive in order and before the attempt's
``Done``), rate-limited and batched by ``workers.logbuffer``; ``flush()`` sends the rest.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Final

import zmq

from broker.errors import JobCancelled
from broker.protocol import Progress, encode
from workers.logbuffer import LogBuffer

logger = logging.getLogger(__name__)

Clock = Callable[[], float]
LogSink = Callable[[list[str]], None]
PROGRESS_INTERVAL_S: Final = 0.1
CANCEL_CHECK_INTERVAL_S: Final = 0.005
MAX_MESSAGE_CHARS: Final = 1000


class Job:
    """What a task receives: ``id``, ``attempt``, ``task`` and ``progress(i, n, message)``."""

    def __init__(
        self,
        id: str,
        attempt: int,
        *,
        task: str = "",
        publisher: zmq.Socket[bytes] | None = None,
        cancel_check: Callable[[], bool] | None = None,
        clock: Clock = time.monotonic,
        log_sink: LogSink | None = None,
        quiet: bool = False,
    ) -> None:
        self.id = id
        self.attempt = attempt
        self.task = task
        self._publisher = publisher
        self._cancel_check = cancel_check
        self._clock = clock
        self._latest: tuple[int, int, str] | None = None
        self._published: tuple[int, int, str] | None = None
        self._quiet = quiet  # publish nothing before PROGRESS_INTERVAL_S (module docstring)
        self._sent_at = clock() if quiet else float("-inf")
        self._checked_at = float("-inf")
        self._cancelled = False
        self._log_sink = log_sink
        self._log = LogBuffer(clock())

    def __repr__(self) -> str:
        return f"<Job {self.id} attempt {self.attempt} task {self.task!r}>"

    @property
    def cancelled(self) -> bool:
        """Whether the agent asked this attempt to stop."""
        return self._cancelled

    @property
    def last(self) -> dict[str, Any] | None:
        """The latest progress call as ``{"done", "total", "message"}``, or None."""
        if self._latest is None:
            return None
        done, total, message = self._latest
        return {"done": done, "total": total, "message": message}

    def progress(self, done: int, total: int, message: str = "") -> None:
        """Report ``done`` of ``total`` steps; cheap to call often (throttled by time).

        Raises:
            JobCancelled: the job was cancelled; let it propagate.
            ValueError: ``done`` or ``total`` is not an int >= 0.
            TypeError: ``message`` is not a string.
        """
        _check_count("done", done)
        _check_count("total", total)
        if not isinstance(message, str):
            raise TypeError(f"progress message must be a str (got {type(message).__name__})")
        self._latest = (done, total, message[:MAX_MESSAGE_CHARS])
        now = self._clock()
        if now - self._sent_at >= PROGRESS_INTERVAL_S:
            self._sent_at = now
            self._publish(self._latest)
            if self._log.pending:
                self._send_log(now, final=False)
            self._check_cancel(now)
        elif now - self._checked_at >= CANCEL_CHECK_INTERVAL_S:
            self._check_cancel(now)
        if self._cancelled:
            raise JobCancelled(self.id)

    def log(self, text: str) -> None:
        """Add a line to the job's log, shown live on its page (bounded, rate-limited).

        Raises:
            TypeError: ``text`` is not a string.
        """
        if not isinstance(text, str):
            raise TypeError(f"log text must be a str (got {type(text).__name__})")
        now = self._clock()
        self._log.add(text, now)
        if self._log.due(now):
            self._send_log(now, final=False)

    def flush(self) -> dict[str, Any] | None:
        """Send what was throttled (progress and log lines); return the last progress."""
        self._send_log(self._clock(), final=True)
        quiet_so_far = self._quiet and self._published is None  # the outcome carries the figures
        if self._latest is not None and self._latest != self._published and not quiet_so_far:
            self._publish(self._latest)
        return self.last

    def _send_log(self, now: float, *, final: bool) -> None:
        for lines in self._log.take(now, final=final):
            if self._log_sink is not None:
                self._log_sink(lines)

    def _publish(self, figures: tuple[int, int, str]) -> None:
        self._published = figures
        if self._publisher is None:
            return
        done, total, message = figures
        msg = Progress(id=self.id, attempt=self.attempt, done=done, total=total, message=message)
        try:
            self._publisher.send_multipart(encode(msg), zmq.NOBLOCK)
        except zmq.Again:  # PUB drops at its high-water mark; the next call carries on
            logger.debug("job %s progress dropped (publisher full)", self.id)

    def _check_cancel(self, now: float) -> None:
        self._checked_at = now
        if self._cancel_check is None or self._cancelled:
            return
        self._cancelled = self._cancel_check()
        if self._cancelled:
            logger.info("job %s cancel requested", self.id)


def _check_count(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"progress {name} must be an int >= 0 (got {value!r})")
