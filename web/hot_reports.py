"""Hot cached reports: a rendered page kept for about a second per URL and scope (pure).

A popular report asked for thousands of times a second would parse its query, read the
result cache and fill the page template on every request. This keeps the finished page,
encoded, under the request's raw query string (so a hit parses nothing) for at most
``HOT_FOR_S`` and never past the cached result's own expiry (``finished_at + ttl_s``),
so a report that expires stops being served as it would without this; a forced re-run
shows up within ``HOT_FOR_S``. Bounded in pages and in bytes (one report can be asked
for under many spellings of its query): the least recently used page goes first.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Final

HOT_FOR_S: Final = 1.0
MAX_HOT_PAGES: Final = 1024
MAX_HOT_BYTES: Final = 64 * 1024**2

HotKey = tuple[str, str, bytes, str]  # mount path, task, raw query string, scope


class HotReports:
    """Rendered report pages with a short, expiry-capped life."""

    def __init__(
        self, capacity: int = MAX_HOT_PAGES, hot_for_s: float = HOT_FOR_S, max_bytes: int = MAX_HOT_BYTES
    ) -> None:
        self.capacity = capacity
        self.hot_for_s = hot_for_s
        self.max_bytes = max_bytes
        self.bytes = 0  # the pages' total size
        self._pages: OrderedDict[HotKey, tuple[float, bytes]] = OrderedDict()

    def get(self, key: HotKey, now_wall: float) -> bytes | None:
        """The page for ``key`` while it is hot, else None (and it is dropped)."""
        entry = self._pages.get(key)
        if entry is None:
            return None
        if now_wall >= entry[0]:
            self._drop(key)
            return None
        self._pages.move_to_end(key)
        return entry[1]

    def put(self, key: HotKey, page: bytes, view: dict[str, Any], now_wall: float) -> None:
        """Keep ``page`` (rendered from the job ``view``) until it cools or its result expires."""
        until = now_wall + self.hot_for_s
        ttl_s, finished_at = view.get("ttl_s"), view.get("finished_at")
        if isinstance(ttl_s, int | float) and isinstance(finished_at, int | float):
            until = min(until, finished_at + ttl_s)
        if until <= now_wall or len(page) > self.max_bytes:
            return
        if key in self._pages:
            self._drop(key)
        self._pages[key] = (until, page)
        self.bytes += len(page)
        while len(self._pages) > self.capacity or self.bytes > self.max_bytes:
            self._drop(next(iter(self._pages)))

    def _drop(self, key: HotKey) -> None:
        self.bytes -= len(self._pages.pop(key)[1])
