"""Pure: the attempts a worker slot holds, their deadlines and how an overdue one ends (fake clock)."""

from __future__ import annotations

from broker.protocol import Assign
from workers.slot import Attempt, Held

T0 = 100.0
GRACE_S = 2.0
WARM_S = 5.0


def attempt(job_id: str, timeout_s: float | None = None, number: int = 1) -> Attempt:
    assign = Assign(id=job_id, task="echo", attempt=number, args=b"{}", timeout_s=timeout_s)
    return Attempt.hold(assign, timeout_s)


def test_the_first_held_begins_at_once_and_the_next_when_it_finishes() -> None:
    held = Held(GRACE_S)
    held.hold(attempt("a", timeout_s=3.0), T0)
    held.hold(attempt("b", timeout_s=4.0), T0 + 1.0)
    assert held.current is not None and held.current.id == "a"
    assert held[0].deadline == T0 + 3.0
    assert held[1].deadline is None  # waiting: its timeout does not tick yet
    held.finish(T0 + 2.0)
    assert [a.id for a in held] == ["b"] and held[0].deadline == T0 + 6.0
    held.finish(T0 + 3.0)
    assert held.current is None and len(held) == 0


def test_a_stop_asked_while_waiting_starts_its_grace_when_it_begins() -> None:
    held = Held(GRACE_S)
    held.hold(attempt("a"), T0)
    held.hold(attempt("b"), T0)
    held[1].stop_asked = True
    held.finish(T0 + 1.0)
    assert held[0].cancel_deadline == T0 + 1.0 + GRACE_S


def test_release_drops_only_the_matching_attempt() -> None:
    held = Held(GRACE_S)
    for job_id in ("a", "b", "c"):
        held.hold(attempt(job_id, timeout_s=1.0), T0)
    assert not held.release("b", 2, T0)  # another attempt of that job
    assert not held.release("zz", 1, T0)
    assert held.release("b", 1, T0 + 0.5)
    assert [a.id for a in held] == ["a", "c"]
    assert held[0].deadline == T0 + 1.0  # the running one is untouched


def test_releasing_the_first_begins_the_next() -> None:
    held = Held(GRACE_S)
    held.hold(attempt("a"), T0)
    held.hold(attempt("b", timeout_s=1.0), T0)
    assert held.release("a", 1, T0 + 0.5)
    assert held.current is not None and held.current.id == "b"
    assert held.current.deadline == T0 + 1.5


def test_nothing_is_overdue_before_its_deadlines() -> None:
    held = Held(GRACE_S)
    assert held.overdue(T0, T0, WARM_S) is None  # none held
    held.hold(attempt("a", timeout_s=1.0), T0)
    assert held.overdue(T0 + 0.9, None, WARM_S) is None
    assert held.overdue(T0 + 0.9, T0 + 1.0, WARM_S) is None


def test_a_timeout_fails_retryably() -> None:
    held = Held(GRACE_S)
    held.hold(attempt("a", timeout_s=1.5), T0)
    failed = held.overdue(T0 + 1.5, None, WARM_S)
    assert failed is not None and failed.id == "a" and failed.retry
    assert failed.error["type"] == "Timeout"
    assert failed.error["message"] == "job exceeded timeout of 1.5 s"


def test_a_cancel_grace_that_ran_out_is_cancelled_even_past_the_timeout() -> None:
    held = Held(GRACE_S)
    held.hold(attempt("a", timeout_s=1.0), T0)
    held[0].cancel_deadline = T0 + 0.5
    failed = held.overdue(T0 + 2.0, T0, WARM_S)
    assert failed is not None and not failed.retry
    assert failed.error["type"] == "JobCancelled"
    assert failed.error["message"] == "job was cancelled (killed after 2 s)"


def test_the_warm_shutdown_deadline_loses_the_job_for_a_retry() -> None:
    held = Held(GRACE_S)
    held.hold(attempt("a"), T0)
    failed = held.overdue(T0 + WARM_S, T0 + WARM_S, WARM_S)
    assert failed is not None and failed.retry
    assert failed.error["type"] == "WorkerLost"
    assert failed.error["message"] == "worker shut down; the job did not end within 5 s"


def test_the_warm_shutdown_deadline_cancels_a_job_already_being_cancelled() -> None:
    held = Held(GRACE_S)
    held.hold(attempt("a"), T0)
    held[0].cancel_deadline = T0 + 10.0
    failed = held.overdue(T0 + 1.0, T0 + 1.0, WARM_S)
    assert failed is not None and not failed.retry
    assert failed.error["message"] == "job was cancelled (worker shut down)"
