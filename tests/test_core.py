"""Pure tests of ``BrokerProtocol``: frames and a fake clock in, effects out (no sockets).

Frames are built with ``protocol.encode``; results live in ``FakeResults``, filled from the
``StoreResult`` effects, so cache hits are tested without diskcache.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from broker import protocol as p
from broker.bundle import messages_in
from broker.core import BrokerProtocol
from broker.effects import Effect, Journal, Publish, SendClient, SendWorker, StoreResult
from broker.jobs import canonical_args, job_record

WALL_OFFSET_S = 1_700_000_000.0
HEARTBEAT_S = 1.0
C1, C2, C3 = b"client-1", b"client-2", b"client-3"
W1, W2, W3 = b"worker-1", b"worker-2", b"worker-3"


class FakeResults:
    """The shell's result store, in dicts."""

    def __init__(self) -> None:
        self.jobs: dict[str, tuple[dict[str, Any], bytes | None]] = {}
        self.keys: dict[str, str] = {}
        self.specs: dict[str, dict[str, Any]] = {}

    def job(self, job_id: str) -> tuple[dict[str, Any], bytes | None] | None:
        return self.jobs.get(job_id)

    def job_for_key(self, cache_key: str) -> str | None:
        return self.keys.get(cache_key)

    def retry_spec(self, job_id: str) -> dict[str, Any] | None:
        stored = self.jobs.get(job_id)
        return self.specs.get(job_id) or (None if stored is None else {"state": stored[0]["state"]})

    def apply(self, effects: list[Effect]) -> None:
        for effect in effects:
            if isinstance(effect, StoreResult):
                self.jobs[effect.job_id] = (effect.view, effect.result)
                if effect.cache_key is not None:
                    self.keys[effect.cache_key] = effect.job_id


class Harness:
    """A ``BrokerProtocol`` plus helpers that encode messages and collect its effects."""

    def __init__(self) -> None:
        self.results = FakeResults()
        ids = (f"job{n:019d}" for n in itertools.count(1))
        self.core = BrokerProtocol(
            self.results,
            epoch=1,
            heartbeat_s=HEARTBEAT_S,
            wall_offset_s=WALL_OFFSET_S,
            new_id=lambda: next(ids),
        )
        self.core.receive_subscription(b"", 0.0)  # an all-jobs watcher: every event is published
        self.history: list[Effect] = []
        self.req = 0

    def _effects(self) -> list[Effect]:
        effects = self.core.effects_to_apply()
        self.results.apply(effects)
        self.history.extend(effects)
        return effects

    def client(self, peer: bytes, msg: p.Message, now: float) -> list[Effect]:
        self.core.receive_client(peer, p.encode(msg), now)
        return self._effects()

    def worker(self, peer: bytes, msg: p.Message, now: float) -> list[Effect]:
        self.core.receive_worker(peer, p.encode(msg), now)
        return self._effects()

    def event(self, msg: p.Message, now: float) -> list[Effect]:
        self.core.receive_event(p.encode(msg), now)
        return self._effects()

    def tick(self, now: float) -> list[Effect]:
        self.core.tick(now)
        return self._effects()

    def submit(
        self, peer: bytes, now: float, task: str = "echo", args: dict[str, Any] | None = None, **options: Any
    ) -> list[Effect]:
        self.req += 1
        raw = canonical_args({"n": 1} if args is None else args)
        return self.client(peer, p.Submit(req=self.req, task=task, args=raw, **options), now)

    def submit_id(self, peer: bytes, now: float, **kwargs: Any) -> str:
        snapshot = assert_sent(self.submit(peer, now, **kwargs), peer, p.Snapshot)
        return str(snapshot.job["id"])

    def ready(
        self,
        peer: bytes,
        now: float,
        tasks: tuple[str, ...] = ("echo", "report"),
        options: dict[str, Any] | None = None,
    ) -> list[Effect]:
        return self.worker(peer, p.Ready(tasks=list(tasks), options=options, pid=7, host="h"), now)

    def status(self, job_id: str, now: float) -> p.Snapshot:
        self.req += 1
        reply = assert_sent(self.client(C3, p.Status(req=self.req, id=job_id), now), C3, p.Snapshot)
        return reply


# --- effect helpers --------------------------------------------------------------------------


def sent(effects: list[Effect], to: bytes, message_type: type[Any]) -> list[Any]:
    """Decoded messages of ``message_type`` sent to peer ``to`` (client or worker)."""
    found = []
    for effect in effects:
        if isinstance(effect, SendClient | SendWorker) and effect.to == to:
            parts = messages_in(effect.frames)
            found += [msg for msg in map(p.decode, parts) if isinstance(msg, message_type)]
    return found


def assert_sent(effects: list[Effect], to: bytes, message_type: type[Any], **fields: Any) -> Any:
    """Exactly one ``message_type`` went to ``to``, with these fields (dicts: a subset)."""
    found = sent(effects, to, message_type)
    assert len(found) == 1, f"expected one {message_type.__name__} to {to!r}, got {found}"
    msg = found[0]
    for name, expected in fields.items():
        actual = getattr(msg, name)
        if isinstance(expected, dict) and isinstance(actual, dict):
            assert {k: actual.get(k) for k in expected} == expected, (name, actual)
        else:
            assert actual == expected, (name, actual)
    return msg


