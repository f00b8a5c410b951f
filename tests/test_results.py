"""The result cache on a real diskcache in a temp dir: bytes only, expiry, read-only reader.

No sockets. This is the one test module that imports pickle: to forge a tampered row.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import shutil
import sqlite3
import stat
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from typing import Any

import diskcache  # type: ignore[import-untyped]
import pytest
from helpers import wait_for

from broker.effects import StoreResult
from broker.errors import UnsafeStoredData
from broker.protocol import encode_view
from broker.results import (
    RESULTS_SUBDIR,
    ResultReader,
    ResultStore,
    SafeDisk,
    pack_finished,
    prepare_data_dir,
    unpack_finished,
)

JOB_ID = "AbCdEfGhIjKlMnOpQrStUv"
KEY = "f" * 64


@pytest.fixture
def data_dir() -> Iterator[str]:
    parent = tempfile.mkdtemp(prefix="jc-")
    yield os.path.join(parent, "data")
    shutil.rmtree(parent, ignore_errors=True)


@pytest.fixture
def store(data_dir: str) -> Iterator[ResultStore]:
    opened = ResultStore(data_dir)
    yield opened
    opened.close()


@pytest.fixture
def reader(data_dir: str) -> Iterator[ResultReader]:
    opened = ResultReader(data_dir)
    yield opened
    opened.close()


def record(
    job_id: str = JOB_ID,
    result: bytes | None = b'{"total":42}',
    *,
    retention_s: float = 3600.0,
    cache_key: str | None = KEY,
    ttl_s: float = 86400.0,
) -> StoreResult:
    view = {"id": job_id, "state": "done", "done": 3, "total": 3, "seq": 4}
    return StoreResult(job_id, view, result, retention_s, cache_key, ttl_s)


def db_path(data_dir: str) -> str:
    return os.path.join(data_dir, RESULTS_SUBDIR, "cache.db")


def store_legacy(store: ResultStore, rec: StoreResult) -> None:
    """Write a finished job as brokers before the one-row format did: view and result apart."""
    store.cache.set(f"job:{rec.job_id}", json.dumps(rec.view).encode(), expire=rec.retention_s)
    if rec.result is not None:
        store.cache.set(f"result:{rec.job_id}", rec.result, expire=rec.retention_s)
    if rec.cache_key is not None:
        store.cache.set(f"key:{rec.cache_key}", rec.job_id.encode(), expire=rec.ttl_s)


# --- writing and reading -------------------------------------------------------------------


def test_store_then_read_back(store: ResultStore, reader: ResultReader) -> None:
    store.store_many([record(), record("B" * 22, None, cache_key=None)])
    for source in (store, reader):
        assert source.job(JOB_ID) == (record().view, b'{"total":42}')
        assert source.job_for_key(KEY) == JOB_ID
        assert source.job("B" * 22) == (record("B" * 22).view, None)
        assert source.job("nope") is None
        assert source.job_for_key("0" * 64) is None


def test_one_row_per_finished_job(store: ResultStore, data_dir: str) -> None:
    store.store_many([record(), record("B" * 22, None, cache_key=None)])
    with sqlite3.connect(db_path(data_dir)) as db:
        keys = sorted(row[0] for row in db.execute("SELECT key FROM Cache"))
    db.close()
    assert keys == sorted([f"job:{JOB_ID}", f"job:{'B' * 22}", f"key:{KEY}"])


@pytest.mark.parametrize(
    "result", [b'{"total":42}', None, b"", b"\n-R\n"], ids=["json", "none", "empty", "seps"]
)
def test_pack_finished_round_trips(result: bytes | None) -> None:
    view = {"id": JOB_ID, "message": "line one\nline two", "state": "done"}
    assert unpack_finished(pack_finished(view, result)) == (view, result)


def test_a_view_encoded_by_the_core_packs_as_the_view_itself() -> None:
    view = {"id": JOB_ID, "message": "Summé\n", "state": "done", "eta_s": 0.0}
    assert pack_finished(view, b"{}", encode_view(view)) == pack_finished(view, b"{}")


def test_a_job_row_with_an_unknown_result_part_is_refused() -> None:
    with pytest.raises(UnsafeStoredData, match="unknown result part"):
        unpack_finished(b'{"id":"x"}\nX{}')


def test_rows_written_before_the_one_row_format_are_read(
    store: ResultStore, reader: ResultReader, data_dir: str
) -> None:
    store_legacy(store, record())
    store_legacy(store, record("B" * 22, None, cache_key=None))
    store.close()
    reopened = ResultStore(data_dir)  # loads the key row written the old way too
    for source in (reopened, reader):
        assert source.job(JOB_ID) == (record().view, b'{"total":42}')
        assert source.job("B" * 22) == (record("B" * 22).view, None)
        assert source.job_for_key(KEY) == JOB_ID
    reopened.close()


def test_large_result_stored_in_a_file(store: ResultStore, reader: ResultReader) -> None:
    big = json.dumps({"rows": ["x" * 100] * 2000}).encode()  # past diskcache's 32 KiB inline limit
    store.store_many([record(result=big)])
    assert store.job(JOB_ID) == (record().view, big)
    assert reader.job(JOB_ID) == (record().view, big)


COLUMNS = "key, raw, expire_time - store_time, access_count, tag, size, mode, filename, value"


def rows_and_totals(cache_dir: str) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Every Cache row (expiry relative to its store time) and diskcache's count and size."""
    with contextlib.closing(sqlite3.connect(os.path.join(cache_dir, "cache.db"))) as db:
        rows = db.execute(f"SELECT {COLUMNS} FROM Cache ORDER BY key").fetchall()
        totals = db.execute("SELECT key, value FROM Settings WHERE key IN ('count', 'size')").fetchall()
    return [(*row[:2], round(row[2], 3), *row[3:]) for row in rows], sorted(totals)


