"""Bundles: several worker-link messages in one ZeroMQ message (``broker.bundle``).

Pure tests of the grammar, of packing a turn's sends and of the broker core reading a
bundle; the agent's side runs against the scripted broker in test_agent.py.
"""

from __future__ import annotations

import pytest
from test_core import C1, W1, W2, Harness, assert_sent, run_to_assign, sent

from broker import protocol as p
from broker.bundle import MAX_BUNDLE_BYTES, MAX_BUNDLED, bundle, bundle_sends, is_bundle, pack, unbundle
from broker.effects import Publish, SendClient, SendWorker
from broker.errors import ProtocolError


def done(job_id: str, result: bytes = b"{}") -> list[bytes]:
    return p.encode(p.Done(id=job_id, attempt=1, result=result))


def test_a_bundle_gives_back_its_messages_in_order() -> None:
    messages = [done("a"), p.encode(p.Log(id="b", attempt=1, lines=["x"])), p.encode(p.Heartbeat())]
    frames = bundle(messages)
    assert is_bundle(frames) and not is_bundle(messages[0])
    assert unbundle(frames) == messages
    assert [type(p.decode(m)).__name__ for m in unbundle(frames)] == ["Done", "Log", "Heartbeat"]


@pytest.mark.parametrize(
    ("header", "why"),
    [
        (b"{not json", "not JSON"),
        (b"[3,3]", "must be"),
        (b'{"frames":[3]}', "must be"),  # one message is not a bundle
        (b'{"frames":[3,3],"x":1}', "must be"),
        (b'{"frames":"33"}', "must be"),
        (b'{"frames":[3,5]}', "3 or 4 frames"),
        (b'{"frames":[3,true]}', "3 or 4 frames"),
        (b'{"frames":[3,3.0]}', "3 or 4 frames"),
        (b'{"frames":[4,4]}', "counts 8 frames, the lengths 7"),
        (b'{"frames":[%s]}' % b",".join([b"3"] * (MAX_BUNDLED + 1)), "must be"),
        (b"{" + b" " * p.MAX_HEADER_BYTES + b"}", "header exceeds"),
    ],
)
def test_a_malformed_bundle_is_refused_whole(header: bytes, why: str) -> None:
    good = bundle([done("a"), p.encode(p.Heartbeat())])  # 4 + 3 frames
    with pytest.raises(ProtocolError, match=why):
        unbundle([*good[:2], header, *good[3:]])


def test_lengths_that_do_not_match_the_body_are_refused() -> None:
    tag, word, header, lengths, body = bundle([done("a"), p.encode(p.Heartbeat())])
    with pytest.raises(ProtocolError, match="the lengths add up to"):
        unbundle([tag, word, header, lengths, body + b"x"])
    with pytest.raises(ProtocolError, match="the lengths 6.75"):
        unbundle([tag, word, header, lengths[:-1], body])
    with pytest.raises(ProtocolError, match="takes 5 frames"):
        unbundle([tag, word, header, lengths])


def test_a_bundle_inside_a_bundle_is_refused() -> None:
    head = bundle([p.encode(p.Heartbeat()), p.encode(p.Heartbeat())])[:3]  # tag, word, header
    with pytest.raises(ProtocolError, match="inside a bundle"):
        unbundle(bundle([head, p.encode(p.Heartbeat())]))


def test_an_oversized_bundle_is_refused() -> None:
    with pytest.raises(ProtocolError, match="exceeds"):
        unbundle(bundle([done("a", b"x" * MAX_BUNDLE_BYTES), done("b")]))


def test_pack_keeps_the_order_within_the_bounds() -> None:
    messages = [done(str(i)) for i in range(MAX_BUNDLED + 3)]
    sends = pack(messages)
    assert [len(unbundle(s)) for s in sends] == [MAX_BUNDLED, 3]
    assert [m for s in sends for m in unbundle(s)] == messages
    assert pack([messages[0]]) == [messages[0]]  # one message goes as itself
    large = done("big", b"x" * MAX_BUNDLE_BYTES)
    sends = pack([messages[0], large, messages[1], messages[2]])
    assert sends[0] == messages[0] and sends[1] == large  # too large to share: alone, in its place
    assert unbundle(sends[2]) == messages[1:3]


