"""Pure tests, through ``BrokerProtocol`` with a fake clock: places, limits, pauses, periodic runs."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from test_core import C1, C2, W1, W2, W3, WALL_OFFSET_S, Harness, assert_sent, events, finish, sent

from broker import protocol as p
from broker.effects import Journal, Publish
from broker.pausing import PAUSED_KEY
from broker.periodic import PeriodicSchedules, Spec
from broker.placement import FORECAST_FRESH_S

LIMITED = {"limited": {"concurrency": 1}}


@pytest.fixture
def broker() -> Harness:
    harness = Harness()
    harness.core.receive_subscription(b"", 0.0, subscribed=False)  # no all-jobs watcher here
    harness.core.effects_to_apply()
    return harness


def watch(broker: Harness, job_id: str, now: float) -> list[p.Event]:
    broker.core.receive_subscription(job_id.encode(), now)
    return events(broker._effects())


def published_ids(effects: list[Any]) -> list[str]:
    return [p.decode(e.frames).id for e in effects if isinstance(e, Publish)]


# --- position and starts_in_s --------------------------------------------------------------


def test_queued_jobs_carry_position_and_expected_start(broker: Harness) -> None:
    broker.ready(W1, 0.0)
    first = assert_sent(broker.submit(C1, 0.0, args={"i": 0}), W1, p.Assign)
    queued = [broker.submit_id(C1, 0.0, args={"i": i}) for i in (1, 2, 3)]
    view = broker.status(queued[1], 1.0).job
    assert view["position"] == 2 and view["starts_in_s"] is None  # no run seen yet: no estimate
    second = assert_sent(finish(broker, W1, first, 10.0), W1, p.Assign)  # one run took 10 s
    assert second.id == queued[0]
    assert "position" not in broker.status(queued[0], 12.0).job  # running: no place any more
    places = [broker.status(job_id, 12.0).job for job_id in queued[1:]]
    assert [(v["position"], v["starts_in_s"]) for v in places] == [(1, 8.0), (2, 18.0)]


def test_a_running_jobs_eta_shortens_the_expected_start(broker: Harness) -> None:
    broker.ready(W1, 0.0)
    first = assert_sent(broker.submit(C1, 0.0, args={"i": 0}), W1, p.Assign)
    waiting = broker.submit_id(C1, 0.0, args={"i": 1})
    for step, now in enumerate((1.0, 2.0, 3.0), start=1):
        broker.event(p.Progress(id=first.id, attempt=1, done=step, total=10), now)
    assert broker.status(waiting, 3.0).job["starts_in_s"] == pytest.approx(7.0)


def test_place_changes_are_pushed_only_to_watched_jobs(broker: Harness) -> None:
    broker.ready(W1, 0.0)
    running = assert_sent(broker.submit(C1, 0.0, args={"i": 0}), W1, p.Assign)
    watched = broker.submit_id(C1, 0.0, args={"i": 1})
    unwatched = broker.submit_id(C1, 0.0, args={"i": 2})
    third = broker.submit_id(C1, 0.0, args={"i": 3})
    (joined,) = watch(broker, third, 0.1)
    assert joined.extra == {"position": 3, "starts_in_s": None}
    watch(broker, watched, 0.1)
    effects = finish(broker, W1, running, 5.0) + broker.tick(5.0)
    assert unwatched not in published_ids(effects)  # nobody watches it: nothing is encoded
    moved = {event.id: event.extra for event in events(effects)}
    assert moved[third] == {"position": 2, "starts_in_s": 10.0}  # after 2 runs of the 5 s mean
    assert moved[watched] is None  # it runs now: its place is gone
    assert events(broker.tick(5.2)) == []  # refreshed at most every PLACE_REFRESH_S
    assert events(broker.tick(5.6)) == []  # nothing moved: nothing pushed


def test_a_high_priority_submit_pushes_the_watchers_back(broker: Harness) -> None:
    job_id = broker.submit_id(C1, 0.0, args={"i": 1})
    watch(broker, job_id, 0.0)
    broker.submit(C2, 0.1, args={"i": 2}, priority="high")
    (event,) = [e for e in events(broker.tick(1.0)) if e.id == job_id]
    assert event.extra == {"position": 2, "starts_in_s": None}
    assert event.seq > 1  # a real new event, in seq order


def test_a_delayed_job_has_no_position_only_its_wait(broker: Harness) -> None:
    job_id = broker.submit_id(C1, 0.0, delay_s=30.0)
    now_job = broker.submit_id(C1, 0.0, args={"i": 2})
    view = broker.status(job_id, 10.0).job
    assert view["position"] is None and view["starts_in_s"] == 20.0
    assert broker.status(now_job, 10.0).job["position"] == 1


# --- ETA through the core ----------------------------------------------------------------------


@pytest.mark.parametrize("step_s", [0.2, 3.0])
def test_eta_of_a_steady_10_step_task_is_within_20_percent_from_step_3(
    broker: Harness, step_s: float
) -> None:
    broker.ready(W1, 0.0)
    assign = assert_sent(broker.submit(C1, 0.0), W1, p.Assign)
    watch(broker, assign.id, 0.0)
    etas = []
    for step in range(1, 11):
        now = step * step_s
        broker.worker(W1, p.Heartbeat(), now)
        (event,) = events(broker.event(p.Progress(id=assign.id, attempt=1, done=step, total=10), now))
        etas.append(event.eta_s)
    assert etas[:2] == [None, None]  # fewer than 3 samples: no estimate
    for step, eta in enumerate(etas[2:], start=3):
        truth = (10 - step) * step_s
        assert eta is not None and abs(eta - truth) <= 0.2 * truth + 0.05, (step, eta, truth)


# --- concurrency -------------------------------------------------------------------------------


def test_concurrency_limit_holds_across_workers_without_blocking_others(broker: Harness) -> None:
    for peer in (W1, W2, W3):
        broker.ready(peer, 0.0, tasks=("limited", "echo"), options=LIMITED)
    effects = []
    for i in range(3):
        effects += broker.submit(C1, 0.1, task="limited", args={"i": i})
    effects += broker.submit(C1, 0.1, task="echo", args={"i": 9})
    assigns = [assert_sent(effects, peer, p.Assign) for peer in (W1, W2)]
    assert sorted(a.task for a in assigns) == ["echo", "limited"]  # echo is not held up
    assert sent(effects, W3, p.Assign) == []  # a slot idles rather than break the limit
    limited = next(a for a in assigns if a.task == "limited")
    peer = W1 if assigns[0] is limited else W2
    follow_up = finish(broker, peer, limited, 1.0)
    (nxt,) = [a for w in (W1, W2, W3) for a in sent(follow_up, w, p.Assign)]
    assert nxt.task == "limited"
    assert broker.core.stats()["concurrency"] == {"limited": 1}


def test_a_lost_worker_frees_its_concurrency_slot(broker: Harness) -> None:
    broker.ready(W1, 0.0, tasks=("limited",), options=LIMITED)
    broker.ready(W2, 0.0, tasks=("limited",), options=LIMITED)
    first = assert_sent(broker.submit(C1, 0.0, task="limited", args={"i": 1}), W1, p.Assign)
    broker.submit(C1, 0.0, task="limited", args={"i": 2})
    broker.worker(W2, p.Heartbeat(), 2.5)
    effects = broker.tick(3.5)  # W1 went silent: its job is re-queued and W2 may take one
    (taken,) = sent(effects, W2, p.Assign)
    assert taken.task == "limited"
    assert broker.status(first.id, 3.5).job["state"] == "queued"


# --- pause and resume ----------------------------------------------------------------------------


def test_pause_keeps_jobs_queued_and_resume_dispatches_them(broker: Harness) -> None:
    broker.ready(W1, 0.0)
    running = assert_sent(broker.submit(C1, 0.0, args={"i": 0}), W1, p.Assign)
    effects = broker.client(C2, p.Pause(req=1, task="echo"), 0.1)
    reply = assert_sent(effects, C2, p.Counters, req=1)
    assert reply.stats["paused"] == ["echo"]
    journal = [e.record for e in effects if isinstance(e, Journal)]
    assert journal == [{"op": "meta", "key": PAUSED_KEY, "value": ["echo"]}]
    queued = broker.submit_id(C1, 0.2, args={"i": 1})  # submits are still accepted
    assert sent(finish(broker, W1, running, 1.0), W1, p.Assign) == []  # running one finished
    assert broker.status(queued, 1.0).job["state"] == "queued"
    assert broker.status(queued, 1.0).job["starts_in_s"] is None
    assert broker.core.stats()["paused"] == ["echo"]
    effects = broker.client(C2, p.Resume(req=2, task="echo"), 2.0)
    assert assert_sent(effects, C2, p.Counters).stats["paused"] == []
    assert_sent(effects, W1, p.Assign, id=queued)


def test_pausing_one_task_lets_others_run(broker: Harness) -> None:
    broker.ready(W1, 0.0)
    broker.client(C2, p.Pause(req=1, task="report"), 0.0)
    broker.submit(C1, 0.1, task="report")
    assert_sent(broker.submit(C1, 0.2, task="echo"), W1, p.Assign, task="echo")


def test_a_bad_pause_is_refused_and_changes_nothing(broker: Harness) -> None:
    effects = broker.client(C2, p.Pause(req=1, task=""), 0.0)
    assert_sent(effects, C2, p.Error, code="bad_args")
    assert [e for e in effects if isinstance(e, Journal)] == []
    assert_sent(broker.client(C2, p.Pause(req=2, task="echo"), 0.0), C2, p.Counters)
    assert broker.core.stats()["paused"] == ["echo"]


def test_paused_set_is_restored_from_the_journal() -> None:
    harness = Harness()
    harness.core.controls.restore({PAUSED_KEY: ["echo"]})
    harness.ready(W1, 0.0)
    assert sent(harness.submit(C1, 0.0), W1, p.Assign) == []
    assert_sent(harness.client(C2, p.Resume(req=1, task="echo"), 1.0), W1, p.Assign)


# --- periodic tasks ---------------------------------------------------------------------------


def periodic_runs(broker: Harness) -> int:
    return int(broker.core.stats()["submitted"])


def test_every_submits_one_run_per_period_whatever_the_worker_count(broker: Harness) -> None:
    options = {"tick": {"every_s": 2}}
    for peer in (W1, W2, W3):
        broker.ready(peer, 0.0, tasks=("tick",), options=options)
    assert broker.core.next_deadline() <= 2.0
    broker.tick(1.9)
    assert periodic_runs(broker) == 0
    for peer in (W1, W2, W3):
        broker.worker(peer, p.Heartbeat(), 1.9)  # heard lately: fit for work
    effects = broker.tick(2.0)
    (assign,) = [a for w in (W1, W2, W3) for a in sent(effects, w, p.Assign)]
    assert (assign.task, assign.args) == ("tick", b"{}")
    assert {"op": "meta", "key": "periodic:tick", "value": WALL_OFFSET_S + 2.0} in [
        e.record for e in effects if isinstance(e, Journal)
    ]
    broker.tick(2.5)
    assert periodic_runs(broker) == 1


def test_a_periodic_run_still_live_is_not_duplicated(broker: Harness) -> None:
    broker.ready(W1, 0.0, tasks=("tick",), options={"tick": {"every_s": 2}})
    broker.worker(W1, p.Heartbeat(), 1.9)
    first = assert_sent(broker.tick(2.0), W1, p.Assign)
    broker.worker(W1, p.Heartbeat(), 3.9)
    broker.tick(4.0)  # still running: coalesced by its cache key
    assert periodic_runs(broker) == 1
    finish(broker, W1, first, 4.5)
    assert periodic_runs(broker) == 1
    broker.worker(W1, p.Heartbeat(), 5.9)
    assert_sent(broker.tick(6.0), W1, p.Assign, task="tick")
    assert periodic_runs(broker) == 2


def test_after_downtime_a_schedule_runs_once_then_keeps_its_phase() -> None:
    schedules = PeriodicSchedules()
    schedules.learn(["tick"], {"tick": {"every_s": 10}}, now_wall=0.0)
    assert schedules.due(9.9) == []
    assert schedules.due(10.0) == ["tick"]
    assert schedules.due(95.0) == ["tick"]  # 8 runs missed: one run, no burst
    assert schedules.due(95.0) == []
    assert schedules.next_due() == 100.0  # the phase of 10, 20, ... is kept


def test_a_restarted_broker_runs_a_missed_period_once_at_once() -> None:
    schedules = PeriodicSchedules()
    schedules.restore({"tick": 100.0})
    schedules.learn(["tick"], {"tick": {"every_s": 10}}, now_wall=500.0)
    assert schedules.due(500.0) == ["tick"]
    assert schedules.next_due() == 510.0
    fresh = PeriodicSchedules()
    fresh.restore({"tick": 495.0})  # ran just before the restart: nothing missed
    fresh.learn(["tick"], {"tick": {"every_s": 10}}, now_wall=500.0)
    assert fresh.due(500.0) == [] and fresh.next_due() == 505.0


def test_relearning_the_same_schedule_keeps_its_next_run() -> None:
    schedules = PeriodicSchedules()
    schedules.learn(["tick"], {"tick": {"every_s": 10}}, now_wall=0.0)
    schedules.learn(["tick"], {"tick": {"every_s": 10}}, now_wall=7.0)  # another worker
    assert schedules.next_due() == 10.0
    schedules.learn(["tick"], {"tick": {}}, now_wall=8.0)  # no longer periodic
    assert schedules.next_due() is None


def test_cron_spec_runs_on_its_minutes_in_utc() -> None:
    start = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC
    spec = Spec(cron="*/5 * * * *")
    assert spec.next_after(start) == 1_700_000_100.0  # 22:15:00
    schedules = PeriodicSchedules()
    schedules.learn(["report"], {"report": {"cron": "*/5 * * * *"}}, now_wall=start)
    assert schedules.due(start + 99) == []
    assert schedules.due(start + 100) == ["report"]
    assert schedules.next_due() == 1_700_000_400.0


def test_cron_in_a_time_zone_follows_its_daylight_saving_time() -> None:
    paris = Spec(cron="0 6 * * *", tz="Europe/Paris")
    winter = datetime(2026, 1, 15, 12, 0, tzinfo=UTC).timestamp()
    summer = datetime(2026, 7, 15, 12, 0, tzinfo=UTC).timestamp()
    assert paris.next_after(winter) == datetime(2026, 1, 16, 5, 0, tzinfo=UTC).timestamp()  # UTC+1
    assert paris.next_after(summer) == datetime(2026, 7, 16, 4, 0, tzinfo=UTC).timestamp()  # UTC+2
    spring_forward = datetime(2026, 3, 28, 12, 0, tzinfo=UTC).timestamp()  # the 29th has 23 hours
    assert paris.next_after(spring_forward) == datetime(2026, 3, 29, 4, 0, tzinfo=UTC).timestamp()
    schedules = PeriodicSchedules()
    schedules.learn(["daily"], {"daily": {"cron": "0 6 * * *", "tz": "Europe/Paris"}}, now_wall=winter)
    assert schedules.next_due() == datetime(2026, 1, 16, 5, 0, tzinfo=UTC).timestamp()


@pytest.mark.parametrize("options", [{"every_s": 0}, {"every_s": True}, {"cron": "nope"}, {"cron": 5}, "x",
                                     {"cron": "0 6 * * *", "tz": "Nowhere/Land"},
                                     {"cron": "0 6 * * *", "tz": "/etc/passwd"},
                                     {"cron": "0 6 * * *", "tz": ["UTC"]}])  # fmt: skip
def test_malformed_schedules_from_a_worker_are_ignored(options: Any) -> None:
    schedules = PeriodicSchedules()
    schedules.learn(["tick"], {"tick": options}, now_wall=0.0)
    assert schedules.next_due() is None


def test_pause_is_refused_while_the_data_dir_is_full(broker: Harness) -> None:
    broker.core.storage_error = "the data dir is full"
    effects = broker.client(C2, p.Pause(req=1, task="echo"), 0.0)
    assert_sent(effects, C2, p.Error, code="storage_full")
    assert [e for e in effects if isinstance(e, Journal)] == []
    broker.core.storage_error = None
    assert_sent(broker.client(C2, p.Pause(req=2, task="echo"), 0.0), C2, p.Counters)


def test_a_forecast_is_reused_briefly_and_redone_when_a_job_starts_or_stops(broker: Harness) -> None:
    placement = broker.core.controls.placement
    peers = [f"worker-{n}".encode() for n in range(40)]
    for peer in peers:
        broker.ready(peer, 0.0)
    first = placement.forecast("echo", 1.0)
    assert placement.forecast("echo", 1.0 + FORECAST_FRESH_S / 2) is first  # no scan of 40 slots
    assert placement.forecast("echo", 1.0 + FORECAST_FRESH_S) is not first  # stale: redone
    again = placement.forecast("echo", 2.0)
    broker.submit(C1, 2.0, args={"i": 1})  # a job starts on one of the slots
    assert placement.forecast("echo", 2.0) is not again
