"""The web's cache-hit fast path: the broker's result cache read from this host's disk, if it can.

A web process on the broker's box reads finished reports straight from the data dir. One on
another host usually has no data dir (or not the broker's): every answer here is then
``None`` and the caller asks the broker, which sends results over the wire. The same goes
for a cache that cannot be read (a file that is not a database, a missing or unreadable
result file, a tampered row): the error is logged once, and the disk is left alone for
``RETRY_S`` before it is tried again, so a broken mount costs neither a log line nor a
failed open per request.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Callable
from typing import Any, Final, TypeVar

from broker.errors import UnsafeStoredData
from broker.results import ResultReader

logger = logging.getLogger(__name__)

RETRY_S: Final = 60.0
T = TypeVar("T")
Clock = Callable[[], float]
READ_ERRORS: Final = (UnsafeStoredData, sqlite3.Error, OSError, ValueError)


class LocalResults(ResultReader):
    """A ``ResultReader`` that answers ``None`` instead of raising, and backs off after errors."""

    def __init__(self, data_dir: str, clock: Clock = time.monotonic) -> None:
        super().__init__(data_dir)
        self.clock = clock
        self.off_until = 0.0
        if not os.path.isdir(self.directory):
            logger.info("no result cache at %s on this host: cache hits come from the broker", self.directory)

    def job(self, job_id: str) -> tuple[dict[str, Any], bytes | None] | None:
        """A finished job's view and result bytes from disk, or None (ask the broker)."""
        return self._guarded(lambda: super(LocalResults, self).job(job_id))

    def job_for_key(self, cache_key: str) -> str | None:
        """The job id cached under ``cache_key`` on disk, or None (ask the broker)."""
        return self._guarded(lambda: super(LocalResults, self).job_for_key(cache_key))

    def _guarded(self, read: Callable[[], T]) -> T | None:
        if self.clock() < self.off_until:
            return None
        try:
            return read()
        except READ_ERRORS as exc:
            self.off_until = self.clock() + RETRY_S
            self.close()  # reopened on the next try: the file may have been replaced
            logger.warning("result cache %s unreadable (%s); asking the broker for %.0f s",
                           self.directory, exc, RETRY_S)  # fmt: skip
            return None
