"""``broker.journal`` on a real SQLite file in a temp dir: one transaction per turn, last record wins."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from helpers import ReadyProcess

from broker.client import Client
from broker.effects import StoreResult
from broker.journal import JobJournal
from broker.results import ResultStore


@pytest.fixture
def journal() -> Iterator[JobJournal]:
    directory = tempfile.mkdtemp(prefix="jc-")
    opened = JobJournal(directory)
    yield opened
    opened.close()
    shutil.rmtree(directory, ignore_errors=True)


def put(job_id: str, state: str = "queued", attempts: int = 0) -> dict[str, Any]:
    return {"op": "put", "job": {"id": job_id, "state": state, "attempts": attempts}}


def end(job_id: str) -> dict[str, Any]:
    return {"op": "end", "id": job_id}


def by_id(journal: JobJournal) -> dict[str, dict[str, Any]]:
    return {record["id"]: record for record in journal.replay()}


def test_puts_and_ends_across_turns(journal: JobJournal) -> None:
    journal.apply([put("a"), put("b")])
    journal.apply([put("a", "running", 1), end("b")])
    assert by_id(journal) == {"a": {"id": "a", "state": "running", "attempts": 1}}


def test_only_each_jobs_last_record_in_a_turn_counts(journal: JobJournal) -> None:
    journal.apply([put("gone")])
    journal.apply([
        put("a"), put("a", "running", 1),  # submitted and assigned in one turn
        put("b"), end("b"),  # submitted and finished in one turn: never journaled
        end("gone"), put("gone", "queued", 2),  # ended, then put again: the put wins
        {"op": "meta", "key": "paused", "value": ["x"]}, {"op": "meta", "key": "paused", "value": []},
    ])  # fmt: skip
    assert by_id(journal) == {
        "a": {"id": "a", "state": "running", "attempts": 1},
        "gone": {"id": "gone", "state": "queued", "attempts": 2},
    }
    assert journal.replay_meta() == {"paused": []}


def test_a_bad_record_is_left_out_and_the_rest_is_written(journal: JobJournal) -> None:
    journal.apply([put("a"), put("c")])
    journal.apply([end("a"), {"op": "put", "job": {"id": "b", "bad": object()}}, put("c", "running", 1)])
    assert {r["id"]: r["state"] for r in journal.replay()} == {"c": "running"}
    journal.apply([end("c")])  # the journal still takes writes
    assert journal.replay() == []


def other_view(journal: JobJournal) -> JobJournal:
    """The same journal file through a second connection: what a restart would read."""
    return JobJournal(os.path.dirname(journal.path))


def test_updates_and_ends_wait_for_the_next_write(journal: JobJournal) -> None:
    journal.apply([put("a"), put("b")], now=1.0)  # new jobs: written at once
    journal.apply([put("a", "running", 1), end("b")], now=2.0)  # these may wait
    reader = other_view(journal)
    assert {r["id"]: r["state"] for r in reader.replay()} == {"a": "queued", "b": "queued"}
    assert journal.next_flush() == pytest.approx(2.05)
    journal.apply([put("c")], now=2.01)  # a new job carries what waits
    assert {r["id"]: r["state"] for r in reader.replay()} == {"a": "running", "c": "queued"}
    assert journal.next_flush() is None
    reader.close()


def test_flush_and_close_write_what_waits(journal: JobJournal) -> None:
    journal.apply([put("a"), put("b")], now=1.0)
    journal.apply([end("a")], now=2.0)
    journal.flush(3.0)
    reader = other_view(journal)
    assert list(by_id(reader)) == ["b"]
    journal.apply([end("b")], now=4.0)
    journal.close()
    assert reader.replay() == []
    reader.close()
    journal.db = other_view(journal).db  # for the fixture's close


def test_a_job_whose_end_was_not_written_is_not_run_again(
    start_broker: Callable[..., ReadyProcess], base_url: str, tmpdir_short: str
) -> None:
    broker = start_broker()
    with Client(base_url, timeout_s=10) as client:
        job_id = client.submit("echo", {"x": 1}).id  # no workers: it stays queued
    broker.signal(signal.SIGTERM)
    assert broker.wait(timeout_s=10) == 0
    data = os.path.join(tmpdir_short, "data")
    store = ResultStore(data)  # as if it finished and the broker died before writing its end
    view = {"id": job_id, "state": "done", "task": "echo", "seq": 9}
    store.store_many([StoreResult(job_id, view, b'{"x":1}', 3600.0, None, 0.0)])
    store.close()
    start_broker()
    with Client(base_url, timeout_s=10) as client:
        assert client.status(job_id)["state"] == "done"
        assert client.stats()["queued"] == 0
    journal = JobJournal(data)
    assert journal.replay() == []
    journal.close()


def test_a_journal_made_with_larger_pages_is_still_read_and_written() -> None:
    directory = tempfile.mkdtemp(prefix="jc-")
    older = sqlite3.connect(os.path.join(directory, "journal.sqlite3"), isolation_level=None)
    older.execute("PRAGMA page_size=4096")
    older.execute("PRAGMA journal_mode=WAL")
    older.execute("CREATE TABLE jobs (id TEXT PRIMARY KEY, record TEXT NOT NULL)")
    older.execute("INSERT INTO jobs VALUES ('a', ?)", (json.dumps(put("a")["job"]),))
    older.close()
    journal = JobJournal(directory)
    assert journal.db.execute("PRAGMA page_size").fetchone() == (4096,)  # kept as it was
    assert list(by_id(journal)) == ["a"]
    journal.apply([end("a"), put("b")])
    reader = other_view(journal)
    assert list(by_id(reader)) == ["b"]
    reader.close()
    journal.close()
    shutil.rmtree(directory, ignore_errors=True)
