"""Pure tests of groups: aggregation and state (broker/groups.py), and the core's group path."""

from __future__ import annotations

import json
from typing import Any

import pytest
from test_core import C1, C2, W1, W2, Harness, assert_sent

from broker import protocol as p
from broker.effects import Journal, Publish, StoreResult
from broker.groups import Child, Group, GroupIndex, aggregate, group_state

DEEP: Any = 1
for _ in range(40):
    DEEP = [DEEP]


def test_state_is_queued_running_then_the_worst_final() -> None:
    assert group_state(["queued", "queued"]) == "queued"
    assert group_state(["queued", "running"]) == "running"
    assert group_state(["done", "queued"]) == "running"
    assert group_state(["done", "failed", "running"]) == "running"  # final only when all are
    assert group_state(["done", "done"]) == "done"
    assert group_state(["done", "cancelled"]) == "cancelled"
    assert group_state(["cancelled", "failed", "done"]) == "failed"


def test_aggregate_sums_and_estimates_unknown_totals() -> None:
    assert aggregate([Child("running", 2, 4), Child("queued")]) == (2, 8)  # the queued one: ~4
    assert aggregate([Child("done", 4, 4), Child("done", 0, 0)]) == (8, 8)  # no progress: counts 1 mean
    assert aggregate([Child("queued"), Child("queued")]) == (0, 2)
    assert aggregate([Child("running", 9, 4)]) == (4, 4)  # never past a child's total


def test_group_tracks_final_children_and_ignores_strangers() -> None:
    group = Group.new("g" * 22, "t", [("a", Child("queued")), ("b", Child("done", 1, 1))], 0.0)
    assert not group.is_final and group.state == "running"
    assert group.observe("a", "running", 1, 2)
    assert not group.observe("a", "running", 1, 2)  # no change
    assert not group.observe("zzz", "done", 1, 1)  # not a child
    assert group.observe("a", "done", 2, 2)
    assert group.is_final and group.state == "done" and group.figures() == (3, 3)


def test_duplicate_children_count_per_place() -> None:
    group = Group.new("g" * 22, "t", [("a", Child("queued")), ("a", Child("queued"))], 0.0)
    group.observe("a", "done", 3, 3)
    assert group.is_final and group.figures() == (6, 6) and group.counts()["done"] == 2


def test_index_forgets_children_of_finished_groups() -> None:
    index = GroupIndex()
    group = Group.new("g" * 22, "t", [("a", Child("queued"))], 0.0)
    index.add(group)
    assert index.of_child("a") == [group]
    index.finish(group)
    assert index.of_child("a") == [] and index.get(group.id) is group


# --- the core -------------------------------------------------------------------------------


def submit_group(h: Harness, peer: bytes, args: list[Any], now: float, **options: Any) -> Any:
    h.req += 1
    raw = json.dumps(args).encode()
    return h.client(peer, p.SubmitGroup(req=h.req, task="echo", args=raw, **options), now)


def group_events(effects: list[Any], group_id: str) -> list[p.Event]:
    events = [p.decode(e.frames) for e in effects if isinstance(e, Publish)]
    return [e for e in events if isinstance(e, p.Event) and e.id == group_id]


def test_a_group_is_one_reply_with_its_children_rows() -> None:
    h = Harness()
    effects = submit_group(h, C1, [{"n": 1}, {"n": 2}, {"n": 3}], 0.0)
    reply = assert_sent(effects, C1, p.Snapshot)
    assert reply.job["kind"] == "group" and reply.job["size"] == 3 and reply.job["state"] == "queued"
    rows = json.loads(reply.result)
    assert [row["state"] for row in rows] == ["queued"] * 3
    records = [e.record for e in effects if isinstance(e, Journal)]
    assert records[-1]["job"]["kind"] == "group" and records[-1]["job"]["children"] == [r["id"] for r in rows]
    assert h.core.counters["submitted"] == 3


@pytest.mark.parametrize(
    ("args", "phrase"),
    [
        ({"n": 1}, "JSON array"),
        ([], "1..1000"),
        ([{}] * 1001, "1..1000"),
        ([{"n": 1}, "x"], "job 1: args must be a JSON object"),
        ([{"n": 1}, {"n": 2**60}], "job 1: integer out of range"),
        ([{"n": 1}, {"n": DEEP}], "job 1: args nest deeper"),
    ],
)
def test_a_bad_group_is_refused_whole(args: Any, phrase: str) -> None:
    h = Harness()
    h.req += 1
    effects = h.client(C1, p.SubmitGroup(req=h.req, task="echo", args=json.dumps(args).encode()), 0.0)
    error = assert_sent(effects, C1, p.Error)
    assert error.code == "bad_args" and phrase in error.message
    assert h.core.counters["submitted"] == 0 and not h.core.jobs
    assert_sent(submit_group(h, C2, [{"n": 1}], 0.1), C2, p.Snapshot)  # the next good one works


