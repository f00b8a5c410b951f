"""Finished jobs and cached reports in diskcache: str keys, bytes values, never pickle.

Keys: ``job:{id}`` → the job's JSON view and its result bytes in one row (``pack_finished``;
rows written before that kept the result apart under ``result:{id}``, still read),
``key:{cache_key}`` → the id whose fresh result answers that cache key, ``spec:{id}`` →
what a retry of a failed or cancelled job needs (``broker.retry``). Only the broker
writes (``ResultStore``), so it knows which cache keys exist (``broker.fresh_keys``) and
skips the disk for the others; the web server reads the SQLite file read-only
(``ResultReader``) for the cache-hit fast path.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import stat
import time
from collections.abc import Iterable
from typing import Any, Final

import diskcache  # type: ignore[import-untyped]
from diskcache.core import MODE_BINARY, MODE_PICKLE, MODE_RAW  # type: ignore[import-untyped]

from broker.effects import StoreResult
from broker.errors import UnsafeStoredData
from broker.fresh_keys import DEFAULT_LIMIT as DEFAULT_KEY_LIMIT
from broker.fresh_keys import FreshKeys

logger = logging.getLogger(__name__)

RESULT_CACHE_BYTES: Final = 2 * 1024**3
RESULTS_SUBDIR: Final = "results"
CACHE_FILE: Final = "cache.db"
ID_BATCH: Final = 500  # ids per query (SQLite allows 999 parameters on old builds)
VIEW_END: Final = b"\n"  # compact JSON never holds a raw newline: the view ends at the first one
HAS_RESULT: Final = b"R"
NO_RESULT: Final = b"-"
_COMPACT: Final = json.JSONEncoder(separators=(",", ":"))  # once: json.dumps with options makes one per call


class SafeDisk(diskcache.Disk):  # type: ignore[misc]
    """A diskcache ``Disk`` that stores only str/bytes and refuses to unpickle anything."""

    def put(self, key: Any) -> Any:
        """Refuse any key but str (other keys would be pickled)."""
        if not isinstance(key, str):
            raise TypeError(f"cache keys must be str (got {type(key).__name__})")
        return super().put(key)

    def get(self, key: Any, raw: bool) -> Any:
        """Refuse keys stored pickled."""
        if not raw:
            raise UnsafeStoredData("refusing to unpickle a cache key (tampered row?)")
        return super().get(key, raw)

    def store(self, value: Any, read: bool, key: Any = diskcache.core.UNKNOWN) -> Any:
        """Refuse any value but bytes."""
        if read or not isinstance(value, bytes):
            raise TypeError(f"cache values must be bytes (got {type(value).__name__})")
        return super().store(value, read, key=key)

    def fetch(self, mode: int, filename: str | None, value: Any, read: bool) -> Any:
        """Refuse rows whose mode says pickle."""
        if mode not in (MODE_RAW, MODE_BINARY):
            raise UnsafeStoredData(f"refusing to read a cache row of mode {mode} (tampered row?)")
        if filename is not None:
            inside(self._directory, filename)
        return super().fetch(mode, filename, value, read)


def prepare_data_dir(path: str) -> str:
    """Create the data dir (mode 0700) or check an existing one is not writable by others.

    Raises:
        UnsafeStoredData: the directory is group- or world-writable.
    """
    os.makedirs(path, mode=0o700, exist_ok=True)
    mode = stat.S_IMODE(os.stat(path).st_mode)
    if mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise UnsafeStoredData(f"data dir {path} is group- or world-writable (mode {mode:o}); chmod 700 it")
    return os.path.abspath(path)


class ResultStore:
    """The broker's read-write access to finished jobs."""

    def __init__(
        self, data_dir: str, size_limit: int = RESULT_CACHE_BYTES, key_limit: int = DEFAULT_KEY_LIMIT
    ) -> None:
        directory = os.path.join(prepare_data_dir(data_dir), RESULTS_SUBDIR)
        self.cache = diskcache.Cache(
            directory, disk=SafeDisk, size_limit=size_limit,
            eviction_policy="least-recently-stored", statistics=False,
            cull_limit=0,  # no culling inside each write: ``cull()`` runs on a timer instead
        )  # fmt: skip
        os.chmod(directory, 0o700)
        self.fresh = FreshKeys(key_limit)
        self._load_keys()

    def _load_keys(self) -> None:
        """Read every cache key's expiry, so that unknown keys need no lookup (bounded)."""
        query = "SELECT key, expire_time FROM Cache WHERE raw = 1 AND key >= 'key:' AND key < 'key;' LIMIT ?"
        try:
            with self._reading() as db:
                rows = db.execute(query, (self.fresh.limit + 1,)).fetchall()
        except sqlite3.Error as exc:
            logger.warning("could not read the cache keys (%s); every submit looks on disk", exc)
            return
        self.fresh.load(((str(key)[4:], expire_at) for key, expire_at in rows), time.time())

    def _reading(self) -> contextlib.closing[sqlite3.Connection]:
        path = os.path.join(self.cache.directory, CACHE_FILE)
        return contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True))

    def finished_ids(self, job_ids: list[str]) -> set[str]:
        """Which of these jobs (or groups) have a stored, unexpired final view."""
        found: set[str] = set()
        with self._reading() as db:
            for start in range(0, len(job_ids), ID_BATCH):
                keys = [f"job:{job_id}" for job_id in job_ids[start : start + ID_BATCH]]
                marks = ",".join("?" * len(keys))
                fresh = "expire_time IS NULL OR expire_time > ?"
                query = f"SELECT key FROM Cache WHERE raw = 1 AND key IN ({marks}) AND ({fresh})"
                found.update(str(key)[4:] for (key,) in db.execute(query, [*keys, time.time()]))
        return found

    def store_many(self, records: Iterable[StoreResult]) -> None:
        """Write finished jobs in one transaction: one row each, and its cache key if any."""
        now = time.time()
        records = list(records)  # read twice
        rows = [row for rec in records for row in _rows(rec)]
        with self.cache.transact():
            for key, value, expire_s in rows:
                self.cache.set(key, value, expire=expire_s)
        for rec in records:
            if rec.cache_key is not None:
                self.fresh.add(rec.cache_key, now + rec.ttl_s, now)  # only once the rows committed

    def cull(self) -> int:
        """Drop expired entries, then evict down to the size limit; return how many went."""
        culled = int(self.cache.cull())
        if not self.fresh.complete:
            self._load_keys()  # fewer keys now, perhaps: try to know them all again
        return culled

    def job(self, job_id: str) -> tuple[dict[str, Any], bytes | None] | None:
        """A finished job's view and result bytes, or None."""
        value = self.cache.get(f"job:{job_id}")
        if value is None:
            return None
        view, result = unpack_finished(value)
        if isinstance(result, Legacy):
            return view, self.cache.get(f"result:{job_id}")
        return view, result

    def job_for_key(self, cache_key: str) -> str | None:
        """The job id cached under ``cache_key`` while fresh."""
        if not self.fresh.may_exist(cache_key, time.time()):
            return None
        value = self.cache.get(f"key:{cache_key}")
        return value.decode() if value is not None else None

    def retry_spec(self, job_id: str) -> dict[str, Any] | None:
        """A finished job's retry spec; ``{"state"}`` alone for a done one; None if unknown."""
        spec = self.cache.get(f"spec:{job_id}")
        if spec is not None:
            return dict(json.loads(spec))
        stored = self.job(job_id)
        return None if stored is None else {"state": stored[0].get("state")}

    def close(self) -> None:
        """Close the cache's database connection."""
        self.cache.close()


