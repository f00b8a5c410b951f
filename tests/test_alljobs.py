"""Pure tests of the all-jobs topic: gated on its subscription, progress thinned, changes kept."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from test_core import C1, W1, Harness

from broker import protocol as p
from broker.alljobs import PROGRESS_INTERVAL_S, AllJobsFeed
from broker.effects import Effect, Publish
from broker.progress import Subscriptions
from broker.tally import MAX_TASKS_LISTED, count_states, live_counts

STAR = p.ALL_JOBS_TOPIC


@dataclass
class FakeJob:
    id: str
    state: str = "running"


def all_jobs_events(effects: list[Effect]) -> list[p.Event]:
    """Events published under the all-jobs topic, decoded."""
    found = []
    for effect in effects:
        if isinstance(effect, Publish) and effect.frames[0] == STAR:
            msg = p.decode(effect.frames)
            assert isinstance(msg, p.Event)
            found.append(msg)
    return found


def progress(broker: Harness, job_id: str, done: int, now: float) -> list[Effect]:
    return broker.event(p.Progress(id=job_id, attempt=1, done=done, total=100, message=f"step {done}"), now)


@pytest.fixture
def running() -> tuple[Harness, str]:
    """A harness whose one job runs on W1 (only the empty-prefix watcher subscribed)."""
    broker = Harness()
    broker.ready(W1, 0.0)
    job_id = broker.submit_id(C1, 0.1)
    return broker, job_id


def test_nothing_goes_to_the_all_jobs_topic_without_its_own_subscriber(running: tuple[Harness, str]) -> None:
    broker, job_id = running  # the harness's empty-prefix watcher does not count
    effects = progress(broker, job_id, 1, 1.0) + broker.tick(2.0)
    assert all_jobs_events(effects) == []
    assert broker.core.out.all_jobs.last_copy_s == {}


def test_state_changes_are_copied_with_the_task_name(running: tuple[Harness, str]) -> None:
    broker, job_id = running
    broker.core.receive_subscription(STAR, 0.5)
    assert broker.core.effects_to_apply() == []  # "*" is no job: nothing republished
    second = broker.submit_id(C1, 0.6, args={"n": 2})  # queued behind the first
    broker.req += 1
    broker.client(C1, p.Cancel(req=broker.req, id=second), 0.7)
    copies = all_jobs_events(broker.history)
    assert [(e.id, e.state, e.task) for e in copies] == [
        (second, "queued", "echo"),
        (second, "cancelled", "echo"),
    ]
    assert broker.core.out.all_jobs.last_copy_s.keys() == set()  # a final state forgets the job


def test_progress_is_thinned_to_the_latest_per_interval(running: tuple[Harness, str]) -> None:
    broker, job_id = running
    broker.core.receive_subscription(STAR, 0.5)
    first = progress(broker, job_id, 1, 1.0)
    assert [e.done for e in all_jobs_events(first)] == [1]
    held = [progress(broker, job_id, n, 1.0 + n / 100) for n in range(2, 10)]  # 8 in 80 ms
    assert all(all_jobs_events(effects) == [] for effects in held)
    assert broker.core.out.all_jobs.next_deadline() == pytest.approx(1.0 + PROGRESS_INTERVAL_S)
    assert broker.core.next_deadline() <= 1.0 + PROGRESS_INTERVAL_S
    assert all_jobs_events(broker.tick(1.1)) == []  # not due yet
    flushed = all_jobs_events(broker.tick(1.0 + PROGRESS_INTERVAL_S))
    assert [(e.done, e.message) for e in flushed] == [(9, "step 9")]  # the latest figures
    # the job's own topic got every event, not thinned
    own = [e for e in broker.history if isinstance(e, Publish) and e.frames[0] == job_id.encode()]
    assert len(own) >= 9


def test_a_state_change_replaces_held_progress(running: tuple[Harness, str]) -> None:
    broker, job_id = running
    broker.core.receive_subscription(STAR, 0.5)
    progress(broker, job_id, 1, 1.0)
    progress(broker, job_id, 2, 1.05)  # held
    done = broker.worker(W1, p.Done(id=job_id, attempt=1, result=b"{}"), 1.06)
    assert [e.state for e in all_jobs_events(done)] == ["done"]
    assert all_jobs_events(broker.tick(2.0)) == []  # nothing stale flushed after the end
    assert broker.core.next_deadline() > 2.0


def test_unsubscribing_stops_the_copies(running: tuple[Harness, str]) -> None:
    broker, job_id = running
    broker.core.receive_subscription(STAR, 0.5)
    progress(broker, job_id, 1, 1.0)
    progress(broker, job_id, 2, 1.05)  # held
    broker.core.receive_subscription(STAR, 1.1, subscribed=False)
    assert all_jobs_events(broker.tick(2.0) + progress(broker, job_id, 3, 2.1)) == []


def test_feed_alone_with_a_fake_clock() -> None:
    subs = Subscriptions()
    feed: AllJobsFeed[FakeJob] = AllJobsFeed(subs, interval_s=1.0)
    job = FakeJob("a" * 22)
    assert not feed.on_event(job, 0.0)
    subs.change(b"", True)  # an empty prefix is not a subscription to the all-jobs topic
    assert not feed.active
    subs.change(STAR, True)
    assert feed.on_event(job, 0.0)  # first seen: copied at once
    assert not feed.on_event(job, 0.5)  # same state inside the interval: held
    assert feed.due(0.9) == [] and feed.due(1.0) == [job]
    assert feed.due(5.0) == [] and feed.next_deadline() == float("inf")
    assert feed.on_event(job, 2.0)  # an interval after the last copy: copied at once
    assert not feed.on_event(job, 2.1)
    job.state = "done"
    assert feed.on_event(job, 2.2) and feed.held == {}  # a change: at once, held copy dropped
    assert feed.last_state == {} and feed.last_copy_s == {}  # final: forgotten


def test_protocol_accepts_the_all_jobs_topic_only_for_events() -> None:
    event = p.Event(id="j" * 22, seq=3, epoch=1, state="running", task="report")
    frames = p.encode(event)
    assert p.decode([STAR, *frames[1:]]) == event
    progress_frames = p.encode(p.Progress(id="j" * 22, attempt=1, done=1, total=2))
    with pytest.raises(p.ProtocolError, match="topic does not match"):
        p.decode([STAR, *progress_frames[1:]])


def test_live_counts_per_task_bounded() -> None:
    broker = Harness()
    broker.ready(W1, 0.0, tasks=("echo",))
    for n in range(3):
        broker.submit(C1, 0.1, args={"n": n})
    stats = broker.core.stats()
    assert (stats["queued"], stats["running"]) == (2, 1)
    assert stats["queues"] == {"echo": {"queued": 2, "running": 1}}
    jobs = [broker.core.jobs[job_id] for job_id in broker.core.by_key.values()]
    many = [type(jobs[0])(**{**_fields(jobs[0]), "task": f"t{n:03d}"}) for n in range(MAX_TASKS_LISTED + 5)]
    assert len(live_counts(count_states(many))["queues"]) == MAX_TASKS_LISTED


def _fields(job: object) -> dict[str, object]:
    return {name: getattr(job, name) for name in type(job).__dataclass_fields__}
