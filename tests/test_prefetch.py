"""Pure tests of prefetch: slots that hold several short jobs, and what happens to them.

A slot announces ``prefetch`` in its Ready; the broker sends it more than one job only for
a task whose mean run time is short (``broker.prefetch``). The first job a slot holds is
the one running. A slot that is lost may have run any of them, so each spends an attempt;
one it gives back with ``Release`` never started, and costs none.
"""

from __future__ import annotations

from typing import Any

import pytest
from test_core import C1, C2, W1, W2, Harness, assert_sent, sent, states

from broker import protocol as p
from broker.bundle import is_bundle
from broker.effects import SendWorker
from broker.prefetch import PREFETCH_BUDGET_S, prefetch_depth


def ready(prefetch: int, tasks: tuple[str, ...] = ("echo", "report")) -> p.Ready:
    return p.Ready(tasks=list(tasks), pid=7, host="h", prefetch=prefetch)


def learn_short_echo(broker: Harness, peer: bytes, now: float = 0.0) -> None:
    """One echo run of 2 ms on ``peer``: echo's mean run time is known, and short."""
    job_id = broker.submit_id(C2, now, args={"warm": 1})
    assign = assert_sent(broker.history, peer, p.Assign, id=job_id)
    broker.worker(peer, p.Done(id=job_id, attempt=assign.attempt, result=b"{}"), now + 0.002)


def holding(count: int) -> tuple[Harness, list[str]]:
    """A broker whose slot W1 (prefetch 4, echo known short) holds ``count`` echo jobs,
    submitted at 1.0, the first one running."""
    broker = Harness()
    broker.worker(W1, ready(prefetch=4), 0.0)
    learn_short_echo(broker, W1)
    ids = [broker.submit_id(C1, 1.0, args={"i": i}) for i in range(count)]
    assert assigned(broker.history, W1)[1:] == ids
    return broker, ids


def assigned(effects: list[Any], peer: bytes) -> list[str]:
    return [msg.id for msg in sent(effects, peer, p.Assign)]


def view(broker: Harness, job_id: str, now: float) -> dict[str, Any]:
    return broker.status(job_id, now).job


@pytest.mark.parametrize(
    ("prefetch", "mean_s", "depth"),
    [(1, 0.001, 1), (16, None, 1), (16, 0.001, 16), (16, 0.01, 5), (16, PREFETCH_BUDGET_S / 2, 2),
     (16, PREFETCH_BUDGET_S, 1), (16, 30.0, 1), (16, 0.0, 16), (400, 0.0, 400)],
)  # fmt: skip
def test_depth_holds_about_the_budget_of_a_short_task(
    prefetch: int, mean_s: float | None, depth: int
) -> None:
    assert prefetch_depth(prefetch, mean_s) == depth


def test_a_slot_that_prefetches_holds_several_short_jobs_in_order() -> None:
    broker = Harness()
    broker.worker(W1, ready(prefetch=4), 0.0)
    learn_short_echo(broker, W1)
    ids = [broker.submit_id(C1, 1.0, args={"i": i}) for i in range(6)]
    assert assigned(broker.history, W1)[1:] == ids[:4]  # the warm-up, then 4 held at once
    assert [view(broker, job_id, 1.0)["state"] for job_id in ids] == ["running"] * 4 + ["queued"] * 2
    effects = broker.worker(W1, p.Done(id=ids[0], attempt=1, result=b"{}"), 1.01)
    assert assigned(effects, W1) == []  # 3 of 4 held: more than half full
    effects = broker.worker(W1, p.Done(id=ids[1], attempt=1, result=b"{}"), 1.02)
    assert assigned(effects, W1) == ids[4:]  # down to half: topped up to 4 again


def test_a_new_job_goes_to_a_slot_with_room_even_when_more_than_half_full() -> None:
    broker, ids = holding(3)
    late = broker.submit_id(C1, 1.1, args={"late": 1})
    assert assigned(broker.history, W1)[-1] == late


def test_a_slot_that_reads_bundles_gets_its_top_up_as_one_message() -> None:
    broker = Harness()
    broker.worker(W1, p.Ready(tasks=["echo"], pid=7, host="h", prefetch=8, bundles=True), 0.0)
    learn_short_echo(broker, W1)
    ids = [broker.submit_id(C1, 1.0, args={"i": i}) for i in range(12)]
    for job_id in ids[:4]:
        effects = broker.worker(W1, p.Done(id=job_id, attempt=1, result=b"{}"), 1.01)
    to_w1 = [e for e in effects if isinstance(e, SendWorker) and e.to == W1]
    assert len(to_w1) == 1 and is_bundle(to_w1[0].frames)  # 4 jobs in one message
    assert assigned(effects, W1) == ids[8:12]


def test_a_task_with_no_known_run_time_or_long_runs_gets_one_job_per_slot() -> None:
    broker = Harness()
    broker.worker(W1, ready(prefetch=16), 0.0)
    first = broker.submit_id(C1, 0.0, task="report", args={"i": 1})
    second = broker.submit_id(C1, 0.0, task="report", args={"i": 2})
    assert assigned(broker.history, W1) == [first]  # mean unknown: no prefetch
    broker.worker(W1, p.Done(id=first, attempt=1, result=b"{}"), 30.0)  # a 30 s report
    broker.submit_id(C1, 30.0, task="report", args={"i": 3})
    assert assigned(broker.history, W1) == [first, second]  # still one at a time
    assert view(broker, second, 30.0)["state"] == "running"


