"""Which cache keys may have a fresh result on disk, so most submits skip a disk lookup (pure).

The broker is the only writer of the result cache. Once it has read every ``key:`` row's
expiry at start, it knows each key written since, so a key it does not know, or knows as
expired, has no fresh row: ``may_exist`` says False and the submit skips the lookup.
Anything else answers True (look on disk): a known fresh key, a hash collision, and every
key while the index is incomplete (not loaded yet, or past ``limit`` keys). Rows that the
cache evicts or culls only make the index a superset, which stays correct.

Keys are kept as their ``hash()`` (about 100 bytes each), expiries as wall-clock seconds.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Final

logger = logging.getLogger(__name__)

DEFAULT_LIMIT: Final = 100_000
NEVER: Final = float("inf")


class FreshKeys:
    """A bounded index of the cache keys written, with their expiry (wall-clock seconds)."""

    def __init__(self, limit: int = DEFAULT_LIMIT) -> None:
        self.limit = limit
        self.expiry: dict[int, float] = {}
        self.complete = False  # until ``load`` has seen every row

    def load(self, rows: Iterable[tuple[str, float | None]], now: float) -> bool:
        """Start over from every ``(key, expire_at)`` row on disk; False if past the limit."""
        self.expiry = {}
        self.complete = True
        for key, expire_at in rows:
            self.add(key, expire_at, now)
            if not self.complete:
                return False
        return True

    def add(self, key: str, expire_at: float | None, now: float) -> None:
        """A key was written to disk, fresh until ``expire_at`` (None: never expires)."""
        if not self.complete:
            return
        self.expiry[hash(key)] = NEVER if expire_at is None else expire_at
        if len(self.expiry) > self.limit:
            self._prune(now)

    def may_exist(self, key: str, now: float) -> bool:
        """Whether a fresh row for ``key`` may be on disk (False: it surely is not)."""
        if not self.complete:
            return True
        return self.expiry.get(hash(key), 0.0) > now

    def _prune(self, now: float) -> None:
        """Drop expired keys; give up (incomplete) unless that freed half the room."""
        self.expiry = {h: at for h, at in self.expiry.items() if at > now}
        if len(self.expiry) > self.limit // 2:
            logger.info("more than %d fresh cache keys: every submit looks on disk", self.limit // 2)
            self.expiry = {}
            self.complete = False