def assert_not_sent(effects: list[Effect], message_type: type[Any]) -> None:
    """No ``message_type`` went to anybody."""
    for effect in effects:
        if isinstance(effect, SendClient | SendWorker):
            assert not isinstance(p.decode(effect.frames), message_type), effect


def events(effects: list[Effect]) -> list[p.Event]:
    """Published events, decoded; the topic frame must be the job id."""
    found = []
    for effect in effects:
        if isinstance(effect, Publish):
            msg = p.decode(effect.frames)
            assert isinstance(msg, p.Event)
            assert effect.frames[0] == msg.id.encode()
            found.append(msg)
    return found


def states(effects: list[Effect]) -> list[str]:
    return [event.state for event in events(effects)]


def index_of(effects: list[Effect], predicate: Any) -> int:
    return next(i for i, effect in enumerate(effects) if predicate(effect))


@pytest.fixture
def broker() -> Harness:
    return Harness()


def run_to_assign(broker: Harness, now: float = 0.0, **submit: Any) -> tuple[str, p.Assign]:
    """Submit a job with worker W1 ready; return its id and the Assign W1 got."""
    broker.ready(W1, now)
    effects = broker.submit(C1, now, **submit)
    assign = assert_sent(effects, W1, p.Assign)
    return assign.id, assign


def finish(
    broker: Harness, peer: bytes, assign: p.Assign, now: float, result: bytes = b'{"ok":true}'
) -> list[Effect]:
    return broker.worker(peer, p.Done(id=assign.id, attempt=assign.attempt, result=result), now)


# --- submit and dispatch ---------------------------------------------------------------------


def test_submit_replies_snapshot_and_publishes_queued(broker: Harness) -> None:
    effects = broker.submit(C1, 0.0, args={"b": 2, "a": 1})
    snapshot = assert_sent(
        effects,
        C1,
        p.Snapshot,
        req=1,
        result=None,
        job={"state": "queued", "task": "echo", "attempts": 0, "epoch": 1},
    )
    (event,) = events(effects)
    assert (event.id, event.state, event.seq, event.epoch) == (snapshot.job["id"], "queued", 1, 1)
    assert snapshot.job["seq"] == event.seq  # the reply shows the state of that event
    assert event.ts == pytest.approx(WALL_OFFSET_S)
    assert index_of(effects, lambda e: isinstance(e, Journal)) < index_of(
        effects, lambda e: isinstance(e, SendClient)
    )  # durable before the acknowledgement
    assert broker.core.stats()["queued"] == 1


def test_ready_worker_gets_the_queued_job(broker: Harness) -> None:
    job_id = broker.submit_id(C1, 0.0, args={"b": 2, "a": 1})
    effects = broker.ready(W1, 1.0)
    assert_sent(effects, W1, p.Assign, id=job_id, task="echo", attempt=1, args=b'{"a":1,"b":2}')
    (event,) = events(effects)
    assert (event.state, event.seq, event.attempts) == ("running", 2, 1)
    assert broker.status(job_id, 1.0).job["state"] == "running"


def test_longest_idle_worker_gets_the_job(broker: Harness) -> None:
    broker.ready(W1, 0.0)
    broker.ready(W2, 0.1)
    first = assert_sent(broker.submit(C1, 1.0, args={"i": 1}), W1, p.Assign)
    finish(broker, W1, first, 2.0)  # W1 is idle again, but W2 has waited longer
    broker.worker(W2, p.Heartbeat(), 2.5)  # a heartbeat keeps W2 alive, not ahead or behind
    effects = broker.submit(C1, 3.0, args={"i": 2})
    assert_sent(effects, W2, p.Assign)
    assert sent(effects, W1, p.Assign) == []


def test_priority_high_runs_before_normal(broker: Harness) -> None:
    normal = broker.submit_id(C1, 0.0, args={"i": 1})
    low = broker.submit_id(C1, 0.1, args={"i": 2}, priority="low")
    high = broker.submit_id(C1, 0.2, args={"i": 3}, priority="high")
    order = []
    assign = assert_sent(broker.ready(W1, 1.0), W1, p.Assign)
    order.append(assign.id)
    for step in range(2):
        assign = assert_sent(finish(broker, W1, assign, 2.0 + step), W1, p.Assign)
        order.append(assign.id)
    assert order == [high, normal, low]


def test_worker_only_gets_tasks_it_offers(broker: Harness) -> None:
    broker.ready(W1, 0.0, tasks=("report",))
    broker.ready(W2, 0.0, tasks=("echo",))
    effects = broker.submit(C1, 1.0, task="echo")
    assert_sent(effects, W2, p.Assign, task="echo")
    assert sent(effects, W1, p.Assign) == []


def test_delayed_job_runs_at_its_time(broker: Harness) -> None:
    broker.ready(W1, 0.0)
    effects = broker.submit(C1, 0.0, delay_s=5.0)
    assert_not_sent(effects, p.Assign)
    assert broker.core.next_deadline() <= 5.0
    broker.worker(W1, p.Heartbeat(), 4.0)
    assert_not_sent(broker.tick(4.9), p.Assign)
    assert_sent(broker.tick(5.0), W1, p.Assign, attempt=1)


