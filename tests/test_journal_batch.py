"""``broker.journal_batch``: which records are written at once and which may wait (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from broker.journal_batch import RETRY_AFTER_S, JournalBatch


def put(job_id: str, attempts: int | None = 0, **fields: Any) -> dict[str, Any]:
    job = {"id": job_id, **fields} if attempts is None else {"id": job_id, "attempts": attempts, **fields}
    return {"op": "put", "job": job}


def end(job_id: str) -> dict[str, Any]:
    return {"op": "end", "id": job_id}


def test_a_new_job_is_written_at_once_with_what_waits() -> None:
    batch = JournalBatch(flush_after_s=0.05)
    assert batch.add([put("a", 1), end("b")], now=10.0) == (False, {})
    assert batch.flush_at == 10.05
    urgent, meta = batch.add([put("c", 0)], now=10.01)  # a submit: durable before its ack
    assert urgent and meta == {}
    assert batch.rows() == ([("a", '{"id":"a","attempts":1}'), ("c", '{"id":"c","attempts":0}')], [("b",)])


def test_submitted_and_assigned_in_one_turn_is_still_new() -> None:
    batch = JournalBatch()
    urgent, _ = batch.add([put("a", 0, state="queued"), put("a", 1, state="running")], now=0.0)
    assert urgent
    assert batch.rows() == ([("a", '{"id":"a","attempts":1,"state":"running"}')], [])


def test_groups_and_meta_are_written_at_once() -> None:
    assert JournalBatch().add([put("g", None, kind="group")], now=0.0)[0]
    urgent, meta = JournalBatch().add([{"op": "meta", "key": "paused", "value": ["x"]}], now=0.0)
    assert urgent and meta == {"paused": '["x"]'}


def test_updates_and_ends_wait_until_due() -> None:
    batch = JournalBatch(flush_after_s=0.05)
    batch.add([put("a", 1)], now=1.0)
    batch.add([put("a", 2), end("b")], now=1.04)  # the first one's deadline holds
    assert not batch.due(1.049)
    assert batch.due(1.05)
    assert batch.rows() == ([("a", '{"id":"a","attempts":2}')], [("b",)])
    batch.written()
    assert batch.rows() == ([], []) and batch.flush_at is None and not batch.due(99.0)


def test_too_many_waiting_are_written() -> None:
    batch = JournalBatch(max_waiting=3)
    assert not batch.add([end("a"), end("b")], now=0.0)[0]
    assert batch.add([end("c")], now=0.0)[0]


def test_a_failed_write_keeps_the_records_and_retries_later() -> None:
    batch = JournalBatch()
    batch.add([end("a")], now=5.0)
    batch.failed(now=5.1)
    assert batch.waiting == {"a": None}
    assert batch.flush_at == 5.1 + RETRY_AFTER_S


def test_a_record_with_no_json_form_is_logged_and_left_out_of_the_write(
    caplog: pytest.LogCaptureFixture,
) -> None:
    batch = JournalBatch()
    batch.add([end("a"), put("b", 1, bad=object()), put("c", 1)], now=0.0)
    assert batch.rows() == ([("c", '{"id":"c","attempts":1}')], [("a",)])
    assert "job b has a record with no JSON form" in caplog.text


def test_a_record_replaced_while_it_waits_is_never_encoded() -> None:
    batch = JournalBatch()
    urgent, _ = batch.add([put("a", 0, bad=object()), put("a", 1, state="running")], now=0.0)
    assert urgent  # the first record was a submit, though never encoded: it can never be seen
    batch.add([put("b", 1, bad=object())], now=0.01)  # an assignment...
    batch.add([end("b")], now=0.02)  # ...that its end replaces before the flush
    assert batch.rows() == ([("a", '{"id":"a","attempts":1,"state":"running"}')], [("b",)])