def test_store_many_writes_a_row_per_job_and_cache_key_with_their_expiries(
    store: ResultStore, data_dir: str
) -> None:
    """The rows equal those written key by key (same expiries, count and size); a result
    that had a file of its own loses it when replaced."""
    big = json.dumps({"rows": ["x" * 100] * 2000}).encode()
    first = [record(), record("B" * 22, big, cache_key=None)]
    again = [record(retention_s=60.0, ttl_s=30.0), record("B" * 22, b"{}", cache_key=None)]
    store.store_many(first)
    store.store_many(again)  # over a row in the table, and over one whose value was in a file
    by_set = diskcache.Cache(os.path.join(data_dir, "by_set"), disk=SafeDisk, cull_limit=0)
    for batch in (first, again):
        for rec in batch:
            view = pack_finished(rec.view, rec.result)
            by_set.set(f"job:{rec.job_id}", view, expire=rec.retention_s)
            if rec.cache_key is not None:
                by_set.set(f"key:{rec.cache_key}", rec.job_id.encode(), expire=rec.ttl_s)
    by_set.close()
    assert rows_and_totals(store.cache.directory) == rows_and_totals(by_set.directory)
    assert store.job("B" * 22) == (record("B" * 22).view, b"{}")
    files = [name for _, _, names in os.walk(store.cache.directory) for name in names]
    assert not [name for name in files if name.endswith(".val")]  # the big result's file went


def test_a_failed_write_leaves_no_row_and_no_fresh_key(store: ResultStore, data_dir: str) -> None:
    bad = StoreResult("C" * 22, {"id": "C" * 22, "bad": {1, 2}}, None, 60.0, "e" * 64, 60.0)
    with pytest.raises(TypeError):
        store.store_many([record(), bad])
    assert store.job(JOB_ID) is None
    assert store.job_for_key(KEY) is None and not store.fresh.may_exist(KEY, time.time())


def test_reader_before_anything_was_stored(data_dir: str) -> None:
    reader = ResultReader(data_dir)
    assert reader.job(JOB_ID) is None
    assert reader.job_for_key(KEY) is None
    assert not os.path.exists(data_dir)  # a reader never creates anything
    reader.close()


def test_reader_is_read_only(store: ResultStore, reader: ResultReader) -> None:
    store.store_many([record()])
    assert reader.job(JOB_ID) is not None
    connection = reader._connection()
    assert connection is not None
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        connection.execute("DELETE FROM Cache")