# --- done, wait, progress ------------------------------------------------------------------------


def test_done_stores_before_replying_and_publishes_the_final_event(broker: Harness) -> None:
    job_id, assign = run_to_assign(broker)
    broker.req += 1
    assert broker.client(C2, p.Wait(req=broker.req, id=job_id), 0.5) == []
    effects = finish(broker, W1, assign, 1.0, result=b'{"sum":3}')
    store = index_of(effects, lambda e: isinstance(e, StoreResult))
    reply = index_of(effects, lambda e: isinstance(e, SendClient) and e.to == C2)
    publish = index_of(effects, lambda e: isinstance(e, Publish))
    assert store < reply and store < publish
    stored = effects[store]
    assert isinstance(stored, StoreResult)
    assert (stored.job_id, stored.result, stored.view["state"]) == (job_id, b'{"sum":3}', "done")
    assert_sent(
        effects, C2, p.Snapshot, req=broker.req, result=b'{"sum":3}', job={"id": job_id, "state": "done"}
    )
    assert states(effects) == ["done"]
    seqs = [event.seq for event in events(broker.history)]
    assert seqs == list(range(1, len(seqs) + 1))  # strictly increasing, no gap
    assert broker.status(job_id, 2.0).result == b'{"sum":3}'


def test_wait_on_a_running_job_replies_at_done(broker: Harness) -> None:
    job_id, assign = run_to_assign(broker)
    broker.req += 1
    req = broker.req
    assert sent(broker.client(C2, p.Wait(req=req, id=job_id), 0.5), C2, p.Snapshot) == []
    assert sent(broker.worker(W1, p.Heartbeat(), 0.7), C2, p.Snapshot) == []
    effects = finish(broker, W1, assign, 1.0)
    assert_sent(effects, C2, p.Snapshot, req=req, job={"state": "done"})


def test_wait_on_a_finished_job_replies_at_once(broker: Harness) -> None:
    job_id, assign = run_to_assign(broker)
    finish(broker, W1, assign, 1.0)
    effects = broker.client(C2, p.Wait(req=99, id=job_id), 2.0)
    assert_sent(effects, C2, p.Snapshot, req=99, job={"state": "done"})


def test_done_with_last_progress_sets_the_figures(broker: Harness) -> None:
    job_id, assign = run_to_assign(broker)
    done = p.Done(id=job_id, attempt=1, result=b"1", last={"done": 7, "total": 7, "message": "fin"})
    (event,) = events(broker.worker(W1, done, 1.0))
    assert (event.done, event.total, event.message, event.eta_s) == (7, 7, "fin", 0.0)


def test_progress_from_the_current_attempt(broker: Harness) -> None:
    job_id, _ = run_to_assign(broker)
    eta = None
    for step in range(1, 5):
        effects = broker.event(
            p.Progress(id=job_id, attempt=1, done=step, total=10, message=f"step {step}"), float(step)
        )
        (event,) = events(effects)
        assert (event.state, event.done, event.total, event.message) == ("running", step, 10, f"step {step}")
        eta = event.eta_s
    assert eta == pytest.approx(6.0, rel=0.2)
    view = broker.status(job_id, 5.0).job
    assert (view["done"], view["total"], view["message"]) == (4, 10, "step 4")


def test_progress_from_a_stale_attempt_is_dropped(broker: Harness) -> None:
    job_id, _ = run_to_assign(broker)
    before = broker.core.counters["stale_messages"]
    assert broker.event(p.Progress(id=job_id, attempt=2, done=5, total=10), 1.0) == []
    assert broker.event(p.Progress(id="no-such-job", attempt=1, done=5, total=10), 1.0) == []
    assert broker.core.counters["stale_messages"] == before + 2
    assert broker.status(job_id, 1.0).job["done"] == 0


def test_progress_after_done_is_dropped(broker: Harness) -> None:
    job_id, assign = run_to_assign(broker)
    finish(broker, W1, assign, 1.0)
    assert broker.event(p.Progress(id=job_id, attempt=1, done=3, total=10), 1.1) == []
    assert broker.status(job_id, 2.0).job["state"] == "done"


def test_negative_progress_is_invalid(broker: Harness) -> None:
    job_id, _ = run_to_assign(broker)
    assert broker.event(p.Progress(id=job_id, attempt=1, done=-1, total=10), 1.0) == []
    assert broker.core.counters["invalid_messages"] == 1


def test_malformed_event_is_counted_and_dropped(broker: Harness) -> None:
    job_id, _ = run_to_assign(broker)
    broker.core.receive_event([b"garbage"], 1.0)
    assert broker.core.effects_to_apply() == []
    assert broker.core.counters["invalid_messages"] == 1
    (event,) = events(broker.event(p.Progress(id=job_id, attempt=1, done=1, total=2), 1.1))
    assert event.done == 1


# --- heartbeats and lost workers -------------------------------------------------------------------