class ResultReader:
    """Read-only access for other processes on the same box (the web server)."""

    def __init__(self, data_dir: str) -> None:
        self.directory = os.path.join(os.path.abspath(data_dir), RESULTS_SUBDIR)
        self._db: sqlite3.Connection | None = None

    def _connection(self) -> sqlite3.Connection | None:
        if self._db is None:
            path = os.path.join(self.directory, CACHE_FILE)
            if not os.path.exists(path):
                return None
            self._db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
        return self._db

    def _get(self, key: str) -> bytes | None:
        db = self._connection()
        if db is None:
            return None
        row = db.execute(
            "SELECT mode, filename, value, expire_time FROM Cache WHERE key = ? AND raw = 1",
            (key,),
        ).fetchone()
        if row is None or (row[3] is not None and row[3] < time.time()):
            return None
        return self._value(*row[:3])

    def _value(self, mode: int, filename: str | None, value: Any) -> bytes:
        if mode == MODE_RAW:
            return bytes(value)
        if mode == MODE_BINARY and filename is not None:
            with open(inside(self.directory, filename), "rb") as reader:
                return reader.read()
        kind = "pickled" if mode == MODE_PICKLE else f"mode {mode}"
        raise UnsafeStoredData(f"refusing to read a {kind} cache row (tampered row?)")

    def job(self, job_id: str) -> tuple[dict[str, Any], bytes | None] | None:
        """A finished job's view and result bytes, or None."""
        value = self._get(f"job:{job_id}")
        if value is None:
            return None
        view, result = unpack_finished(value)
        if isinstance(result, Legacy):
            return view, self._get(f"result:{job_id}")
        return view, result

    def job_for_key(self, cache_key: str) -> str | None:
        """The job id cached under ``cache_key`` while fresh."""
        value = self._get(f"key:{cache_key}")
        return value.decode() if value is not None else None

    def close(self) -> None:
        """Close the read-only connection."""
        if self._db is not None:
            self._db.close()
            self._db = None


