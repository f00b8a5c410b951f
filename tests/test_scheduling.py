"""Pure tests of the queues: priority, FIFO, per-task selection, run_at, LRU, back-off."""

from __future__ import annotations

import pytest

from broker.protocol import Ready
from broker.scheduling import RETRY_BASE_S, RETRY_MAX_S, JobQueue, retry_delay_s
from broker.workforce import Workforce

NOW = 1_700_000_000.0


def always(_job_id: str) -> bool:
    return True


def drain(queue: JobQueue, tasks: list[str]) -> list[str]:
    taken = []
    while (job_id := queue.pop_for(tasks, always)) is not None:
        taken.append(job_id)
    return taken


def test_priority_then_fifo() -> None:
    queue = JobQueue()
    for job_id, priority in [
        ("n1", "normal"),
        ("l1", "low"),
        ("h1", "high"),
        ("n2", "normal"),
        ("h2", "high"),
        ("l2", "low"),
    ]:
        queue.push(job_id, "t", priority, 0.0, NOW)
    assert drain(queue, ["t"]) == ["h1", "h2", "n1", "n2", "l1", "l2"]
    assert queue.depth() == 0


def test_fifo_across_tasks_of_one_worker() -> None:
    queue = JobQueue()
    queue.push("a1", "a", "normal", 0.0, NOW)
    queue.push("b1", "b", "normal", 0.0, NOW)
    queue.push("a2", "a", "normal", 0.0, NOW)
    queue.push("b2", "b", "high", 0.0, NOW)
    assert drain(queue, ["a", "b"]) == ["b2", "a1", "b1", "a2"]


def test_per_task_selection() -> None:
    queue = JobQueue()
    queue.push("r1", "report", "high", 0.0, NOW)
    queue.push("e1", "echo", "low", 0.0, NOW)
    assert queue.pop_for(["echo"], always) == "e1"
    assert queue.pop_for(["echo"], always) is None
    assert queue.pop_for(["other"], always) is None
    assert queue.has_ready("report") and not queue.has_ready("echo")
    assert queue.ready_tasks() == ["report"]
    assert queue.pop_for(["report"], always) == "r1"


def test_delayed_jobs_promoted_at_run_at() -> None:
    queue = JobQueue()
    queue.push("later", "t", "high", NOW + 10, NOW)
    queue.push("sooner", "t", "high", NOW + 5, NOW)
    queue.push("now", "t", "low", NOW, NOW)
    assert queue.next_due() == NOW + 5
    assert drain(queue, ["t"]) == ["now"]
    assert queue.promote_due(NOW + 4.999) == 0
    assert queue.pop_for(["t"], always) is None
    assert queue.promote_due(NOW + 5) == 1
    assert queue.next_due() == NOW + 10
    assert drain(queue, ["t"]) == ["sooner"]
    assert queue.promote_due(NOW + 60) == 1
    assert queue.next_due() is None
    assert drain(queue, ["t"]) == ["later"]


def test_promoted_job_keeps_its_priority() -> None:
    queue = JobQueue()
    queue.push("normal", "t", "normal", 0.0, NOW)
    queue.push("delayed-high", "t", "high", NOW + 1, NOW)
    queue.promote_due(NOW + 1)
    assert drain(queue, ["t"]) == ["delayed-high", "normal"]


def test_cancelled_entries_dropped_lazily() -> None:
    queue = JobQueue()
    for job_id in ["a", "b", "c"]:
        queue.push(job_id, "t", "normal", 0.0, NOW)
    queue.push("h", "t", "high", 0.0, NOW)
    live = {"b", "c"}
    assert queue.depth() == 4
    assert queue.pop_for(["t"], live.__contains__) == "b"
    assert queue.depth() == 1  # "h" and "a" were dropped on the way, "b" taken
    assert queue.pop_for(["t"], live.__contains__) == "c"
    assert queue.pop_for(["t"], live.__contains__) is None


def test_all_cancelled_lane_falls_through_to_next_priority() -> None:
    queue = JobQueue()
    queue.push("h", "t", "high", 0.0, NOW)
    queue.push("n", "t", "normal", 0.0, NOW)
    assert queue.pop_for(["t"], lambda job_id: job_id != "h") == "n"


def test_idle_workers_lru() -> None:
    workers = Workforce(heartbeat_s=1.0)
    slots = {peer: workers.join(peer, Ready(tasks=["t"]), 0.0) for peer in [b"w1", b"w2", b"w3"]}
    assert [s.peer for s in workers.idle_in_order()] == [b"w1", b"w2", b"w3"]
    workers.take(slots[b"w1"], "job-1")
    workers.release(slots[b"w1"], "job-1")  # back from a job: now the most recently used
    assert [s.peer for s in workers.idle_in_order()] == [b"w2", b"w3", b"w1"]
    workers.retire(slots[b"w2"])  # said Bye: idle no more
    assert [s.peer for s in workers.idle_in_order()] == [b"w3", b"w1"]
    busy = workers.join(b"w4", Ready(tasks=["t"], busy=True), 0.0)
    assert busy not in workers.idle_in_order() and workers.idle_count() == 2
    assert workers.leave(b"nobody") is None and len(workers) == 4


@pytest.mark.parametrize(
    ("attempts", "delay_s"),
    [
        (0, RETRY_BASE_S),
        (1, RETRY_BASE_S),
        (2, 2 * RETRY_BASE_S),
        (3, 4 * RETRY_BASE_S),
        (4, 8 * RETRY_BASE_S),
    ],
)
def test_retry_delay_doubles(attempts: int, delay_s: float) -> None:
    assert retry_delay_s(attempts) == delay_s


def test_retry_delay_capped() -> None:
    delays = [retry_delay_s(n) for n in range(1, 40)]
    assert delays == sorted(delays)
    assert max(delays) == RETRY_MAX_S
    assert retry_delay_s(1000) == RETRY_MAX_S