def test_broker_heartbeats_an_idle_worker(broker: Harness) -> None:
    broker.ready(W1, 0.0)
    assert broker.tick(0.5) == []
    assert_sent(broker.tick(1.0), W1, p.Heartbeat)
    assert broker.tick(1.5) == []
    assert broker.core.next_deadline() == pytest.approx(2.0)


def test_heartbeat_expiry_requeues_on_the_next_worker(broker: Harness) -> None:
    broker.ready(W1, 0.0)
    broker.ready(W2, 0.0)
    job_id = assert_sent(broker.submit(C1, 0.0), W1, p.Assign, attempt=1).id
    for now in (1.0, 2.0, 3.0):
        broker.worker(W2, p.Heartbeat(), now)  # W2 stays alive, W1 is silent
    assert "queued" not in states(broker.tick(3.0))  # three silent intervals: not yet dead
    effects = broker.tick(3.5) + broker.worker(W2, p.Heartbeat(), 3.6)
    assert states(effects)[:1] == ["queued"]
    assert_sent(effects, W2, p.Assign, id=job_id, attempt=2)
    assert broker.core.counters["workers_lost"] == 1
    assert W1 not in broker.core.workers
    view = broker.status(job_id, 3.7).job
    assert (view["state"], view["attempts"]) == ("running", 2)


def test_heartbeat_expiry_reassigns_within_the_same_tick(broker: Harness) -> None:
    broker.ready(W1, 0.0)
    broker.ready(W2, 0.0)
    job_id = assert_sent(broker.submit(C1, 0.0), W1, p.Assign).id
    broker.worker(W2, p.Heartbeat(), 3.0)
    assert_sent(broker.tick(3.5), W2, p.Assign, id=job_id, attempt=2)


def test_lost_worker_after_max_attempts_fails_with_worker_lost(broker: Harness) -> None:
    now = 0.0
    broker.submit(C1, now, max_attempts=2)
    for attempt, peer in [(1, W1), (2, W2)]:
        assign = assert_sent(broker.ready(peer, now), peer, p.Assign, attempt=attempt)
        now += 3 * HEARTBEAT_S + 0.5
        effects = broker.tick(now)
    assert states(effects) == ["failed"]
    (event,) = events(effects)
    assert event.error is not None
    assert event.error["type"] == "WorkerLost"
    assert "missed heartbeats for 3 s" in event.error["message"]
    assert "attempt 2 of 2" in event.error["message"]
    view = broker.status(assign.id, now).job
    assert (view["state"], view["attempts"]) == ("failed", 2)
    assert_not_sent(broker.ready(W3, now), p.Assign)


def test_max_attempts_from_the_task_options(broker: Harness) -> None:
    broker.ready(W1, 0.0, options={"echo": {"max_attempts": 1}})
    broker.submit(C1, 0.0)
    effects = broker.tick(3.5)
    assert states(effects) == ["failed"]


def test_worker_unreachable_requeues_its_job(broker: Harness) -> None:
    job_id, _ = run_to_assign(broker)
    broker.ready(W2, 0.5)
    broker.core.worker_unreachable(W1, 1.0)
    effects = broker._effects()
    assert states(effects) == ["queued", "running"]
    assert_sent(effects, W2, p.Assign, id=job_id, attempt=2)


def test_leaving_worker_that_dies_before_finishing_loses_nothing(broker: Harness) -> None:
    job_id, _ = run_to_assign(broker)
    assert states(broker.worker(W1, p.Bye(), 1.0)) == []
    broker.ready(W2, 1.5)
    broker.worker(W2, p.Heartbeat(), 3.5)
    requeued = broker.tick(4.2)  # W1 silent past its liveness (W2 heard at 3.5 is not)
    assert states(requeued)[0] == "queued"
    assert_sent(requeued, W2, p.Assign, id=job_id, attempt=2)


def test_heartbeat_from_an_unknown_worker_gets_bye(broker: Harness) -> None:
    effects = broker.worker(W3, p.Heartbeat(), 0.0)
    assert_sent(effects, W3, p.Bye)
    assert W3 not in broker.core.workers


# --- failures and retries ------------------------------------------------------------------------


def test_failed_with_retry_is_requeued_after_backoff(broker: Harness) -> None:
    job_id, _ = run_to_assign(broker)
    error = {"type": "IOError", "message": "flaky", "traceback": "tb"}
    effects = broker.worker(W1, p.Failed(id=job_id, attempt=1, error=error, retry=True), 1.0)
    assert states(effects) == ["queued"]
    assert_not_sent(effects, p.Assign)  # W1 is idle, but the back-off holds the job
    assert broker.core.next_deadline() <= 1.5
    assert_not_sent(broker.tick(1.4), p.Assign)
    effects = broker.tick(1.5)
    assert_sent(effects, W1, p.Assign, id=job_id, attempt=2)
    assert broker.core.counters["retried"] == 1


def test_failed_without_retry_is_final(broker: Harness) -> None:
    job_id, _ = run_to_assign(broker)
    error = {"type": "ValueError", "message": "bad year", "traceback": "Traceback…"}
    effects = broker.worker(W1, p.Failed(id=job_id, attempt=1, error=error, retry=False), 1.0)
    (event,) = events(effects)
    assert (event.state, event.error) == ("failed", error)
    (stored,) = [e for e in effects if isinstance(e, StoreResult)]
    assert stored.cache_key is None  # failures are never cached
    assert_not_sent(broker.tick(100.0), p.Assign)
    assert broker.core.counters["failed"] == 1


