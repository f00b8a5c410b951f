"""Watch the data dir's free space and write failures, so submits are refused while it is full.

A full disk must not crash the broker or corrupt its journal: while writes fail, or free
space is under ``JOBCAST_MIN_FREE_MB`` (64 MiB by default), the core refuses submissions
with a ``storage_full`` error and keeps serving status reads. A probe write clears it.
"""

from __future__ import annotations

import logging
import os
from typing import Final, Protocol

logger = logging.getLogger(__name__)

CHECK_INTERVAL_S: Final = 1.0
DEFAULT_MIN_FREE_MB: Final = 64


class Probe(Protocol):
    """Something that can prove the data dir takes writes (the journal)."""

    def probe(self) -> None:
        """Write and remove a row; raise if that fails."""


class StorageGuard:
    """Says whether the data dir can take writes, checked at most once a second."""

    def __init__(self, data_dir: str, probe: Probe, min_free_bytes: int | None = None) -> None:
        self.data_dir = data_dir
        self.probe = probe
        if min_free_bytes is None:
            min_free_bytes = int(os.environ.get("JOBCAST_MIN_FREE_MB", DEFAULT_MIN_FREE_MB)) * 1024**2
        self.min_free_bytes = min_free_bytes
        self.error: str | None = None
        self.write_failed = False
        self.next_check = 0.0

    def on_write_error(self, exc: BaseException) -> str:
        """Record a failed write; return the error submitters will see."""
        self.write_failed = True
        self.error = f"the data dir {self.data_dir} cannot be written ({exc}); submissions are paused"
        logger.error("%s", self.error)
        return self.error

    def check(self, now: float) -> str | None:
        """The current storage error, or None when submissions may proceed."""
        if now < self.next_check:
            return self.error
        self.next_check = now + CHECK_INTERVAL_S
        stats = os.statvfs(self.data_dir)
        free = stats.f_bavail * stats.f_frsize
        if free < self.min_free_bytes:
            need_mib = self.min_free_bytes // 1024**2
            self.error = (
                f"the data dir {self.data_dir} has {free // 1024**2} MiB free "
                f"(at least {need_mib} MiB needed); submissions are paused"
            )
            return self.error
        if self.write_failed:
            try:
                self.probe.probe()
            except Exception as exc:  # still unwritable: keep refusing
                logger.debug("storage probe failed: %s", exc)
                return self.error
            self.write_failed = False
        if self.error is not None:
            logger.info("the data dir %s takes writes again; submissions resume", self.data_dir)
        self.error = None
        return None
