"""Pure tests of the job log: the broker's bounds, the worker's rate limit and batches, the core path."""

from __future__ import annotations

from typing import Any

from test_core import C1, W1, Harness, assert_sent

from broker import joblog
from broker import protocol as p
from broker.effects import Publish
from workers import logbuffer
from workers.context import Job


def published(effects: list[Any]) -> list[p.Event]:
    messages = [p.decode(effect.frames) for effect in effects if isinstance(effect, Publish)]
    return [msg for msg in messages if isinstance(msg, p.Event)]


def test_lines_are_cut_to_the_limit_with_a_marker() -> None:
    line = joblog.clip_line("x" * 5000)
    assert len(line) == joblog.MAX_LINE_CHARS and line.endswith(joblog.TRUNCATED_MARK)
    assert joblog.clip_line("short") == "short"


def test_append_keeps_the_newest_lines_and_counts_all() -> None:
    extra: dict[str, Any] = {}
    for n in range(250):
        assert joblog.append(extra, [f"line {n}"]) == [f"line {n}"]
    assert len(extra["log"]) == joblog.MAX_LOG_LINES and extra["log_count"] == 250
    assert extra["log"][0] == "line 50" and extra["log"][-1] == "line 249"


def test_append_bounds_the_log_in_bytes() -> None:
    extra: dict[str, Any] = {}
    new = joblog.append(extra, ["\u2603" * 1000] * 20)  # 6 bytes a char once JSON-escaped
    assert sum(joblog.line_bytes(line) for line in extra["log"]) <= joblog.MAX_LOG_BYTES
    assert new == extra["log"] and 0 < len(new) < 20
    assert extra["log_count"] == 20  # indexes stay right: the first kept is line 20 - len(log)


def test_append_ignores_lines_past_the_per_message_bound() -> None:
    extra: dict[str, Any] = {}
    joblog.append(extra, ["x"] * (joblog.MAX_LINES_PER_MESSAGE + 50))
    assert extra["log_count"] == joblog.MAX_LINES_PER_MESSAGE


def test_rate_limit_drops_then_marks() -> None:
    buffer = logbuffer.LogBuffer(now=0.0)
    for n in range(logbuffer.LOG_BURST + 30):
        buffer.add(f"l{n}", now=0.0)
    assert len(buffer.pending) == logbuffer.LOG_BURST and buffer.dropped == 30
    buffer.add("after a second", now=1.0)
    assert buffer.pending[-2:] == ["… 30 lines dropped (over 20 lines/s)", "after a second"]


def test_final_take_reports_dropped_lines() -> None:
    buffer = logbuffer.LogBuffer(now=0.0)
    for n in range(logbuffer.LOG_BURST + 3):
        buffer.add(f"l{n}", now=0.0)
    batches = buffer.take(now=0.0, final=True)
    assert batches[-1][-1].startswith("… 3 lines dropped")


def test_batches_respect_line_and_byte_bounds() -> None:
    buffer = logbuffer.LogBuffer(now=0.0)
    buffer.tokens = 10_000.0
    buffer.pending = ["y" * 999] * 150
    batches = buffer.take(now=0.0)
    assert sum(len(batch) for batch in batches) == 150
    for batch in batches:
        assert len(batch) <= logbuffer.MAX_BATCH_LINES
        assert sum(joblog.line_bytes(line) for line in batch) <= logbuffer.MAX_BATCH_BYTES


def test_job_log_batches_by_time_and_flush_sends_the_rest() -> None:
    now = [0.0]
    sent: list[list[str]] = []
    job = Job("j" * 22, 1, clock=lambda: now[0], log_sink=sent.append)
    job.log("first")  # after a quiet spell: at once
    job.log("second")  # within the interval: held
    assert sent == [["first"]]
    now[0] = 0.05
    job.progress(1, 2)  # progress publishes (first call) and takes the held lines along
    assert sent == [["first"], ["second"]]
    job.log("third")
    job.flush()
    assert sent[-1] == ["third"]


def test_job_log_refuses_non_text() -> None:
    job = Job("j" * 22, 1, log_sink=lambda lines: None)
    try:
        job.log(42)  # type: ignore[arg-type]
    except TypeError as exc:
        assert "must be a str" in str(exc)
    else:
        raise AssertionError("log(42) was accepted")


def running_job(h: Harness) -> str:
    h.ready(W1, 0.0, tasks=("echo",))
    return h.submit_id(C1, 0.0)


def test_core_keeps_lines_and_publishes_only_the_new_ones() -> None:
    h = Harness()
    job_id = running_job(h)
    events = published(h.worker(W1, p.Log(id=job_id, attempt=1, lines=["a", "b"]), 1.0))
    assert [(e.extra or {}).get("log") for e in events] == [["a", "b"]]
    events = published(h.worker(W1, p.Log(id=job_id, attempt=1, lines=["c"]), 1.1))
    assert events[0].extra == {"log": ["c"], "log_count": 3}
    assert h.status(job_id, 1.2).job["log"] == ["a", "b", "c"]


def test_core_final_event_and_stored_view_carry_the_whole_log() -> None:
    h = Harness()
    job_id = running_job(h)
    h.worker(W1, p.Log(id=job_id, attempt=1, lines=["one", "two"]), 1.0)
    events = published(h.worker(W1, p.Done(id=job_id, attempt=1, result=b"{}"), 2.0))
    final = [e for e in events if e.id == job_id][-1]
    assert final.state == "done" and final.extra == {"log": ["one", "two"], "log_count": 2}
    assert h.results.jobs[job_id][0]["log"] == ["one", "two"]


def test_core_drops_lines_from_a_stale_attempt_or_another_worker() -> None:
    h = Harness()
    job_id = running_job(h)
    h.ready(b"worker-x", 0.5, tasks=("echo",))
    for peer, attempt in ((W1, 2), (b"worker-x", 1)):
        assert published(h.worker(peer, p.Log(id=job_id, attempt=attempt, lines=["no"]), 1.0)) == []
    assert "log" not in h.status(job_id, 1.1).job
    assert h.core.counters["stale_messages"] == 2
    assert_sent(h.client(C1, p.Stats(req=99), 1.2), C1, p.Counters)  # still serving