def test_retry_stops_at_max_attempts(broker: Harness) -> None:
    job_id, _ = run_to_assign(broker, max_attempts=2)
    error = {"type": "IOError", "message": "flaky", "traceback": ""}
    broker.worker(W1, p.Failed(id=job_id, attempt=1, error=error), 1.0)
    assert_sent(broker.tick(2.0), W1, p.Assign, attempt=2)
    effects = broker.worker(W1, p.Failed(id=job_id, attempt=2, error=error), 3.0)
    assert states(effects) == ["failed"]


# --- cancel --------------------------------------------------------------------------------------


def test_cancel_queued_job(broker: Harness) -> None:
    job_id = broker.submit_id(C1, 0.0)
    effects = broker.client(C2, p.Cancel(req=5, id=job_id), 1.0)
    assert_sent(effects, C2, p.Snapshot, req=5, job={"id": job_id, "state": "cancelled"})
    assert states(effects) == ["cancelled"]
    assert_not_sent(broker.ready(W1, 2.0), p.Assign)
    assert_not_sent(broker.tick(10.0), p.Assign)
    assert broker.core.counters["cancelled"] == 1


def test_cancel_running_job_stops_its_worker(broker: Harness) -> None:
    job_id, _ = run_to_assign(broker)
    effects = broker.client(C2, p.Cancel(req=5, id=job_id), 1.0)
    assert_sent(effects, W1, p.Stop, id=job_id, attempt=1)
    assert_sent(effects, C2, p.Snapshot, job={"state": "cancelled"})
    assert states(effects) == ["cancelled"]
    # The worker confirms; it is free again and the cancel stays final.
    error = {"type": "Cancelled", "message": "stopped", "traceback": ""}
    broker.submit(C1, 1.5, args={"other": True})
    effects = broker.worker(W1, p.Failed(id=job_id, attempt=1, error=error, retry=False), 2.0)
    assert_sent(effects, W1, p.Assign, attempt=1)
    assert broker.status(job_id, 2.0).job["state"] == "cancelled"


def test_done_racing_a_cancel_is_ignored(broker: Harness) -> None:
    job_id, assign = run_to_assign(broker)
    broker.client(C2, p.Cancel(req=5, id=job_id), 1.0)
    broker.submit(C1, 1.5, args={"other": True})
    effects = finish(broker, W1, assign, 2.0)  # sent before the worker saw the Stop
    assert_sent(effects, W1, p.Assign)
    assert broker.status(job_id, 2.0).job["state"] == "cancelled"


def test_cancel_a_finished_job_changes_nothing(broker: Harness) -> None:
    job_id, assign = run_to_assign(broker)
    finish(broker, W1, assign, 1.0)
    effects = broker.client(C2, p.Cancel(req=5, id=job_id), 2.0)
    assert_sent(effects, C2, p.Snapshot, job={"state": "done"})
    assert events(effects) == []


# --- coalescing and the cache ------------------------------------------------------------------


def test_identical_submits_coalesce(broker: Harness) -> None:
    first = assert_sent(broker.submit(C1, 0.0, args={"a": 1, "b": 2}), C1, p.Snapshot)
    effects = broker.submit(C2, 0.5, args={"b": 2, "a": 1})
    second = assert_sent(effects, C2, p.Snapshot)
    assert second.job["id"] == first.job["id"]
    assert second.job["watchers"] == 2
    assert events(effects) == []
    assert broker.core.counters["coalesced"] == 1
    assert len(sent(broker.ready(W1, 1.0), W1, p.Assign)) == 1
    assert_not_sent(broker.ready(W2, 1.0), p.Assign)


def test_different_scope_does_not_coalesce(broker: Harness) -> None:
    first = broker.submit_id(C1, 0.0, scope="tenant-a")
    assert broker.submit_id(C2, 0.0, scope="tenant-b") != first


def test_cache_hit_after_done(broker: Harness) -> None:
    job_id, assign = run_to_assign(broker, args={"region": "eu"})
    finish(broker, W1, assign, 1.0, result=b'{"total":42}')
    effects = broker.submit(C2, 2.0, args={"region": "eu"})
    assert_sent(
        effects, C2, p.Snapshot, result=b'{"total":42}', job={"id": job_id, "state": "done", "cached": True}
    )
    assert_not_sent(effects, p.Assign)
    assert events(effects) == []
    assert broker.core.counters["cache_hits"] == 1


def test_force_bypasses_the_cache(broker: Harness) -> None:
    job_id, assign = run_to_assign(broker)
    finish(broker, W1, assign, 1.0)
    effects = broker.submit(C2, 2.0, force=True)
    snapshot = assert_sent(effects, C2, p.Snapshot, job={"state": "queued", "cached": False})
    assert snapshot.job["id"] != job_id
    assert_sent(effects, W1, p.Assign, id=snapshot.job["id"])


