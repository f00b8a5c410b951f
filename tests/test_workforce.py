"""Pure tests of suspect worker slots: silent idle slots get no work until heard again.

A host that drops off the network takes all its slots with it at once. The broker declares
each dead on its own heartbeat clock, so the first lost job must not go to a sibling slot
on the same dead host (tests/test_multihost.py shows it on real namespaces).
"""

from __future__ import annotations

from test_core import C1, HEARTBEAT_S, W1, W2, W3, Harness, assert_sent, sent, states

from broker import protocol as p
from broker.liveness import Liveness
from broker.workforce import SUSPECT_AFTER_INTERVALS, Workforce


def ready(tasks: tuple[str, ...] = ("echo",)) -> p.Ready:
    return p.Ready(tasks=list(tasks), pid=7, host="h")


def test_an_idle_slot_silent_past_the_threshold_is_passed_over_until_heard() -> None:
    workforce = Workforce(heartbeat_s=1.0)
    first, second = workforce.join(W1, ready(), 0.0), workforce.join(W2, ready(), 0.5)
    assert workforce.dispatchable(1.4) == [first, second]
    assert workforce.dispatchable(1.6) == [second]  # W1 silent 1.6 intervals: suspect
    assert workforce.heard(first, 1.7) is True  # back: worth a dispatch pass
    assert workforce.heard(first, 1.8) is False
    assert workforce.dispatchable(1.9) == [first, second]  # its place in the line is kept


def test_a_busy_slot_is_never_reported_revived() -> None:
    workforce = Workforce(heartbeat_s=1.0)
    slot = workforce.join(W1, ready(), 0.0)
    workforce.take(slot, "job")
    assert workforce.heard(slot, 2.9) is False  # busy: nothing to dispatch to it
    assert workforce.dispatchable(2.9) == []


def test_suspect_threshold_sits_between_one_heartbeat_and_a_dead_siblings_silence() -> None:
    # healthy: heard every interval; a sibling on a lost host: silent >= 2 intervals when the
    # first slot there is declared dead (after 3)
    assert 1.0 < SUSPECT_AFTER_INTERVALS < Liveness(1.0).liveness - 1


def test_a_lost_job_skips_a_silent_sibling_and_runs_on_a_live_host() -> None:
    broker = Harness()
    broker.ready(W1, 0.0)  # host A: W1 and W2
    broker.ready(W2, 0.0)
    broker.ready(W3, 0.0)  # host B: W3 (idle for the shortest time)
    job_id = assert_sent(broker.submit(C1, 0.0), W1, p.Assign, attempt=1).id
    broker.worker(W2, p.Heartbeat(), 0.9)  # host A drops off the network at 0.95
    for now in (1.0, 2.0, 3.0):
        broker.worker(W3, p.Heartbeat(), now)
    effects = broker.tick(3.05)  # W1 silent 3.05 intervals: dead; W2 silent 2.15: suspect
    assert states(effects)[:1] == ["queued"]
    assert sent(effects, W2, p.Assign) == []
    assert_sent(effects, W3, p.Assign, id=job_id, attempt=2)


def test_a_queued_job_waits_for_a_suspect_slot_to_be_heard() -> None:
    broker = Harness()
    broker.ready(W1, 0.0)
    quiet = 2 * HEARTBEAT_S  # W1's heartbeats are late (a stalled host, or a slow network)
    assert sent(broker.submit(C1, quiet), W1, p.Assign) == []
    assert_sent(broker.worker(W1, p.Heartbeat(), quiet + 0.1), W1, p.Assign, attempt=1)


def test_heartbeats_and_expiry_follow_every_slot_although_the_deadline_is_kept() -> None:
    workforce = Workforce(heartbeat_s=1.0)
    first = workforce.join(W1, ready(), 0.0)
    assert workforce.next_deadline() == 1.0  # W1's heartbeat
    assert workforce.heartbeats_due(0.75) == [] and workforce.expired(0.75) == []
    workforce.sent(first, 0.75)
    workforce.heard(first, 0.75)
    assert workforce.heartbeats_due(1.0) == []  # sent to at 0.75: the kept 1.0 was early
    assert workforce.next_deadline() == 1.75
    second = workforce.join(W2, ready(), 0.5)  # joins later with an earlier deadline
    assert workforce.next_deadline() == 1.5
    assert workforce.heartbeats_due(1.5) == [W2]
    workforce.sent(second, 1.5)
    assert workforce.heartbeats_due(1.75) == [W1]
    workforce.sent(first, 1.75)
    assert workforce.expired(3.5) == []  # W1 heard at 0.75, W2 at 0.5: 3 intervals later
    assert workforce.expired(3.625) == [second]
    assert workforce.expired(4.0) == [first, second]
