"""Finished jobs and cached reports in diskcache: str keys, bytes values, never pickle.

Keys: ``job:{id}`` → the job's JSON view, ``result:{id}`` → its result bytes,
``key:{cache_key}`` → the id whose fresh result answers that cache key, ``spec:{id}`` →
what a retry of a failed or cancelled job needs (``broker.retry``). Only the broker
writes (``ResultStore``); the web server reads the SQLite file read-only
(``ResultReader``) for the cache-hit fast path.
"""

from __future__ import annotations

import json
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

RESULT_CACHE_BYTES: Final = 2 * 1024**3
RESULTS_SUBDIR: Final = "results"


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

    def __init__(self, data_dir: str, size_limit: int = RESULT_CACHE_BYTES) -> None:
        directory = os.path.join(prepare_data_dir(data_dir), RESULTS_SUBDIR)
        self.cache = diskcache.Cache(
            directory, disk=SafeDisk, size_limit=size_limit,
            eviction_policy="least-recently-stored", statistics=False,
            cull_limit=0,  # no culling inside each write: ``cull()`` runs on a timer instead
        )  # fmt: skip
        os.chmod(directory, 0o700)

    def store_many(self, records: Iterable[StoreResult]) -> None:
        """Write finished jobs in one transaction."""
        with self.cache.transact():
            for rec in records:
                self.cache.set(f"job:{rec.job_id}", _dump(rec.view), expire=rec.retention_s)
                if rec.result is not None:
                    self.cache.set(f"result:{rec.job_id}", rec.result, expire=rec.retention_s)
                if rec.cache_key is not None:
                    self.cache.set(f"key:{rec.cache_key}", rec.job_id.encode(), expire=rec.ttl_s)
                if rec.spec is not None:
                    self.cache.set(f"spec:{rec.job_id}", _dump(rec.spec), expire=rec.retention_s)

    def cull(self) -> int:
        """Drop expired entries, then evict down to the size limit; return how many went."""
        return int(self.cache.cull())

    def job(self, job_id: str) -> tuple[dict[str, Any], bytes | None] | None:
        """A finished job's view and result bytes, or None."""
        view = self.cache.get(f"job:{job_id}")
        if view is None:
            return None
        return json.loads(view), self.cache.get(f"result:{job_id}")

    def job_for_key(self, cache_key: str) -> str | None:
        """The job id cached under ``cache_key`` while fresh."""
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
            path = os.path.join(self.directory, "cache.db")
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
        view = self._get(f"job:{job_id}")
        if view is None:
            return None
        return json.loads(view), self._get(f"result:{job_id}")

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


def _dump(value: dict[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()