def test_ttl_zero_is_not_cached(broker: Harness) -> None:
    job_id, assign = run_to_assign(broker, ttl_s=0.0)
    effects = finish(broker, W1, assign, 1.0)
    (stored,) = [e for e in effects if isinstance(e, StoreResult)]
    assert stored.cache_key is None and stored.ttl_s == 0.0
    assert stored.retention_s > 0  # still readable by id
    assert broker.results.keys == {}
    again = assert_sent(broker.submit(C2, 2.0, ttl_s=0.0), C2, p.Snapshot)
    assert again.job["id"] != job_id and again.job["cached"] is False


def test_task_ttl_from_worker_options(broker: Harness) -> None:
    broker.ready(W1, 0.0, options={"echo": {"ttl_s": 120}})
    assign = assert_sent(broker.submit(C1, 0.0), W1, p.Assign)
    (stored,) = [e for e in finish(broker, W1, assign, 1.0) if isinstance(e, StoreResult)]
    assert stored.ttl_s == 120.0 and stored.cache_key is not None


def test_status_of_a_job_only_in_the_store(broker: Harness) -> None:
    broker.results.jobs["old"] = ({"id": "old", "state": "done"}, b"[1]")
    effects = broker.client(C1, p.Status(req=3, id="old"), 0.0)
    assert_sent(effects, C1, p.Snapshot, req=3, result=b"[1]", job={"state": "done"})


# --- refused requests --------------------------------------------------------------------------


def test_unknown_task_with_workers_connected(broker: Harness) -> None:
    broker.ready(W1, 0.0, tasks=("echo",))
    effects = broker.submit(C1, 0.0, task="nope")
    error = assert_sent(effects, C1, p.Error, req=1, code="unknown_task")
    assert "nope" in error.message
    assert events(effects) == []
    assert_sent(broker.submit(C1, 0.1, task="echo"), W1, p.Assign)


def test_unknown_task_without_workers_is_queued(broker: Harness) -> None:
    effects = broker.submit(C1, 0.0, task="later")
    assert_sent(effects, C1, p.Snapshot, job={"state": "queued"})


@pytest.mark.parametrize("request_type", [p.Status, p.Wait, p.Cancel])
def test_unknown_job_id(broker: Harness, request_type: type[Any]) -> None:
    effects = broker.client(C1, request_type(req=4, id="AAAAAAAAAAAAAAAAAAAAAA"), 0.0)
    assert_sent(effects, C1, p.Error, req=4, code="unknown_job")
    assert [e for e in effects if not isinstance(e, SendClient)] == []


@pytest.mark.parametrize(
    ("args", "options", "code"),
    [
        (b"[1,2]", {}, "bad_args"),
        (b'{"x":NaN}', {}, "bad_args"),
        (b"{bad", {}, "bad_args"),
        (b"{}", {"priority": "urgent"}, "bad_args"),
        (b"{}", {"delay_s": -1.0}, "bad_args"),
        (b"{}", {"max_attempts": 0}, "bad_args"),
        (b'{"n":' + b"9" * 30 + b"}", {}, "bad_args"),
    ],
    ids=["list", "nan", "not-json", "priority", "delay", "attempts", "bigint"],
)
def test_bad_submission_is_refused(broker: Harness, args: bytes, options: dict[str, Any], code: str) -> None:
    effects = broker.client(C1, p.Submit(req=9, task="echo", args=args, **options), 0.0)
    assert_sent(effects, C1, p.Error, req=9, code=code)
    assert len(effects) == 1
    assert broker.core.jobs == {}
    assert_sent(broker.submit(C1, 0.1), C1, p.Snapshot, job={"state": "queued"})


def test_malformed_client_frame_changes_nothing(broker: Harness) -> None:
    job_id, _ = run_to_assign(broker)
    before = broker.core.stats()
    broker.core.receive_client(C2, [p.TAG, b"SUBMIT", b"{not json"], 1.0)
    effects = broker._effects()
    assert len(effects) == 1
    error = assert_sent(effects, C2, p.Error, code="protocol")
    assert "header is not JSON" in error.message
    after = broker.core.stats()
    assert after.pop("invalid_messages") == before.pop("invalid_messages") + 1
    assert after == before
    assert broker.status(job_id, 1.0).job["state"] == "running"
    assert_sent(broker.submit(C2, 1.1, args={"next": 1}), C2, p.Snapshot, job={"state": "queued"})


def test_lone_surrogate_scope_is_a_protocol_error(broker: Harness) -> None:
    # The header decodes to a scope str that cannot be encoded for the cache key.
    frames = p.encode(p.Submit(req=1, task="echo", args=b"{}", scope="ok"))
    frames[2] = frames[2].replace(b'"ok"', b'"\\ud800"')
    broker.core.receive_client(C1, frames, 0.0)
    assert_sent(broker._effects(), C1, p.Error, code="protocol")
    assert_sent(broker.submit(C1, 0.1), C1, p.Snapshot)


def test_client_may_not_send_worker_messages(broker: Harness) -> None:
    effects = broker.client(C1, p.Heartbeat(), 0.0)
    assert_sent(effects, C1, p.Error, code="protocol")
    assert broker.core.counters["invalid_messages"] == 1