def test_an_unknown_task_refuses_the_group() -> None:
    h = Harness()
    h.ready(W1, 0.0, tasks=("report",))
    error = assert_sent(submit_group(h, C1, [{"n": 1}], 0.1), C1, p.Error)
    assert error.code == "unknown_task" and not h.core.jobs


def test_children_progress_and_ends_make_group_events_then_it_is_stored() -> None:
    h = Harness()
    h.ready(W1, 0.0, tasks=("echo",))
    h.ready(W2, 0.0, tasks=("echo",))
    reply = assert_sent(submit_group(h, C1, [{"n": 1}, {"n": 2}], 0.0), C1, p.Snapshot)
    group_id, (a, b) = reply.job["id"], [row["id"] for row in json.loads(reply.result)]
    h.core.receive_subscription(group_id.encode(), 0.1)
    again = group_events(h.core.effects_to_apply(), group_id)  # a new watcher: the latest event again
    latest_seq = h.status(group_id, 0.1).job["seq"]
    assert again[0].state == "running" and again[0].seq == latest_seq > reply.job["seq"]
    events = group_events(h.event(p.Progress(id=a, attempt=1, done=1, total=4), 0.2), group_id)
    assert events[0].done == 1 and events[0].total == 8 and events[0].extra["child"]["id"] == a
    effects = h.worker(W1, p.Done(id=a, attempt=1, result=b"{}"), 0.3)
    effects += h.worker(W2, p.Failed(id=b, attempt=1, error={"type": "E"}, retry=False), 0.4)
    final = group_events(effects, group_id)[-1]
    assert final.state == "failed" and final.extra["counts"]["failed"] == 1
    seqs = [e.seq for e in group_events(h.history, group_id)]
    assert seqs == sorted(set(seqs))
    stored = [e for e in effects if isinstance(e, StoreResult) and e.job_id == group_id]
    assert stored and stored[0].view["state"] == "failed"
    assert {"op": "end", "id": group_id} in [e.record for e in effects if isinstance(e, Journal)]
    status = h.status(group_id, 0.5)
    assert status.job["state"] == "failed" and json.loads(status.result)[1]["state"] == "failed"


def test_cached_children_make_a_group_final_at_once() -> None:
    h = Harness()
    h.ready(W1, 0.0, tasks=("echo",))
    job_id = h.submit_id(C1, 0.0, args={"n": 7})
    h.worker(W1, p.Done(id=job_id, attempt=1, result=b"7"), 0.1)
    reply = assert_sent(submit_group(h, C1, [{"n": 7}, {"n": 7}], 0.2), C1, p.Snapshot)
    assert reply.job["state"] == "done" and reply.job["done"] == reply.job["total"] == 2
    assert [row["id"] for row in json.loads(reply.result)] == [job_id, job_id]


def test_a_restarted_broker_rebuilds_live_groups_from_the_journal() -> None:
    h = Harness()
    effects = submit_group(h, C1, [{"n": 1}, {"n": 2}], 0.0)
    records = {}
    for effect in effects:
        if isinstance(effect, Journal) and effect.record["op"] == "put":
            records[effect.record["job"]["id"]] = effect.record["job"]
    group_id = assert_sent(effects, C1, p.Snapshot).job["id"]
    fresh = Harness()
    fresh.core.epoch = 2
    fresh.core.out.epoch = 2
    fresh.core.restore(list(records.values()), 10.0)
    status = fresh.status(group_id, 10.0)
    assert status.job["kind"] == "group" and status.job["state"] == "queued"
    assert status.job["seq"] > 2 << 32  # seq stays monotonic across incarnations
    assert len(json.loads(status.result)) == 2


def test_a_group_that_does_not_fit_the_queue_is_refused_whole() -> None:
    h = Harness()
    h.core.max_live_jobs = 3
    h.submit_id(C1, 0.0, args={"n": 0})
    error = assert_sent(submit_group(h, C1, [{"n": 1}, {"n": 2}, {"n": 3}], 0.1), C1, p.Error)
    assert error.code == "queue_full" and "room for 2 more jobs, not 3" in error.message
    assert len(h.core.jobs) == 1
    assert_sent(submit_group(h, C2, [{"n": 1}, {"n": 2}], 0.2), C2, p.Snapshot)