def inside(directory: str, filename: str) -> str:
    """The path of a cache file, refusing names that escape the cache directory."""
    base = os.path.realpath(directory)
    path = os.path.realpath(os.path.join(base, filename))
    if os.path.commonpath([base, path]) != base:
        raise UnsafeStoredData(f"refusing a cache file outside {base} (tampered row?)")
    return path


def _rows(rec: StoreResult) -> list[tuple[str, bytes, float]]:
    """The cache rows of one finished job: key, value, seconds to expiry."""
    rows = [(f"job:{rec.job_id}", pack_finished(rec.view, rec.result, rec.view_json), rec.retention_s)]
    if rec.cache_key is not None:
        rows.append((f"key:{rec.cache_key}", rec.job_id.encode(), rec.ttl_s))
    if rec.spec is not None:
        rows.append((f"spec:{rec.job_id}", _dump(rec.spec), rec.retention_s))
    return rows


class Legacy:
    """The result of a row written before views and results shared one: under ``result:{id}``."""


LEGACY: Final = Legacy()


def pack_finished(view: dict[str, Any], result: bytes | None, view_json: bytes | None = None) -> bytes:
    """One row for a finished job: its compact JSON view (``view_json`` if already encoded),
    a newline, then ``R`` + result or ``-``."""
    head = _dump(view) if view_json is None else view_json
    return head + VIEW_END + (NO_RESULT if result is None else HAS_RESULT + result)


def unpack_finished(value: bytes) -> tuple[dict[str, Any], bytes | None | Legacy]:
    """A ``job:`` row's view and result (``LEGACY``: an older row, its result kept apart).

    Raises:
        UnsafeStoredData: the part after the view is neither ``R…`` nor ``-``.
    """
    head, found, tail = value.partition(VIEW_END)
    view = json.loads(head)
    if not found:
        return view, LEGACY
    if tail == NO_RESULT:
        return view, None
    if tail[:1] != HAS_RESULT:
        raise UnsafeStoredData("refusing a job row with an unknown result part (tampered row?)")
    return view, tail[1:]


def _dump(value: dict[str, Any]) -> bytes:
    return _COMPACT.encode(value).encode()
