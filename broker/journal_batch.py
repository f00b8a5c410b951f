"""Which journal records the broker writes at once and which may wait a little (pure).

A turn's records are written at once when any of them is new: a job or group just
submitted (it must be in the journal before its submit is acknowledged) or broker state
(``meta``: a pause is durable before its reply). The others only refine a job the journal
already holds: an assignment or a re-queue (``attempts`` >= 1: the job was written when it
was submitted), or a job's end (its result is stored before, in the same turn). Those wait
up to ``flush_after_s`` and are written with the next write, so most finished jobs cost no
journal transaction of their own.

A broker that dies with records waiting loses nothing: a job whose update waited is
re-queued from its older record, as it would be anyway, and a job whose end waited is
found finished in the result cache when the broker starts (``BrokerServer``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from typing import Any, Final

FLUSH_AFTER_S: Final = 0.05
RETRY_AFTER_S: Final = 1.0  # after a failed write: not on every turn
MAX_WAITING: Final = 1000
_COMPACT: Final = json.JSONEncoder(separators=(",", ":"))  # once: json.dumps with options makes one per call

Record = dict[str, Any]

logger = logging.getLogger("broker.journal")


def is_update(job: Record) -> bool:
    """Whether a job record refines one the journal holds (the job was assigned before)."""
    attempts = job.get("attempts")
    return isinstance(attempts, int) and attempts >= 1


class JournalBatch:
    """The records waiting to be written: each job's latest (None: it ended)."""

    def __init__(self, flush_after_s: float = FLUSH_AFTER_S, max_waiting: int = MAX_WAITING) -> None:
        self.flush_after_s = flush_after_s
        self.max_waiting = max_waiting
        self.waiting: dict[str, Record | None] = {}  # job id -> its latest record; None: it ended
        self.flush_at: float | None = None

    def add(self, records: Iterable[Record], now: float) -> tuple[bool, dict[str, str]]:
        """Take one turn's records; whether everything waiting must be written now, and the meta.

        Only each job's (and meta key's) last record counts: the write is one atomic
        transaction, so the ones before it could never be seen. Job records are encoded
        only when written (``rows``), so one replaced while it waits is never encoded: a
        prefetched job's assignment, say, that its end follows within the same wait.
        """
        last: dict[str, Record | None] = {}
        meta: dict[str, str] = {}
        urgent = False
        for record in records:
            op = record["op"]
            if op == "put":
                last[record["job"]["id"]] = record["job"]
                urgent = urgent or not is_update(record["job"])
            elif op == "meta":
                meta[record["key"]] = dump(record["value"])
            else:
                last[record["id"]] = None
        self.waiting.update(last)
        if self.waiting and self.flush_at is None:
            self.flush_at = now + self.flush_after_s
        return urgent or bool(meta) or len(self.waiting) >= self.max_waiting, meta

    def rows(self) -> tuple[list[tuple[str, str]], list[tuple[str]]]:
        """What waits, as rows to write: (id, JSON record) to upsert and (id,) to delete.

        A record with no JSON form (which ``jobs.job_record`` never makes) is logged and
        left out, so that one bad record cannot stop every later write; the job keeps the
        record the journal already holds, if any.
        """
        puts: list[tuple[str, str]] = []
        ends: list[tuple[str]] = []
        for job_id, job in self.waiting.items():
            if job is None:
                ends.append((job_id,))
                continue
            try:
                puts.append((job_id, dump(job)))
            except (TypeError, ValueError) as exc:
                logger.error("journal: job %s has a record with no JSON form (%s); not written", job_id, exc)
        return puts, ends

    def due(self, now: float) -> bool:
        """Whether waiting records are past their time."""
        return self.flush_at is not None and now >= self.flush_at

    def written(self) -> None:
        """Everything waiting was committed."""
        self.waiting = {}
        self.flush_at = None

    def failed(self, now: float) -> None:
        """A write failed: keep the records and try again later."""
        self.flush_at = now + RETRY_AFTER_S


def dump(value: Any) -> str:
    """Compact JSON, as the journal stores it."""
    return _COMPACT.encode(value)
