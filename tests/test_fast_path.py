"""The web's fast path on real diskcache files: read when it can, ``None`` (ask the broker) when not.

A fake clock drives the back-off; the broker side is a real ``ResultStore`` in a temp dir.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterator

import pytest

from broker.effects import StoreResult
from broker.results import RESULTS_SUBDIR, ResultReader, ResultStore
from web.fast_path import RETRY_S, LocalResults

JOB_ID = "AbCdEfGhIjKlMnOpQrStUv"
KEY = "e" * 64


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def data_dir() -> Iterator[str]:
    parent = tempfile.mkdtemp(prefix="jc-")
    yield os.path.join(parent, "data")
    shutil.rmtree(parent, ignore_errors=True)


def store(data_dir: str, result: bytes) -> None:
    """What the broker does when a job ends: its view, result and cache key, on disk."""
    writer = ResultStore(data_dir)
    view = {"id": JOB_ID, "state": "done"}
    writer.store_many([StoreResult(JOB_ID, view, result, 3600.0, KEY, 3600.0)])
    writer.close()


def test_no_data_dir_on_this_host_means_ask_the_broker(
    data_dir: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="web.fast_path")
    local = LocalResults(data_dir)
    assert local.job_for_key(KEY) is None and local.job(JOB_ID) is None
    assert "cache hits come from the broker" in caplog.text
    store(data_dir, b'{"late":true}')  # the broker's box after all (the dir appears later)
    assert local.job_for_key(KEY) == JOB_ID


def test_a_readable_cache_is_the_fast_path(data_dir: str) -> None:
    store(data_dir, b'{"total":42}')
    local = LocalResults(data_dir)
    assert local.job_for_key(KEY) == JOB_ID
    assert local.job(JOB_ID) == ({"id": JOB_ID, "state": "done"}, b'{"total":42}')
    local.close()


def test_a_cache_that_is_not_a_database_is_left_alone_for_a_while(
    data_dir: str, caplog: pytest.LogCaptureFixture
) -> None:
    os.makedirs(os.path.join(data_dir, RESULTS_SUBDIR))
    with open(os.path.join(data_dir, RESULTS_SUBDIR, "cache.db"), "wb") as junk:
        junk.write(b"not sqlite at all" * 100)
    clock = FakeClock()
    local = LocalResults(data_dir, clock=clock)
    assert local.job_for_key(KEY) is None
    assert local.job_for_key(KEY) is None and local.job(JOB_ID) is None
    assert caplog.text.count("unreadable") == 1  # logged once, not once per request
    os.remove(os.path.join(data_dir, RESULTS_SUBDIR, "cache.db"))
    store(data_dir, b'{"fixed":true}')
    assert local.job_for_key(KEY) is None  # still backing off: the disk is not touched
    clock.now += RETRY_S + 1
    assert local.job_for_key(KEY) == JOB_ID  # tried again, and it reads now
    local.close()


def test_a_missing_result_file_is_not_a_500(data_dir: str) -> None:
    store(data_dir, b'"' + b"x" * 100_000 + b'"')  # large results live in files beside the db
    files = [os.path.join(root, name) for root, _, names in os.walk(os.path.join(data_dir, RESULTS_SUBDIR))
             for name in names if name.endswith(".val")]  # fmt: skip
    assert len(files) == 1
    os.remove(files[0])  # culled meanwhile, or a copy of the dir that lacks it
    plain = ResultReader(data_dir)
    with pytest.raises(FileNotFoundError):
        plain.job(JOB_ID)  # what the web's fast path used to let through
    plain.close()
    local = LocalResults(data_dir, clock=FakeClock())
    assert local.job_for_key(KEY) == JOB_ID
    assert local.job(JOB_ID) is None  # so the web asks the broker instead