READER_SCRIPT = textwrap.dedent("""
    import json, sys
    from broker.results import ResultReader
    reader = ResultReader(sys.argv[1])
    found = reader.job(sys.argv[2])
    print(json.dumps({
        "view": found and found[0],
        "result": found and found[1] and found[1].decode(),
        "key": reader.job_for_key(sys.argv[3]),
    }))
    reader.close()
""")


def read_in_subprocess(data_dir: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", READER_SCRIPT, data_dir, JOB_ID, KEY],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def test_reader_in_another_process_while_the_writer_is_open(store: ResultStore, data_dir: str) -> None:
    store.store_many([record()])
    seen = read_in_subprocess(data_dir)
    assert seen == {"view": record().view, "result": '{"total":42}', "key": JOB_ID}


def test_reader_in_another_process_after_the_writer_closed(data_dir: str) -> None:
    writer = ResultStore(data_dir)
    writer.store_many([record()])
    writer.close()
    seen = read_in_subprocess(data_dir)
    assert seen["key"] == JOB_ID and seen["result"] == '{"total":42}'


# --- which cache keys exist (broker.fresh_keys) ------------------------------------------------


def test_cache_keys_are_known_again_after_a_restart(store: ResultStore, data_dir: str) -> None:
    store.store_many([record(), record("B" * 22, cache_key="b" * 64, ttl_s=0.01)])
    store.close()
    reopened = ResultStore(data_dir)
    assert reopened.fresh.complete
    assert reopened.job_for_key(KEY) == JOB_ID
    wait_for(lambda: reopened.job_for_key("b" * 64) is None, timeout_s=5)
    assert not reopened.fresh.may_exist("0" * 64, time.time())  # never written: no disk lookup
    assert reopened.job_for_key("0" * 64) is None
    reopened.close()


def test_past_the_key_limit_every_key_is_looked_up_on_disk(data_dir: str) -> None:
    store = ResultStore(data_dir, key_limit=2)
    store.store_many([record(f"{i}" * 22, cache_key=f"{i}" * 64) for i in range(4)])
    assert not store.fresh.complete
    assert [store.job_for_key(f"{i}" * 64) for i in range(4)] == [f"{i}" * 22 for i in range(4)]
    store.close()
    reopened = ResultStore(data_dir, key_limit=2)  # more rows on disk than the limit: unknown
    assert not reopened.fresh.complete
    assert reopened.job_for_key("3" * 64) == "3" * 22
    reopened.close()
    roomy = ResultStore(data_dir, key_limit=10)
    assert roomy.fresh.complete and roomy.job_for_key("3" * 64) == "3" * 22
    roomy.close()


# --- expiry ----------------------------------------------------------------------------------


def test_cache_key_expires_before_the_job_record(store: ResultStore, reader: ResultReader) -> None:
    store.store_many([record(ttl_s=0.05, retention_s=3600.0)])
    assert store.job_for_key(KEY) == JOB_ID
    wait_for(lambda: store.job_for_key(KEY) is None, timeout_s=5)
    wait_for(lambda: reader.job_for_key(KEY) is None, timeout_s=5)
    assert store.job(JOB_ID) is not None  # still readable by id
    assert reader.job(JOB_ID) is not None


def test_job_record_expires(store: ResultStore, reader: ResultReader) -> None:
    store.store_many([record(retention_s=0.5, cache_key=None)])
    assert store.job(JOB_ID) is not None and reader.job(JOB_ID) is not None  # stored, then gone
    wait_for(lambda: store.job(JOB_ID) is None, timeout_s=5)
    wait_for(lambda: reader.job(JOB_ID) is None, timeout_s=5)


def test_fresh_rows_do_not_expire_early(store: ResultStore, reader: ResultReader) -> None:
    store.store_many([record(ttl_s=3600.0)])
    store.store_many([record("C" * 22, retention_s=0.01, cache_key=None)])
    wait_for(lambda: store.job("C" * 22) is None, timeout_s=5)
    assert reader.job_for_key(KEY) == JOB_ID
    assert store.job(JOB_ID) is not None


# --- never pickle --------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["text", {"a": 1}, 3, None], ids=["str", "dict", "int", "none"])
def test_safe_disk_refuses_non_bytes_values(store: ResultStore, value: Any) -> None:
    with pytest.raises(TypeError, match="cache values must be bytes"):
        store.cache.set("job:x", value)
    store.cache.set("job:x", b"{}")
    assert store.cache.get("job:x") == b"{}"


@pytest.mark.parametrize("key", [("result", JOB_ID), 3, b"raw", 1.5], ids=["tuple", "int", "bytes", "float"])
def test_safe_disk_refuses_non_str_keys(store: ResultStore, key: Any) -> None:
    with pytest.raises(TypeError, match="cache keys must be str"):
        store.cache.set(key, b"x")
    assert store.cache.set("result:ok", b"x")


class Evil:
    """Unpickling this would create a directory: the proof that pickle ran."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.mkdir, (self.marker,))


@pytest.mark.parametrize("tampered", ["result", "job", "key"])
def test_tampered_pickle_row_is_refused(
    store: ResultStore, reader: ResultReader, data_dir: str, tampered: str
) -> None:
    if tampered == "result":  # only rows of the older format keep a result row
        store_legacy(store, record())
    else:
        store.store_many([record()])
    marker = os.path.join(os.path.dirname(data_dir), "pwned")
    key = f"key:{KEY}" if tampered == "key" else f"{tampered}:{JOB_ID}"
    with sqlite3.connect(db_path(data_dir)) as db:
        changed = db.execute(
            "UPDATE Cache SET mode = 4, value = ? WHERE key = ?", (pickle.dumps(Evil(marker)), key)
        ).rowcount
    db.close()
    assert changed == 1
    read = (lambda s: s.job_for_key(KEY)) if tampered == "key" else (lambda s: s.job(JOB_ID))
    with pytest.raises(UnsafeStoredData, match="tampered"):
        read(store)
    with pytest.raises(UnsafeStoredData, match="pickled"):
        read(reader)
    assert not os.path.exists(marker)


def test_tampered_key_column_is_refused(store: ResultStore, data_dir: str) -> None:
    store.store_many([record()])
    with sqlite3.connect(db_path(data_dir)) as db:
        db.execute(
            "UPDATE Cache SET raw = 0, key = ? WHERE key = ?",
            (pickle.dumps(("job", JOB_ID)), f"job:{JOB_ID}"),
        )
    db.close()
    assert store.job(JOB_ID) is None  # a str key never matches a pickled one
    with pytest.raises(UnsafeStoredData, match="unpickle"):
        list(store.cache.iterkeys())


# --- the data dir ------------------------------------------------------------------------------


def test_prepare_data_dir_creates_it_private(data_dir: str) -> None:
    path = prepare_data_dir(data_dir)
    assert path == os.path.abspath(data_dir)
    assert stat.S_IMODE(os.stat(data_dir).st_mode) == 0o700
    assert prepare_data_dir(data_dir) == path  # an existing private dir is fine


def test_result_store_dirs_are_private(store: ResultStore, data_dir: str) -> None:
    assert stat.S_IMODE(os.stat(os.path.join(data_dir, RESULTS_SUBDIR)).st_mode) == 0o700


@pytest.mark.parametrize("mode", [0o777, 0o770, 0o702])
def test_prepare_data_dir_refuses_a_writable_dir(data_dir: str, mode: int) -> None:
    os.mkdir(data_dir)
    os.chmod(data_dir, mode)
    with pytest.raises(UnsafeStoredData, match=f"group- or world-writable \\(mode {mode:o}\\)"):
        prepare_data_dir(data_dir)
    with pytest.raises(UnsafeStoredData):
        ResultStore(data_dir)
    os.chmod(data_dir, 0o700)
    assert prepare_data_dir(data_dir) == os.path.abspath(data_dir)


def test_a_file_name_escaping_the_cache_dir_is_refused(
    store: ResultStore, reader: ResultReader, data_dir: str
) -> None:
    big = json.dumps({"rows": ["x" * 100] * 2000}).encode()
    store.store_many([record(result=big)])
    with sqlite3.connect(db_path(data_dir)) as db:
        db.execute(
            "UPDATE Cache SET filename = ? WHERE key = ?",
            ("../../../../../../etc/hostname", f"job:{JOB_ID}"),
        )
    for source in (store, reader):
        with pytest.raises(UnsafeStoredData, match="outside"):
            source.job(JOB_ID)
    store.store_many([record("C" * 22, b"[1]", cache_key=None)])
    assert reader.job("C" * 22) == (record("C" * 22).view, b"[1]")