def test_a_task_with_a_concurrency_limit_is_not_prefetched() -> None:
    broker = Harness()
    limited = {"echo": {"concurrency": 2}}
    broker.worker(W1, p.Ready(tasks=["echo"], options=limited, pid=7, host="h", prefetch=4), 0.0)
    learn_short_echo(broker, W1)
    ids = [broker.submit_id(C1, 1.0, args={"i": i}) for i in range(4)]
    assert assigned(broker.history, W1)[1:] == ids[:1]  # none held behind the running one
    broker.worker(W2, p.Ready(tasks=["echo"], options=limited, pid=8, host="h", prefetch=4), 1.1)
    # the limit of 2 is spent on two jobs that run, one per slot
    assert assigned(broker.history, W2) == ids[1:2]
    assert [view(broker, job_id, 1.1)["state"] for job_id in ids] == ["running"] * 2 + ["queued"] * 2


def test_idle_slots_get_work_before_busy_ones_are_topped_up() -> None:
    broker = Harness()
    broker.worker(W1, ready(prefetch=4), 0.0)
    learn_short_echo(broker, W1)
    broker.worker(W2, ready(prefetch=4), 0.5)
    a = broker.submit_id(C1, 1.0, args={"i": 1})
    b = broker.submit_id(C1, 1.0, args={"i": 2})
    assert assigned(broker.history, W1)[1:] == [a]
    assert assigned(broker.history, W2) == [b]  # idle W2 first, though W1 has room


def test_the_next_held_job_starts_when_the_one_before_it_ends() -> None:
    broker, [first, second] = holding(2)
    broker.worker(W1, p.Done(id=first, attempt=1, result=b"{}"), 1.5)
    started = view(broker, second, 1.5)["started_at"]
    assert started == pytest.approx(1.5 + 1_700_000_000.0)  # not when it was sent, at 1.0


def test_a_lost_slot_spends_an_attempt_on_every_job_it_held() -> None:
    broker, ids = holding(3)
    broker.worker(W2, ready(prefetch=4), 1.0)
    broker.worker(W2, p.Heartbeat(), 3.9)
    effects = broker.tick(4.05)  # W1 silent past its liveness: lost with 3 held
    again = sent(effects, W2, p.Assign)  # it may have run any of them: no attempt number twice
    assert {msg.id: msg.attempt for msg in again} == {ids[0]: 2, ids[1]: 2, ids[2]: 2}
    assert view(broker, ids[1], 4.05)["error"]["type"] == "WorkerLost"


def test_release_gives_an_unstarted_job_back_without_spending_an_attempt() -> None:
    broker, [first, second] = holding(2)
    effects = broker.worker(W1, p.Bye(), 1.1)  # warm shutdown: W1 keeps its running job
    assert assigned(effects, W1) == []
    effects = broker.worker(W1, p.Release(id=second, attempt=1), 1.2)
    assert states(effects) == ["queued"]
    assert view(broker, second, 1.2)["attempts"] == 0
    broker.worker(W2, ready(prefetch=4), 1.3)
    assert_sent(broker.history, W2, p.Assign, id=second, attempt=1)
    broker.worker(W1, p.Done(id=first, attempt=1, result=b"{}"), 1.4)
    assert W1 not in broker.core.workers  # gone once it held nothing


def test_a_release_from_a_slot_that_does_not_hold_the_job_changes_nothing() -> None:
    broker = Harness()
    broker.worker(W1, ready(prefetch=4), 0.0)
    broker.worker(W2, ready(prefetch=4), 0.0)
    job_id = broker.submit_id(C1, 1.0)
    holder = W1 if assigned(broker.history, W1) else W2
    other = W2 if holder == W1 else W1
    stale = broker.core.counters["stale_messages"]
    effects = broker.worker(other, p.Release(id=job_id, attempt=1), 1.1)
    assert states(effects) == []
    assert broker.core.counters["stale_messages"] == stale + 1
    assert view(broker, job_id, 1.1)["state"] == "running"


def test_cancel_of_a_held_job_that_waits_tells_its_slot() -> None:
    broker, [first, second] = holding(2)
    broker.req += 1
    effects = broker.client(C1, p.Cancel(req=broker.req, id=second), 1.1)
    assert_sent(effects, W1, p.Stop, id=second, attempt=1)
    assert view(broker, second, 1.1)["state"] == "cancelled"
    cancelled = {"type": "JobCancelled", "message": "job was cancelled", "traceback": ""}
    broker.worker(W1, p.Failed(id=second, attempt=1, error=cancelled, retry=False), 1.2)
    broker.worker(W1, p.Done(id=first, attempt=1, result=b"{}"), 1.3)
    assert view(broker, first, 1.3)["state"] == "done"
    assert view(broker, second, 1.3)["state"] == "cancelled"


def test_the_run_time_a_worker_reports_is_what_counts_not_the_round_trip() -> None:
    broker = Harness()
    broker.worker(W1, ready(prefetch=4), 0.0)
    warm = broker.submit_id(C2, 0.0, args={"warm": 1})
    done = p.Done(id=warm, attempt=1, result=b"{}", run_s=0.001)  # ran 1 ms; seen 2 s later
    broker.worker(W1, done, 2.0)
    ids = [broker.submit_id(C1, 3.0, args={"i": i}) for i in range(4)]
    assert assigned(broker.history, W1)[1:] == ids  # a 1 ms task: prefetched


@pytest.mark.parametrize("run_s", [-1.0, 1e9])
def test_a_run_time_past_belief_is_ignored(run_s: float) -> None:
    broker = Harness()
    broker.worker(W1, ready(prefetch=4), 0.0)
    warm = broker.submit_id(C2, 0.0, args={"warm": 1})
    broker.worker(W1, p.Done(id=warm, attempt=1, result=b"{}", run_s=run_s), 30.0)  # 30 s here
    ids = [broker.submit_id(C1, 31.0, args={"i": i}) for i in range(2)]
    assert assigned(broker.history, W1)[1:] == ids[:1]  # the mean is 30 s: one at a time
