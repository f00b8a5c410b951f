"""The worker's side of ``job.log(text)``: rate limit and batching (pure, ``now`` passed in).

A task that logs in a loop must not flood the broker or the browsers, so lines pass a
token bucket (``LOG_RATE_PER_S`` sustained, ``LOG_BURST`` at once); lines over the rate are
counted and replaced by one marker line (``… 12 lines dropped``) once lines flow again,
or when the attempt ends. Lines are cut to ``MAX_LINE_CHARS`` and sent in batches of at
most ``MAX_BATCH_LINES`` lines and ``MAX_BATCH_BYTES`` of JSON, at most every
``LOG_INTERVAL_S`` (a line after a quiet spell goes out at once).
"""

from __future__ import annotations

from typing import Final

from broker.joblog import clip_line, line_bytes

LOG_RATE_PER_S: Final = 20.0
LOG_BURST: Final = 50
LOG_INTERVAL_S: Final = 0.1
MAX_BATCH_LINES: Final = 100
MAX_BATCH_BYTES: Final = 32 * 1024


class LogBuffer:
    """Lines waiting to be sent, behind a token bucket."""

    def __init__(self, now: float) -> None:
        self.tokens = float(LOG_BURST)
        self.refilled_at = now
        self.sent_at = float("-inf")
        self.pending: list[str] = []
        self.dropped = 0

    def add(self, text: str, now: float) -> None:
        """Queue one line, or count it as dropped when over the rate."""
        self.tokens = min(float(LOG_BURST), self.tokens + (now - self.refilled_at) * LOG_RATE_PER_S)
        self.refilled_at = now
        if self.tokens < 1:
            self.dropped += 1
            return
        self.tokens -= 1
        self._mark_dropped()
        self.pending.append(clip_line(text))

    def due(self, now: float) -> bool:
        """Whether pending lines should go out now."""
        return bool(self.pending) and now - self.sent_at >= LOG_INTERVAL_S

    def take(self, now: float, *, final: bool = False) -> list[list[str]]:
        """Every pending line, in batches (``final``: also the marker for dropped lines)."""
        if final:
            self._mark_dropped()
        self.sent_at = now
        batches: list[list[str]] = []
        size = 0
        for line in self.pending:
            cost = line_bytes(line)
            if not batches or len(batches[-1]) >= MAX_BATCH_LINES or size + cost > MAX_BATCH_BYTES:
                batches.append([])
                size = 0
            batches[-1].append(line)
            size += cost
        self.pending = []
        return batches

    def _mark_dropped(self) -> None:
        if self.dropped:
            self.pending.append(f"… {self.dropped} lines dropped (over {LOG_RATE_PER_S:g} lines/s)")
            self.dropped = 0
