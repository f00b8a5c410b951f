"""Pure tests of batched submission: the core's SUBMITS path and broker/batches.py (no sockets)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from test_core import C1, C2, W1, FakeResults, Harness, assert_not_sent, assert_sent, finish, sent

from broker import protocol as p
from broker.batches import batch_messages, batch_reply, batch_views, child_submits, wait_messages
from broker.core import BrokerProtocol
from broker.effects import Journal, Publish, SendClient, SendWorker
from broker.errors import BadArguments, PayloadTooLarge, ProtocolError, QueueFull, UnknownTask
from broker.groups import MAX_GROUP_SIZE
from broker.replies import batch_options

DEEP: Any = 1
for _ in range(40):
    DEEP = [DEEP]


def submit_many(h: Harness, peer: bytes, items: list[Any], now: float, **options: Any) -> list[Any]:
    h.req += 1
    raw = json.dumps(items).encode()
    return h.client(peer, p.SubmitMany(req=h.req, task="echo", args=raw, **options), now)


def slots(effects: list[Any], peer: bytes = C1) -> list[dict[str, Any]]:
    reply = assert_sent(effects, peer, p.JobList)
    views = json.loads(reply.views)
    assert isinstance(views, list)
    return views


def test_a_batch_is_one_reply_with_a_view_per_item_in_order() -> None:
    h = Harness()
    effects = submit_many(h, C1, [{"n": 1}, {"n": 2}, {"n": 3}], 0.0, priority="high")
    views = slots(effects)
    assert [view["state"] for view in views] == ["queued"] * 3
    assert [json.loads(h.core.jobs[view["id"]].args) for view in views] == [{"n": 1}, {"n": 2}, {"n": 3}]
    assert all(h.core.jobs[view["id"]].priority == "high" for view in views)  # shared options
    assert len([e for e in effects if isinstance(e, SendClient)]) == 1
    puts = [e.record["job"]["id"] for e in effects if isinstance(e, Journal) and e.record["op"] == "put"]
    assert puts == [view["id"] for view in views]  # all journaled in this one turn
    assert h.core.stats()["submitted"] == 3


def test_a_batch_is_dispatched_to_idle_workers() -> None:
    h = Harness()
    h.ready(W1, 0.0)
    effects = submit_many(h, C1, [{"n": 1}, {"n": 2}], 0.0)
    first = slots(effects)[0]["id"]
    assert_sent(effects, W1, p.Assign, id=first)


def test_an_item_with_a_fresh_cached_result_is_answered_from_the_cache() -> None:
    h = Harness()
    h.ready(W1, 0.0)
    assign = assert_sent(h.submit(C1, 0.0, args={"n": 1}), W1, p.Assign)
    finish(h, W1, assign, 1.0)
    views = slots(submit_many(h, C1, [{"n": 1}, {"n": 2}], 2.0))
    assert views[0]["id"] == assign.id and views[0]["cached"] is True and views[0]["state"] == "done"
    assert views[1]["state"] == "queued" and views[1]["id"] != assign.id
    assert h.core.stats()["cache_hits"] == 1


def test_identical_items_of_one_batch_share_one_job() -> None:
    h = Harness()
    views = slots(submit_many(h, C1, [{"n": 1}, {"n": 2}, {"n": 1}], 0.0))
    assert views[0]["id"] == views[2]["id"] != views[1]["id"]
    assert h.core.jobs[views[2]["id"]].watchers == 2
    assert h.core.stats()["submitted"] == 2 and h.core.stats()["coalesced"] == 1


def test_an_item_identical_to_a_running_job_joins_it() -> None:
    h = Harness()
    h.ready(W1, 0.0)
    assign = assert_sent(h.submit(C2, 0.0, args={"n": 7}), W1, p.Assign)
    views = slots(submit_many(h, C1, [{"n": 7}, {"n": 8}], 1.0))
    assert views[0]["id"] == assign.id and views[0]["state"] == "running"
    assert h.core.jobs[assign.id].watchers == 2


def test_a_slot_holds_the_id_and_state_only_whatever_the_job_it_joins_holds() -> None:
    h = Harness()
    h.ready(W1, 0.0)
    assign = assert_sent(h.submit(C2, 0.0, args={"n": 7}), W1, p.Assign)
    h.worker(W1, p.Log(id=assign.id, attempt=1, lines=["x" * 900] * 30), 0.5)
    h.core.jobs[assign.id].error = {"type": "E", "message": "y" * 8000, "traceback": "z" * 8000}
    effects = submit_many(h, C1, [{"n": 7}], 1.0)
    assert slots(effects) == [{"id": assign.id, "state": "running"}]
    assert len(sent(effects, C1, p.JobList)[0].views) < 100
    assert h.status(assign.id, 1.5).job["log_count"] == 30  # status still has the rest


def test_a_refused_item_gets_an_error_slot_and_the_others_run() -> None:
    h = Harness()
    effects = submit_many(h, C1, [{"n": 1}, {"deep": DEEP}, {"n": 3}], 0.0)
    views = slots(effects)
    assert views[1] == {"error": {"code": "bad_args", "message": views[1]["error"]["message"]}}
    assert "deeper" in views[1]["error"]["message"]
    assert views[0]["state"] == views[2]["state"] == "queued"
    assert len(h.core.jobs) == 2
    assert_not_sent(effects, p.Error)


def test_items_past_the_queue_bound_get_queue_full_slots() -> None:
    capped = BrokerProtocol(FakeResults(), epoch=1, heartbeat_s=1.0, max_live_jobs=2)
    raw = json.dumps([{"n": 1}, {"n": 2}, {"n": 3}, {"n": 1}]).encode()
    capped.receive_client(C1, p.encode(p.SubmitMany(req=1, task="echo", args=raw)), 0.0)
    views = slots(capped.effects_to_apply())
    assert [(view.get("error") or {}).get("code") for view in views] == [None, None, "queue_full", None]
    assert "id" not in views[2]
    assert views[3]["id"] == views[0]["id"]  # a full queue still coalesces, as a lone submit does


def test_an_unknown_task_refuses_every_item_as_a_lone_submit_would() -> None:
    h = Harness()
    h.ready(W1, 0.0, tasks=("report",))
    h.req += 1
    raw = json.dumps([{"n": 1}, {"n": 2}]).encode()
    views = slots(h.client(C1, p.SubmitMany(req=h.req, task="echo", args=raw), 0.0))
    assert [view["error"]["code"] for view in views] == ["unknown_task", "unknown_task"]
    assert not h.core.jobs


def test_bad_options_refuse_every_item() -> None:
    h = Harness()
    views = slots(submit_many(h, C1, [{"n": 1}], 0.0, priority="urgent"))
    assert views[0]["error"]["code"] == "bad_args" and "priority" in views[0]["error"]["message"]
    assert not h.core.jobs


@pytest.mark.parametrize(
    ("payload", "phrase"),
    [
        (b'{"n":1}', "batch args must be a JSON array of objects"),
        (b"[]", f"a batch has 1..{MAX_GROUP_SIZE} jobs"),
        (json.dumps([{}] * (MAX_GROUP_SIZE + 1)).encode(), f"a batch has 1..{MAX_GROUP_SIZE} jobs"),
        (b'[{"n":1},[1,2],{"n":3}]', "job 1: args must be a JSON object"),
        (b'[{"n":1},"x"]', "job 1: args must be a JSON object"),
        (b'[{"n":1},', "args are not valid JSON"),
        (b'[{"n":NaN}]', "NaN is not allowed"),
    ],
)
def test_a_malformed_batch_is_refused_whole_and_changes_nothing(payload: bytes, phrase: str) -> None:
    h = Harness()
    h.ready(W1, 0.0)
    h.req += 1
    effects = h.client(C1, p.SubmitMany(req=h.req, task="echo", args=payload), 0.0)
    error = assert_sent(effects, C1, p.Error, req=h.req, code="bad_args")
    assert phrase in error.message
    assert not h.core.jobs
    assert not [e for e in effects if isinstance(e, Journal | Publish | SendWorker)]
    assert len(slots(submit_many(h, C1, [{"n": 1}], 1.0))) == 1  # the next good batch still works


def test_a_batch_without_payload_is_a_protocol_error() -> None:
    h = Harness()
    frames = [p.TAG, b"SUBMITS", b'{"req":1,"task":"echo"}']
    h.core.receive_client(C1, frames, 0.0)
    error = assert_sent(h.core.effects_to_apply(), C1, p.Error, code="protocol")
    assert "args" in error.message and not h.core.jobs


def test_storage_full_refuses_every_item() -> None:
    h = Harness()
    h.core.storage_error = "disk full"
    views = slots(submit_many(h, C1, [{"n": 1}, {"n": 2}], 0.0))
    assert [view["error"]["code"] for view in views] == ["storage_full"] * 2 and not h.core.jobs


def test_a_group_still_refuses_its_bad_payload_with_its_own_words() -> None:
    with pytest.raises(BadArguments, match="group args must be a JSON array"):
        child_submits(p.SubmitGroup(req=1, task="t", args=b"{}"))
    children = child_submits(p.SubmitGroup(req=1, task="t", args=b'[{"b":1,"a":2}]', scope="s"))
    assert children == [p.Submit(req=1, task="t", args=b'{"b":1,"a":2}', scope="s")]


# --- the client side: splitting map's args and reading the replies --------------------------


def reqs() -> Any:
    return iter(range(1, 10_000))


def test_batch_messages_split_by_count() -> None:
    msgs = batch_messages(reqs(), "t", [{"i": i} for i in range(2500)], batch_options({}))
    assert [type(msg) for msg in msgs] == [p.SubmitMany] * 3
    sizes = [len(json.loads(msg.args)) for msg in msgs]
    assert sizes == [1000, 1000, 500]
    assert [msg.req for msg in msgs] == [1, 2, 3]
    assert all(len(p.encode(msg)[3]) <= p.MAX_ARGS_BYTES for msg in msgs)


def test_batch_messages_split_by_bytes_and_send_a_huge_item_alone() -> None:
    big = {"s": "x" * (p.MAX_ARGS_BYTES // 3)}
    huge = {"s": "y" * (p.MAX_ARGS_BYTES - 8)}  # exactly the bound: no room for "[]"
    msgs = batch_messages(reqs(), "t", [big, big, big, huge, {"n": 1}], batch_options({"priority": "low"}))
    assert [type(msg).__name__ for msg in msgs] == ["SubmitMany", "SubmitMany", "Submit", "SubmitMany"]
    assert [len(json.loads(msg.args)) for msg in msgs if isinstance(msg, p.SubmitMany)] == [2, 1, 1]
    assert all(len(msg.args) <= p.MAX_ARGS_BYTES and msg.priority == "low" for msg in msgs)
    for msg in msgs:
        assert p.decode(p.encode(msg)) == msg  # every one passes the broker's bounds


def test_batch_messages_name_the_bad_args_and_send_nothing() -> None:
    with pytest.raises(BadArguments, match="job 1: args must be a JSON object"):
        batch_messages(reqs(), "t", [{"n": 1}, [1]], batch_options({}))  # type: ignore[list-item]
    with pytest.raises(TypeError, match="unknown submit option 'colour'"):
        batch_options({"colour": "red"})


def test_batch_views_raise_the_first_refused_item_as_a_lone_submit_would() -> None:
    msgs = batch_messages(reqs(), "t", [{"n": 1}, {"n": 2}, {"n": 3}], batch_options({}))
    ok = {"id": "a", "state": "queued"}
    full = {"error": {"code": "queue_full", "message": "the queue is full"}}
    reply = batch_reply(1, [p.Snapshot(req=1, job=ok), p.Error(req=1, code="queue_full", message="x"),
                            p.Snapshot(req=1, job=ok)])  # fmt: skip
    assert json.loads(reply.views)[1] == {"error": {"code": "queue_full", "message": "x"}}
    with pytest.raises(QueueFull, match="job 1: the queue is full"):
        batch_views([p.JobList(req=1, views=json.dumps([ok, full, ok]).encode())], msgs, 3)
    assert batch_views([p.JobList(req=1, views=json.dumps([ok] * 3).encode())], msgs, 3) == [ok] * 3
    retried = {"id": "b", "state": "queued", "error": {"type": "ValueError", "message": "attempt 1"}}
    reply = p.JobList(req=1, views=json.dumps([ok, retried, ok]).encode())
    assert batch_views([reply], msgs, 3)[1] == retried


def test_batch_views_raise_a_whole_message_error_and_check_the_count() -> None:
    msgs = batch_messages(reqs(), "t", [{"n": 1}, {"n": 2}], batch_options({}))
    with pytest.raises(UnknownTask):
        batch_views([p.Error(req=1, code="unknown_task", message="no")], msgs, 2)
    with pytest.raises(ProtocolError, match="1 of 2"):
        batch_views([p.JobList(req=1, views=b'[{"id":"a"}]')], msgs, 2)
    with pytest.raises(ProtocolError, match="JSON array of objects"):
        batch_views([p.JobList(req=1, views=b'{"id":"a"}')], msgs, 2)


def test_a_lone_submit_reply_reads_like_a_batch_slot() -> None:
    huge = {"s": "y" * (p.MAX_ARGS_BYTES - 8)}  # exactly the bound: no room for "[]"
    msgs = batch_messages(reqs(), "t", [huge], batch_options({}))
    assert isinstance(msgs[0], p.Submit)
    with pytest.raises(PayloadTooLarge, match="job 0: too big"):
        batch_views([p.Error(req=1, code="too_large", message="too big")], msgs, 1)
    assert batch_views([p.Snapshot(req=1, job={"id": "a"})], msgs, 1) == [{"id": "a"}]


def test_a_batch_reply_round_trips_a_thousand_views() -> None:
    h = Harness()
    effects = submit_many(h, C1, [{"i": i} for i in range(MAX_GROUP_SIZE)], 0.0)
    views = slots(effects)
    assert len(views) == len(set(view["id"] for view in views)) == MAX_GROUP_SIZE
    assert len(sent(effects, C1, p.JobList)) == 1


# --- WAITS: one message, one reply per job when it ends ---------------------------------------


def test_wait_many_replies_per_job_with_consecutive_reqs() -> None:
    h = Harness()
    h.ready(W1, 0.0)
    first = assert_sent(h.submit(C2, 0.0, args={"n": 1}), W1, p.Assign)
    finish(h, W1, first, 1.0)
    running = assert_sent(h.submit(C2, 2.0, args={"n": 2}), W1, p.Assign)
    effects = h.client(C1, p.WaitMany(req=100, ids=[running.id, first.id, "A" * 22]), 3.0)
    assert_sent(effects, C1, p.Snapshot, req=101, job={"id": first.id, "state": "done"})
    assert_sent(effects, C1, p.Error, req=102, code="unknown_job")
    assert len([e for e in effects if isinstance(e, SendClient)]) == 2  # the running one waits
    h.client(C1, p.WaitMany(req=100, ids=[running.id]), 3.5)  # repeated (a restart check): no-op
    done = finish(h, W1, running, 4.0)
    assert_sent(done, C1, p.Snapshot, req=100, job={"id": running.id, "state": "done"})


def test_wait_many_past_its_bound_is_refused_and_registers_nothing() -> None:
    h = Harness()
    job_id = h.submit_id(C1, 0.0)
    effects = h.client(C1, p.WaitMany(req=5, ids=[job_id] * (MAX_GROUP_SIZE + 1)), 1.0)
    error = assert_sent(effects, C1, p.Error, req=5, code="bad_args")
    assert f"1..{MAX_GROUP_SIZE} ids" in error.message
    assert_sent(h.client(C1, p.WaitMany(req=9, ids=[]), 1.0), C1, p.Error, req=9, code="bad_args")
    assert h.core.stats()["waiting_clients"] == 0


def test_wait_messages_split_ids_and_keep_a_lone_wait() -> None:
    waits, msgs = wait_messages(10, [f"id{i}" for i in range(2001)])
    assert [w.req for w in waits] == list(range(10, 2011))
    assert [type(m).__name__ for m in msgs] == ["WaitMany", "WaitMany", "Wait"]
    assert msgs[1] == p.WaitMany(req=1010, ids=[f"id{i}" for i in range(1000, 2000)], bundles=True)
    assert msgs[2] == p.Wait(req=2010, id="id2000")
    assert wait_messages(1, []) == ([], [])
