"""The job journal: every live job's latest record in SQLite, replayed when the broker starts.

Durability: SQLite in WAL mode with ``synchronous=NORMAL``. A committed record survives a
crash of the broker process, not a power cut. The broker acknowledges a submission only
after the turn's journal transaction has committed. Records that only refine a journaled
job (its assignment, its end) may wait up to ``FLUSH_AFTER_S`` for the next write
(``broker.journal_batch``).
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
from collections.abc import Iterable
from typing import Any, Final

from broker.errors import UnsafeStoredData
from broker.journal_batch import FLUSH_AFTER_S, JournalBatch

logger = logging.getLogger(__name__)

JOURNAL_FILE: Final = "journal.sqlite3"
# Records are about 500 bytes and each write commits a few of them: every page a commit
# touches is copied into the WAL, so small pages make the per-submit commit cheaper.
PAGE_BYTES: Final = 1024
CHECKPOINT_PAGES: Final = 16384


class JobJournal:
    """Append-and-delete store of live jobs, keyed by id."""

    def __init__(self, data_dir: str, flush_after_s: float = FLUSH_AFTER_S) -> None:
        self.path = os.path.join(data_dir, JOURNAL_FILE)
        self.batch = JournalBatch(flush_after_s)
        try:
            self.db = sqlite3.connect(self.path, isolation_level=None)
            self.db.execute(f"PRAGMA page_size={PAGE_BYTES}")  # a new file only; else a no-op
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            # checkpoint every 16 MiB of WAL, not 1 MiB: a live job's index pages are dirtied by
            # its insert, its assignment and its delete, and are copied back once, not three times
            self.db.execute(f"PRAGMA wal_autocheckpoint={CHECKPOINT_PAGES}")
            self.db.execute("CREATE TABLE IF NOT EXISTS jobs (id TEXT PRIMARY KEY, record TEXT NOT NULL)")
            self.db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            self.db.execute("PRAGMA quick_check").fetchone()
        except sqlite3.DatabaseError as exc:
            raise UnsafeStoredData(
                f"journal {self.path} is unreadable ({exc}); move it aside to start with an empty queue"
            ) from None
        os.chmod(self.path, 0o600)

    def replay(self) -> list[dict[str, Any]]:
        """Every live job's latest record.

        Raises:
            UnsafeStoredData: a record is not valid JSON (the file names the journal).
        """
        records = []
        try:
            for _job_id, text in self.db.execute("SELECT id, record FROM jobs"):
                records.append(json.loads(text))
        except (sqlite3.DatabaseError, ValueError) as exc:
            raise UnsafeStoredData(f"journal {self.path} is corrupted ({exc})") from None
        return records

    def replay_meta(self) -> dict[str, Any]:
        """The broker's own state besides jobs (paused tasks, periodic last runs), by key.

        Raises:
            UnsafeStoredData: a value is not valid JSON.
        """
        try:
            return {key: json.loads(text) for key, text in self.db.execute("SELECT key, value FROM meta")}
        except (sqlite3.DatabaseError, ValueError) as exc:
            raise UnsafeStoredData(f"journal {self.path} is corrupted ({exc})") from None

    def apply(self, records: Iterable[dict[str, Any]], now: float | None = None) -> None:
        """Take one turn's records: ``put`` upserts, ``end`` deletes, ``meta`` sets.

        They are written at once, in one transaction with every record waiting, when one
        of them is new (``broker.journal_batch``) or ``now`` is None; else they wait until
        ``next_flush()`` or the next write.
        """
        urgent, meta = self.batch.add(records, 0.0 if now is None else now)
        if urgent or now is None:
            self._write(meta, now)

    def next_flush(self) -> float | None:
        """When the records waiting must be written (monotonic seconds), or None."""
        return self.batch.flush_at

    def flush(self, now: float | None = None) -> None:
        """Write the records waiting, if any."""
        if self.batch.waiting:
            self._write({}, now)

    def _write(self, meta: dict[str, str], now: float | None) -> None:
        puts, ends = self.batch.rows()
        try:
            self._commit(list(meta.items()), puts, ends)
        except BaseException:
            self.batch.failed(0.0 if now is None else now)
            raise
        self.batch.written()

    def _commit(
        self, meta: list[tuple[str, str]], puts: list[tuple[str, str]], ends: list[tuple[str]]
    ) -> None:
        self.db.execute("BEGIN")
        try:
            if meta:
                self.db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", meta)
            if puts:
                self.db.executemany("INSERT OR REPLACE INTO jobs VALUES (?, ?)", puts)
            if ends:
                self.db.executemany("DELETE FROM jobs WHERE id = ?", ends)
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    def probe(self) -> None:
        """Prove the journal takes writes: insert and remove a row in one transaction."""
        self.db.execute("BEGIN")
        try:
            self.db.execute("CREATE TABLE IF NOT EXISTS probe (x INTEGER)")
            self.db.execute("INSERT INTO probe VALUES (1)")
            self.db.execute("DELETE FROM probe")
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    def close(self) -> None:
        """Write the records waiting, then close the database."""
        try:
            self.flush()
        except sqlite3.Error as exc:
            logger.error(
                "journal %s: %d records not written at close (%s)", self.path, len(self.batch.waiting), exc
            )
        self.db.close()