def test_malformed_worker_frame_gets_an_error(broker: Harness) -> None:
    broker.ready(W1, 0.0)
    broker.core.receive_worker(W1, [p.TAG, b"READY"], 0.5)
    effects = broker._effects()
    assert_sent(effects, W1, p.Error, code="protocol")
    assert broker.core.counters["invalid_messages"] == 1
    assert_sent(broker.submit(C1, 1.0), W1, p.Assign)


def test_done_from_a_worker_that_does_not_hold_the_job(broker: Harness) -> None:
    job_id, assign = run_to_assign(broker)
    broker.ready(W2, 0.5)
    for peer, attempt in [(W2, 1), (W3, 1), (W1, 2)]:
        effects = broker.worker(peer, p.Done(id=job_id, attempt=attempt, result=b"1"), 1.0)
        assert [e for e in effects if isinstance(e, StoreResult | Publish)] == []
    assert broker.core.counters["stale_messages"] == 3
    assert broker.status(job_id, 1.0).job["state"] == "running"
    assert states(finish(broker, W1, assign, 2.0)) == ["done"]


# --- events for watchers -----------------------------------------------------------------------


def test_subscription_republishes_the_latest_event(broker: Harness) -> None:
    job_id, _ = run_to_assign(broker)
    last = events(broker.event(p.Progress(id=job_id, attempt=1, done=3, total=9), 1.0))[-1]
    broker.core.receive_subscription(job_id.encode(), 2.0)
    (again,) = events(broker._effects())
    assert (again.seq, again.state, again.done, again.total) == (last.seq, "running", 3, 9)
    broker.core.receive_subscription(b"unknown-topic", 2.0)
    assert broker._effects() == []


def test_stats_reply(broker: Harness) -> None:
    broker.ready(W1, 0.0)
    broker.submit(C1, 0.0, args={"i": 1})
    broker.submit(C1, 0.0, args={"i": 2})
    counters = assert_sent(broker.client(C2, p.Stats(req=3), 0.0), C2, p.Counters, req=3)
    assert counters.stats == {
        **counters.stats,
        "queued": 1,
        "running": 1,
        "workers": 1,
        "idle_workers": 0,
        "submitted": 2,
        "tasks": ["echo", "report"],
    }


def test_final_snapshot_carries_the_final_event_seq(broker: Harness) -> None:
    job_id, assign = run_to_assign(broker)
    broker.client(C2, p.Wait(req=7, id=job_id), 0.5)
    effects = finish(broker, W1, assign, 1.0)
    (final,) = events(effects)
    assert assert_sent(effects, C2, p.Snapshot).job["seq"] == final.seq


def test_worker_back_from_a_partition_is_busy_then_its_late_result_counts_once(
    broker: Harness,
) -> None:
    broker.ready(W1, 0.0)
    job_id = assert_sent(broker.submit(C1, 0.0), W1, p.Assign).id
    broker.tick(3.5)  # W1 silent: lost, its job re-queued (no other worker)
    back = broker.worker(W1, p.Ready(tasks=["echo", "report"], busy=True), 4.0)
    assert_not_sent(back, p.Assign)  # still busy with attempt 1: not idle
    done = broker.worker(W1, p.Done(id=job_id, attempt=1, result=b"[1]"), 4.1)
    assert states(done) == ["done"]
    assert broker.status(job_id, 4.2).result == b"[1]"
    again = broker.submit(C1, 4.3, args={"other": 1})
    assert_sent(again, W1, p.Assign)  # idle again after its late outcome


def test_late_result_of_a_superseded_attempt_is_dropped(broker: Harness) -> None:
    broker.ready(W1, 0.0)
    job_id = assert_sent(broker.submit(C1, 0.0), W1, p.Assign).id
    broker.tick(3.5)
    assert_sent(broker.ready(W2, 3.6), W2, p.Assign, id=job_id, attempt=2)
    broker.worker(W1, p.Ready(tasks=["echo", "report"], busy=True), 4.0)
    late = broker.worker(W1, p.Done(id=job_id, attempt=1, result=b"[1]"), 4.1)
    assert states(late) == []
    assert broker.core.counters["stale_messages"] == 1
    assert broker.status(job_id, 4.2).job["state"] == "running"


def test_warm_shutdown_finishes_the_job_instead_of_requeueing_it(broker: Harness) -> None:
    broker.ready(W1, 0.0)
    broker.ready(W2, 0.0)
    job_id = assert_sent(broker.submit(C1, 0.0), W1, p.Assign).id
    bye = broker.worker(W1, p.Bye(), 0.5)
    assert states(bye) == [] and sent(bye, W2, p.Assign) == [], "not re-queued"
    other = broker.submit(C1, 0.6, args={"n": 2})
    assert_sent(other, W2, p.Assign)
    assert sent(other, W1, p.Assign) == [], "a leaving worker takes no new job"
    done = broker.worker(W1, p.Done(id=job_id, attempt=1, result=b"{}"), 1.0)
    assert states(done) == ["done"]
    assert broker.core.stats()["workers"] == 1, "it is gone once its job ended"


def test_idle_worker_saying_bye_is_gone_at_once(broker: Harness) -> None:
    broker.ready(W1, 0.0)
    broker.worker(W1, p.Bye(), 0.5)
    assert broker.core.stats()["workers"] == 0


