"""Pure: when the agent reads its runner's result pipe (fake clock, no pipes)."""

from __future__ import annotations

from broker.protocol import Assign
from workers.outcome_pacing import OUTCOME_BATCH_S, OutcomePacing
from workers.slot import Attempt, Held

T0 = 100.0
GRACE_S = 2.0


def held(n: int, timeout_s: float | None = None, now: float = T0) -> Held:
    attempts = Held(GRACE_S)
    for i in range(n):
        assign = Assign(id=f"job{i}", task="echo", attempt=1, args=b"{}", timeout_s=timeout_s)
        attempts.hold(Attempt.hold(assign, timeout_s), now)
    return attempts


def test_one_attempt_held_or_none_never_pauses() -> None:
    pacing = OutcomePacing()
    assert not pacing.pause(T0, held(0))
    assert not pacing.pause(T0, held(1))
    assert pacing.paused_until is None


def test_more_held_pauses_for_one_batch_then_resumes() -> None:
    pacing = OutcomePacing()
    attempts = held(3)
    assert pacing.pause(T0, attempts)
    assert pacing.paused_until == T0 + OUTCOME_BATCH_S
    assert not pacing.pause(T0 + OUTCOME_BATCH_S / 2, attempts)  # one pause at a time
    assert pacing.paused_until == T0 + OUTCOME_BATCH_S
    assert not pacing.resume(T0 + OUTCOME_BATCH_S / 2, attempts, None)
    assert pacing.resume(T0 + OUTCOME_BATCH_S, attempts, None)
    assert pacing.paused_until is None
    assert not pacing.resume(T0 + 1.0, attempts, None)  # nothing to end any more


def test_a_due_timeout_of_the_running_attempt_ends_the_pause_early() -> None:
    pacing = OutcomePacing(batch_s=10.0)
    attempts = held(2, timeout_s=0.5)
    assert pacing.pause(T0, attempts)
    assert not pacing.resume(T0 + 0.4, attempts, None)
    assert pacing.resume(T0 + 0.5, attempts, None)


def test_a_due_cancel_grace_ends_the_pause_early() -> None:
    pacing = OutcomePacing(batch_s=10.0)
    attempts = held(2)
    attempts[0].cancel_deadline = T0 + 1.0
    assert pacing.pause(T0, attempts)
    assert not pacing.resume(T0 + 0.9, attempts, None)
    assert pacing.resume(T0 + 1.0, attempts, None)


def test_a_due_stop_deadline_ends_the_pause_early() -> None:
    pacing = OutcomePacing(batch_s=10.0)
    attempts = held(2)
    assert pacing.pause(T0, attempts)
    assert not pacing.resume(T0 + 1.0, attempts, stop_deadline=T0 + 2.0)
    assert pacing.resume(T0 + 2.0, attempts, stop_deadline=T0 + 2.0)


def test_a_waiting_attempt_s_timeout_does_not_end_the_pause() -> None:
    pacing = OutcomePacing(batch_s=10.0)
    attempts = held(2)
    attempts[1].deadline = T0 + 1.0  # only the running (first) attempt's deadlines tick
    assert pacing.pause(T0, attempts)
    assert not pacing.resume(T0 + 5.0, attempts, None)


def test_the_pause_ends_when_every_attempt_is_gone() -> None:
    pacing = OutcomePacing()
    attempts = held(2)
    assert pacing.pause(T0, attempts)
    attempts.clear()
    assert not pacing.resume(T0, attempts, None)
    assert pacing.resume(T0 + OUTCOME_BATCH_S, attempts, None)
