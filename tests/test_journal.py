"""``broker.journal`` on a real SQLite file in a temp dir: one transaction per turn, last record wins."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest

from broker.journal import JobJournal


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


def test_a_bad_record_changes_nothing(journal: JobJournal) -> None:
    journal.apply([put("a")])
    with pytest.raises(TypeError):
        journal.apply([end("a"), {"op": "put", "job": {"id": "b", "bad": object()}}])
    assert list(by_id(journal)) == ["a"]
    journal.apply([end("a")])  # the journal still takes writes
    assert journal.replay() == []
