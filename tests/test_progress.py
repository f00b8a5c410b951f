"""Pure tests of ETA estimation and the Clone-pattern join."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from broker.progress import ETA_MIN_SAMPLES, EtaEstimator, is_newer, join_after_snapshot


def test_no_eta_before_three_samples() -> None:
    eta = EtaEstimator()
    assert ETA_MIN_SAMPLES == 3
    assert eta.observe(0.0, 0, 10) is None
    assert eta.observe(1.0, 1, 10) is None
    assert eta.observe(2.0, 2, 10) is not None


@pytest.mark.parametrize("step_s", [0.1, 2.0, 30.0])
def test_eta_within_20_percent_on_a_steady_task(step_s: float) -> None:
    eta = EtaEstimator()
    start = 50.0
    for step in range(0, 11):
        estimate = eta.observe(start + step * step_s, step, 10)
        if step >= 3:
            truth = (10 - step) * step_s
            assert estimate is not None
            assert abs(estimate - truth) <= 0.2 * truth + 0.05, (step, estimate, truth)
    assert estimate == 0.0


def test_eta_tracks_a_slowdown() -> None:
    eta = EtaEstimator()
    for step in range(5):
        eta.observe(float(step), step, 100)
    fast = eta.eta_s(4, 100)
    now = 4.0
    for step in range(5, 15):
        now += 10.0
        eta.observe(now, step, 100)
    slow = eta.eta_s(14, 100)
    assert fast is not None and slow is not None
    assert slow > fast * 3


def test_eta_none_without_total_or_progress() -> None:
    eta = EtaEstimator()
    for now in (0.0, 1.0, 2.0, 3.0):
        assert eta.observe(now, 0, 10) is None  # rate 0: no estimate rather than infinity
    unknown_total = EtaEstimator()
    for step in range(4):
        assert unknown_total.observe(float(step), step, 0) is None


def test_eta_ignores_samples_without_elapsed_time() -> None:
    eta = EtaEstimator()
    eta.observe(0.0, 0, 10)
    eta.observe(1.0, 1, 10)
    eta.observe(1.0, 2, 10)  # same instant: no rate from it, no division by zero
    assert eta.rate_per_s == 1.0


@dataclass(frozen=True)
class Ev:
    seq: int
    state: str = "running"


def test_join_drops_events_up_to_the_snapshot() -> None:
    buffered = [Ev(3), Ev(4), Ev(5), Ev(6)]
    assert join_after_snapshot(buffered, 4) == [Ev(5), Ev(6)]


def test_join_sorted_no_gap_no_duplicate() -> None:
    # Subscribed at seq 3; events 3..9 buffered out of order while the snapshot (seq 5)
    # was fetched. After the join, the snapshot plus the events cover 1..9 exactly once.
    buffered = [Ev(7), Ev(4), Ev(9), Ev(5), Ev(3), Ev(8), Ev(6)]
    joined = join_after_snapshot(buffered, 5)
    seqs = [event.seq for event in joined]
    assert seqs == [6, 7, 8, 9]
    assert seqs == sorted(set(seqs))
    assert seqs[0] == 5 + 1


def test_join_with_nothing_newer() -> None:
    assert join_after_snapshot([Ev(1), Ev(2)], 2) == []
    assert join_after_snapshot([], 0) == []


def test_is_newer() -> None:
    assert is_newer(5, 4)
    assert not is_newer(4, 4)
    assert not is_newer(3, 4)
