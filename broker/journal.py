"""The job journal: every live job's latest record in SQLite, replayed when the broker starts.

Durability: SQLite in WAL mode with ``synchronous=NORMAL``. A committed record survives a
crash of the broker process, not a power cut. The broker acknowledges a submission only
after the turn's journal transaction has committed.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
from collections.abc import Iterable
from typing import Any, Final

from broker.errors import UnsafeStoredData

logger = logging.getLogger(__name__)

JOURNAL_FILE: Final = "journal.sqlite3"


class JobJournal:
    """Append-and-delete store of live jobs, keyed by id."""

    def __init__(self, data_dir: str) -> None:
        self.path = os.path.join(data_dir, JOURNAL_FILE)
        try:
            self.db = sqlite3.connect(self.path, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
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

    def apply(self, records: Iterable[dict[str, Any]]) -> None:
        """Write one turn's records in one transaction: ``put`` upserts, ``end`` deletes, ``meta`` sets.

        Only each job's (and meta key's) last record in the turn is written: the
        transaction is atomic, so the ones before it could never be seen.
        """
        jobs, meta = _latest(records)
        puts = [(job_id, _dump(job)) for job_id, job in jobs.items() if job is not None]
        ends = [(job_id,) for job_id, job in jobs.items() if job is None]
        self.db.execute("BEGIN")
        try:
            if meta:
                self.db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", meta.items())
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
        """Close the database."""
        self.db.close()


def _latest(records: Iterable[dict[str, Any]]) -> tuple[dict[str, dict[str, Any] | None], dict[str, str]]:
    """Each job's last record (None: it ended) and each meta key's last value, as JSON."""
    jobs: dict[str, dict[str, Any] | None] = {}
    meta: dict[str, str] = {}
    for record in records:
        op = record["op"]
        if op == "put":
            jobs[record["job"]["id"]] = record["job"]
        elif op == "meta":
            meta[record["key"]] = _dump(record["value"])
        else:
            jobs[record["id"]] = None
    return jobs, meta


def _dump(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))
