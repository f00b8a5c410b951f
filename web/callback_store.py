"""Pending callbacks on disk, so that one outlives the web process that took it.

A row per callback not yet delivered (``callbacks.sqlite3`` in the data directory, SQLite in
WAL mode, ``synchronous=NORMAL``: a committed row survives the process, not a power cut).
The web process writes the row before it answers the submission and deletes it once the
callback is delivered or given up.

Several web processes may share the file (``uvicorn --workers``, or a restart while the old
one still drains). Each row carries a *lease*: its owner (a random token per process) and
a wall-clock time until which the row is that owner's. An owner renews its leases every
``lease_s / 3``. A row whose lease ran out belongs to whoever claims it first: the
successor of a process that was killed takes its callbacks over once ``lease_s`` has
passed, and one that stopped cleanly releases its rows, so they are taken at once.

Delivery is therefore at least once: a process that dies between a delivered POST and the
delete leaves a row that its successor sends again. Receivers tell repeats by the job's
``id``, as with any webhook.
"""

from __future__ import annotations

import os
import secrets
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

CALLBACKS_FILE: Final = "callbacks.sqlite3"
LEASE_S: Final = 30.0
BUSY_TIMEOUT_S: Final = 5.0

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class StoredCallback:
    """One pending callback: its row, the job and the URL to POST to."""

    row: int
    job_id: str
    url: str


class CallbackStore:
    """The pending callbacks in one SQLite file, leased to the processes that deliver them."""

    def __init__(self, data_dir: str, *, lease_s: float = LEASE_S, clock: Clock = time.time) -> None:
        os.makedirs(data_dir, mode=0o700, exist_ok=True)
        self.path = os.path.join(data_dir, CALLBACKS_FILE)
        self.owner = secrets.token_hex(8)
        self.lease_s = lease_s
        self.clock = clock
        self.db = sqlite3.connect(self.path, isolation_level=None, timeout=BUSY_TIMEOUT_S)
        try:
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute(
                "CREATE TABLE IF NOT EXISTS callbacks (row INTEGER PRIMARY KEY, job_id TEXT NOT NULL,"
                " url TEXT NOT NULL, owner TEXT NOT NULL, lease_until REAL NOT NULL)"
            )
        except BaseException:
            self.db.close()
            raise
        os.chmod(self.path, 0o600)

    def add(self, job_id: str, url: str) -> StoredCallback:
        """Keep a new callback, leased to this process."""
        cursor = self.db.execute(
            "INSERT INTO callbacks (job_id, url, owner, lease_until) VALUES (?, ?, ?, ?)",
            (job_id, url, self.owner, self.clock() + self.lease_s),
        )
        return StoredCallback(int(cursor.lastrowid or 0), job_id, url)

    def remove(self, row: int) -> None:
        """Forget a callback that was delivered or given up."""
        self.db.execute("DELETE FROM callbacks WHERE row = ?", (row,))

    def claim(self, limit: int) -> list[StoredCallback]:
        """Take up to ``limit`` callbacks whose lease ran out (their owner stopped or died)."""
        if limit <= 0:
            return []
        now = self.clock()
        self.db.execute("BEGIN IMMEDIATE")  # two claimers never take the same row
        try:
            rows = self.db.execute(
                "SELECT row, job_id, url FROM callbacks WHERE lease_until < ? ORDER BY row LIMIT ?",
                (now, limit),
            ).fetchall()
            self.db.executemany(
                "UPDATE callbacks SET owner = ?, lease_until = ? WHERE row = ?",
                [(self.owner, now + self.lease_s, row) for row, _, _ in rows],
            )
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        return [StoredCallback(row, job_id, url) for row, job_id, url in rows]

    def renew(self) -> None:
        """Extend this process's leases by ``lease_s`` from now."""
        self.db.execute(
            "UPDATE callbacks SET lease_until = ? WHERE owner = ?", (self.clock() + self.lease_s, self.owner)
        )

    def release(self) -> None:
        """Give this process's rows up, so that the next process takes them at once."""
        self.db.execute("UPDATE callbacks SET lease_until = 0 WHERE owner = ?", (self.owner,))

    def count(self) -> int:
        """How many callbacks are pending, whoever holds them."""
        return int(self.db.execute("SELECT COUNT(*) FROM callbacks").fetchone()[0])

    def close(self) -> None:
        """Close the file."""
        self.db.close()
