"""Pure tests of heartbeat bookkeeping and reconnect back-off (fake clock: plain floats)."""

from __future__ import annotations

import pytest

from broker.liveness import (
    HEARTBEAT_INTERVAL_S,
    RECONNECT_INITIAL_S,
    RECONNECT_MAX_S,
    Backoff,
    Liveness,
    heartbeat_interval_s,
)


def test_due_after_an_interval_of_silence() -> None:
    live = Liveness(1.0, last_heard=100.0, last_sent=100.0)
    assert not live.due(100.5)
    assert live.due(101.0)
    live.on_sent(101.0)
    assert not live.due(101.9)
    assert live.due(102.0)


def test_expired_after_liveness_intervals() -> None:
    live = Liveness(1.0, liveness=3, last_heard=100.0, last_sent=100.0)
    assert not live.expired(103.0)
    assert live.expired(103.001)
    live.on_message(103.0)
    assert not live.expired(105.5)
    assert live.expired(106.5)


def test_sending_does_not_keep_the_peer_alive() -> None:
    live = Liveness(1.0, last_heard=0.0, last_sent=0.0)
    for now in (1.0, 2.0, 3.0):
        live.on_sent(now)
    assert live.expired(3.5)


def test_next_deadline() -> None:
    live = Liveness(0.5, liveness=3, last_heard=10.0, last_sent=10.0)
    assert live.next_deadline() == 10.5
    live.on_sent(10.5)
    live.on_message(10.2)
    assert live.next_deadline() == 11.0
    live.on_sent(11.9)
    assert live.next_deadline() == pytest.approx(11.7)  # expiry comes first now


def test_backoff_doubles_to_its_cap_and_resets() -> None:
    backoff = Backoff()
    delays = [backoff.next_delay_s() for _ in range(8)]
    assert delays == [0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert delays[0] == RECONNECT_INITIAL_S and delays[-1] == RECONNECT_MAX_S
    backoff.reset()
    assert backoff.next_delay_s() == RECONNECT_INITIAL_S


def test_backoff_starts_at_a_custom_initial_delay() -> None:
    backoff = Backoff(initial_s=1.0, maximum_s=3.0)
    assert [backoff.next_delay_s() for _ in range(4)] == [1.0, 2.0, 3.0, 3.0]
    backoff.reset()
    assert backoff.next_delay_s() == 1.0


def test_heartbeat_interval_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JOBCAST_HEARTBEAT_S", raising=False)
    assert heartbeat_interval_s() == HEARTBEAT_INTERVAL_S
    monkeypatch.setenv("JOBCAST_HEARTBEAT_S", "")
    assert heartbeat_interval_s() == HEARTBEAT_INTERVAL_S


@pytest.mark.parametrize(("value", "expected"), [("0.1", 0.1), ("0.01", 0.01), ("60", 60.0)])
def test_heartbeat_interval_from_env(monkeypatch: pytest.MonkeyPatch, value: str, expected: float) -> None:
    monkeypatch.setenv("JOBCAST_HEARTBEAT_S", value)
    assert heartbeat_interval_s() == expected


@pytest.mark.parametrize("value", ["0", "0.001", "61", "-1", "nan", "inf"])
def test_heartbeat_interval_out_of_range(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("JOBCAST_HEARTBEAT_S", value)
    with pytest.raises(ValueError, match="JOBCAST_HEARTBEAT_S must be within 0.01..60"):
        heartbeat_interval_s()


def test_heartbeat_interval_not_a_number(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBCAST_HEARTBEAT_S", "fast")
    with pytest.raises(ValueError, match="fast"):
        heartbeat_interval_s()