def test_bundle_sends_packs_only_peers_that_read_bundles_and_keeps_the_rest_in_place() -> None:
    publish = Publish([b"topic", b"x"])
    reply = SendClient(b"c", [b"r"])
    effects = [SendWorker(W1, done("1")), publish, SendWorker(W2, done("2")), reply,
               SendWorker(W1, done("3")), SendWorker(W2, done("4"))]  # fmt: skip
    out = bundle_sends(effects, lambda peer: peer == W1)
    assert out[0] == SendWorker(W1, bundle([done("1"), done("3")]))  # where W1's first one was
    assert out[1:] == [publish, SendWorker(W2, done("2")), reply, SendWorker(W2, done("4"))]
    assert bundle_sends(effects, lambda peer: False) == effects


def test_the_broker_reads_a_bundle_of_results_as_its_messages() -> None:
    broker = Harness()
    first, assign1 = run_to_assign(broker)
    broker.ready(W2, 0.1)
    second = broker.submit_id(b"c", 0.2, args={"n": 2})
    assign2 = assert_sent(broker.history, W2, p.Assign, id=second)
    frames = bundle([p.encode(p.Log(id=first, attempt=assign1.attempt, lines=["hi"])),
                     p.encode(p.Done(id=first, attempt=assign1.attempt, result=b"1"))])  # fmt: skip
    broker.core.receive_worker(W1, frames, 0.3)
    broker.core.receive_worker(W2, bundle([done(second), p.encode(p.Heartbeat())]), 0.3)
    assert assign2.attempt == 1
    assert broker.status(first, 0.4).job["state"] == "done"
    assert broker.status(second, 0.4).job["state"] == "done"
    assert broker.core.counters["invalid_messages"] == 0


def test_a_malformed_bundle_from_a_worker_changes_nothing_but_the_count() -> None:
    broker = Harness()
    job_id, assign = run_to_assign(broker)
    ok = p.encode(p.Done(id=job_id, attempt=assign.attempt, result=b"1"))
    tag, word, _header, lengths, body = bundle([ok, p.encode(p.Heartbeat())])
    broker.core.receive_worker(W1, [tag, word, b'{"frames":[4,4]}', lengths, body], 0.3)  # counts 1 too many
    effects = broker.core.effects_to_apply()
    assert_sent(effects, W1, p.Error, code="protocol")
    assert broker.core.counters["invalid_messages"] == 1
    assert broker.status(job_id, 0.4).job["state"] == "running"  # the Done inside was not taken


def test_a_bad_message_inside_a_bundle_does_not_sink_the_good_one() -> None:
    broker = Harness()
    job_id, assign = run_to_assign(broker)
    ok = p.encode(p.Done(id=job_id, attempt=assign.attempt, result=b"1"))
    broker.core.receive_worker(W1, bundle([[p.TAG, b"NOPE", b"{}"], ok]), 0.3)
    assert sent(broker.core.effects_to_apply(), W1, p.Error)
    assert broker.core.counters["invalid_messages"] == 1
    assert broker.status(job_id, 0.4).job["state"] == "done"


def test_bundle_sends_packs_a_clients_replies_only_where_marked() -> None:
    marked = [SendClient(b"c", done(str(i)), True) for i in range(3)]
    plain = SendClient(b"c", done("plain"))
    out = bundle_sends([marked[0], plain, marked[1], marked[2]], lambda peer: False)
    assert out == [SendClient(b"c", bundle([m.frames for m in marked])), plain]


def test_final_snapshots_of_one_turn_come_bundled_to_a_wait_many_that_takes_them() -> None:
    broker = Harness()
    broker.ready(W1, 0.0)
    broker.ready(W2, 0.0)
    ids = [broker.submit_id(C1, 0.1, args={"i": i}) for i in range(2)]
    for peer, bundles in ((b"takes", True), (b"plain", False)):
        broker.client(peer, p.WaitMany(req=100, ids=ids, bundles=bundles), 0.2)
    for slot in (W1, W2):
        assign = assert_sent(broker.history, slot, p.Assign)
        broker.core.receive_worker(slot, p.encode(p.Done(id=assign.id, attempt=1, result=b"1")), 0.3)
    turn = broker.core.effects_to_apply()  # both ended in this turn
    takes = [e for e in turn if isinstance(e, SendClient) and e.to == b"takes"]
    plain = [e for e in turn if isinstance(e, SendClient) and e.to == b"plain"]
    assert len(takes) == 1 and is_bundle(takes[0].frames)
    assert sorted(p.decode(m).req for m in unbundle(takes[0].frames)) == [100, 101]  # type: ignore[attr-defined]
    assert len(plain) == 2 and not any(is_bundle(e.frames) for e in plain)
