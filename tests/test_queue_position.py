"""Pure tests of queue positions and start forecasts: lanes, JobQueue.position, Forecast."""

from __future__ import annotations

import pytest

from broker.queue_position import (
    RUN_TIME_WINDOW,
    Lane,
    RunTimes,
    forecast,
    place_changed,
    time_left_s,
)
from broker.scheduling import JobQueue

NOW = 1_700_000_000.0


def always(_job_id: str) -> bool:
    return True


def test_lane_counts_live_entries_ahead() -> None:
    lane = Lane()
    ordinals = [lane.append(counter, f"j{counter}") for counter in range(5)]
    assert ordinals == [0, 1, 2, 3, 4]
    assert [lane.ahead(o) for o in ordinals] == [0, 1, 2, 3, 4]
    lane.remove(1)
    lane.remove(3)
    lane.remove(3)  # twice: still one removal
    assert lane.live() == 3
    assert lane.ahead(4) == 2
    assert lane.popleft() == "j0"
    assert lane.head() == (2, "j2")  # the removed j1 is skipped
    assert lane.ahead(4) == 1
    lane.remove(99)  # not in the lane: ignored
    assert lane.live() == 2


def test_lane_mass_removal_drains_at_once() -> None:
    lane = Lane()
    for counter in range(10_000):
        lane.append(counter, f"j{counter}")
    for ordinal in range(9_999):
        lane.remove(ordinal)
    assert lane.live() == 1
    assert lane.ahead(9_999) == 0
    assert lane.popleft() == "j9999"
    assert lane.head() is None and lane.live() == 0


def test_position_counts_higher_lanes_then_fifo() -> None:
    queue = JobQueue()
    for job_id, priority in [("n1", "normal"), ("n2", "normal"), ("l1", "low"), ("h1", "high")]:
        queue.push(job_id, "t", priority, 0.0, NOW)
    queue.push("other", "u", "high", 0.0, NOW)  # another task's line is separate
    assert [queue.position(j) for j in ("h1", "n1", "n2", "l1")] == [1, 2, 3, 4]
    assert queue.position("other") == 1
    queue.discard("n1")  # cancelled
    assert [queue.position(j) for j in ("h1", "n2", "l1")] == [1, 2, 3]
    assert queue.position("n1") is None
    assert queue.pop_for(["t"], always) == "h1"
    assert [queue.position(j) for j in ("n2", "l1")] == [1, 2]
    assert queue.ready_count("t") == 2 and queue.depth() == 3


def test_delayed_jobs_are_not_in_line_until_due() -> None:
    queue = JobQueue()
    queue.push("later", "t", "high", NOW + 10, NOW)
    queue.push("now", "t", "normal", 0.0, NOW)
    assert queue.is_delayed("later") and queue.position("later") is None
    assert queue.position("now") == 1  # a delayed high job does not count ahead
    assert queue.promote_due(NOW + 10) == 1
    assert queue.position("later") == 1 and queue.position("now") == 2


def test_a_cancelled_delayed_job_is_never_promoted() -> None:
    queue = JobQueue()
    queue.push("later", "t", "normal", NOW + 10, NOW)
    queue.discard("later")
    assert queue.promote_due(NOW + 10) == 0
    assert queue.pop_for(["t"], always) is None and queue.depth() == 0


def test_a_requeued_job_goes_to_the_back() -> None:
    queue = JobQueue()
    for job_id in ("a", "b", "c"):
        queue.push(job_id, "t", "normal", 0.0, NOW)
    queue.push("a", "t", "normal", 0.0, NOW)  # pushed again: its old entry leaves the line
    assert [queue.position(j) for j in ("b", "c", "a")] == [1, 2, 3]
    assert [queue.pop_for(["t"], always) for _ in range(4)] == ["b", "c", "a", None]


def test_position_of_the_last_of_100000_stays_exact_under_cancels() -> None:
    queue = JobQueue()
    for n in range(100_000):
        queue.push(f"j{n}", "t", "normal", 0.0, NOW)
    for n in range(0, 100_000, 2):
        queue.discard(f"j{n}")
    assert queue.position("j99999") == 50_000
    assert queue.pop_for(["t"], always) == "j1"
    assert queue.position("j99999") == 49_999


def test_forecast_list_schedules_over_the_slots() -> None:
    idle = forecast([0.0, 0.0], [], None, 10.0)
    assert [idle.starts_in_s(n) for n in (1, 2, 3, 4, 5)] == [0.0, 0.0, 10.0, 10.0, 20.0]
    busy = forecast([7.0, 3.0], [7.0], None, 10.0)
    assert [busy.starts_in_s(n) for n in (1, 2, 3)] == [3.0, 7.0, 13.0]


def test_forecast_unknowns_give_none() -> None:
    assert forecast([], [], None, 10.0).starts_in_s(1) is None  # no slot serves the task
    no_mean = forecast([4.0], [], None, None)
    assert no_mean.starts_in_s(1) == 4.0  # the next free slot is known
    assert no_mean.starts_in_s(2) is None  # a whole run would be needed: unknown
    assert forecast([None], [], None, 10.0).starts_in_s(1) is None


def test_forecast_with_a_concurrency_limit_uses_only_its_channels() -> None:
    limited = forecast([0.0, 0.0, 0.0, 0.0], [5.0], 1, 10.0)
    assert [limited.starts_in_s(n) for n in (1, 2)] == [5.0, 15.0]
    two = forecast([0.0, 0.0, 0.0], [6.0], 2, 10.0)
    assert [two.starts_in_s(n) for n in (1, 2, 3)] == [0.0, 6.0, 10.0]


def test_time_left_prefers_the_eta_then_the_mean() -> None:
    assert time_left_s(4.0, 1.0, 10.0) == 4.0
    assert time_left_s(None, 3.0, 10.0) == 7.0
    assert time_left_s(None, 30.0, 10.0) == 0.0
    assert time_left_s(None, 3.0, None) is None


def test_run_times_mean_over_a_window() -> None:
    runs = RunTimes()
    assert runs.mean_s("t") is None
    for seconds in [100.0] * RUN_TIME_WINDOW + [10.0] * RUN_TIME_WINDOW:
        runs.record("t", seconds)
    assert runs.mean_s("t") == pytest.approx(10.0)
    runs.record("t", -1.0)  # clock went backwards: ignored
    assert runs.mean_s("t") == pytest.approx(10.0)


def test_place_changed_ignores_small_moves_of_the_start() -> None:
    extra = {"position": 3, "starts_in_s": 40.0}
    assert not place_changed(extra, 3, 38.0)
    assert place_changed(extra, 3, 30.0)
    assert place_changed(extra, 2, 40.0)
    assert place_changed(extra, 3, None)
    assert place_changed({}, 1, None)
    assert not place_changed({"position": None, "starts_in_s": None}, None, None)