def test_restored_jobs_keep_seq_monotonic_across_epochs(broker: Harness) -> None:
    job_id = broker.submit_id(C1, 0.0)
    record = job_record(broker.core.jobs[job_id])
    record["seq"] = 57  # events after the last journal write are not journaled
    restarted = BrokerProtocol(FakeResults(), epoch=2, heartbeat_s=1.0)
    restarted.restore([record], 10.0)
    assert restarted.jobs[job_id].seq > 57
    again = BrokerProtocol(FakeResults(), epoch=3, heartbeat_s=1.0)
    again.restore([job_record(restarted.jobs[job_id])], 20.0)
    assert again.jobs[job_id].seq > restarted.jobs[job_id].seq


def test_events_nobody_subscribed_to_are_not_published_but_seq_still_counts() -> None:
    bare = BrokerProtocol(FakeResults(), epoch=1, heartbeat_s=1.0)
    bare.receive_client(C1, p.encode(p.Submit(req=1, task="echo", args=b"{}")), 0.0)
    effects = bare.effects_to_apply()
    assert [e for e in effects if isinstance(e, Publish)] == []
    (job,) = bare.jobs.values()
    topic = job.id.encode()
    bare.receive_subscription(topic, 1.0)  # a watcher arrives: it gets the latest event at once
    (event,) = events(bare.effects_to_apply())
    assert (event.id, event.seq) == (job.id, 1)
    bare.receive_client(C1, p.encode(p.Cancel(req=2, id=job.id)), 2.0)
    assert states(bare.effects_to_apply()) == ["cancelled"]
    bare.receive_subscription(topic, 3.0, subscribed=False)
    bare.receive_subscription(job.id[:5].encode(), 3.0)  # a prefix matches like ZeroMQ's
    bare.receive_subscription(topic, 3.5)
    bare.effects_to_apply()
    bare.receive_subscription(topic, 4.0, subscribed=False)
    assert bare.subscriptions.wanted(topic)
    bare.receive_subscription(job.id[:5].encode(), 4.0, subscribed=False)
    assert not bare.subscriptions.wanted(topic)


def test_a_full_queue_refuses_new_jobs_but_still_coalesces() -> None:
    capped = BrokerProtocol(FakeResults(), epoch=1, heartbeat_s=1.0, max_live_jobs=2)
    for req in (1, 2):
        capped.receive_client(C1, p.encode(p.Submit(req=req, task="echo", args=b'{"n":%d}' % req)), 0.0)
    capped.effects_to_apply()
    capped.receive_client(C1, p.encode(p.Submit(req=3, task="echo", args=b'{"n":3}')), 0.0)
    assert_sent(capped.effects_to_apply(), C1, p.Error, req=3, code="queue_full")
    capped.receive_client(C2, p.encode(p.Submit(req=4, task="echo", args=b'{"n":1}')), 0.0)
    assert_sent(capped.effects_to_apply(), C2, p.Snapshot, req=4)  # joins the running one
    assert capped.stats()["submitted"] == 2


def test_a_worker_key_registers_only_its_granted_tasks(broker: Harness) -> None:
    ready = p.Ready(tasks=["echo", "report"], pid=7, host="h")
    broker.core.receive_worker(W1, p.encode(ready), 0.0, allowed_tasks=frozenset({"echo"}))
    broker._effects()
    assert broker.core.stats()["refused_tasks"] == 1
    effects = broker.submit(C1, 1.0, task="report")
    assert_sent(effects, C1, p.Error, code="unknown_task")  # no slot may run it
    assert not sent(effects, W1, p.Assign)
    effects = broker.submit(C1, 1.2, task="echo")
    assert_sent(effects, W1, p.Assign)  # the granted task still flows


def test_a_submit_that_waits_gets_its_reply_then_the_final_one_under_the_next_req(broker: Harness) -> None:
    broker.ready(W1, 0.0)
    effects = broker.submit(C1, 0.1, wait=True)
    ack = assert_sent(effects, C1, p.Snapshot)
    assign = assert_sent(effects, W1, p.Assign, id=ack.job["id"])
    assert ack.req == broker.req and ack.job["state"] == "queued"  # the view as admitted
    effects = broker.worker(W1, p.Done(id=assign.id, attempt=assign.attempt, result=b'{"r":1}'), 0.2)
    final = assert_sent(effects, C1, p.Snapshot)
    assert (final.req, final.job["state"], final.result) == (ack.req + 1, "done", b'{"r":1}')
    again = broker.submit(C1, 0.3, wait=True)  # the cached result: both replies at once
    replies = sent(again, C1, p.Snapshot)
    assert [r.req for r in replies] == [broker.req, broker.req + 1]
    assert all(r.result == b'{"r":1}' for r in replies)


def test_a_refused_submit_that_waits_leaves_no_waiter(broker: Harness) -> None:
    broker.ready(W1, 0.0)
    effects = broker.submit(C1, 0.1, task="nope", wait=True)
    assert_sent(effects, C1, p.Error, code="unknown_task")
    assert broker.core.stats()["waiting_clients"] == 0
