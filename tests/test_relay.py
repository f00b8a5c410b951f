"""web.relay: keep-latest buffer, Clone join, cursor (pure) and the SUB fan-out (real sockets)."""

from __future__ import annotations

import asyncio
import json
import tempfile
from typing import Any

import pytest
import zmq
import zmq.asyncio

from broker.protocol import TAG, Command, Event, encode
from web.relay import (
    Cursor,
    KeepLatestBuffer,
    Relay,
    Watch,
    WatchEnded,
    clone_join,
    event_message,
    snapshot_message,
)

JOB = "A" * 22
OTHER = "B" * 22


def msg(seq: int, state: str = "running", done: int = 0, epoch: int = 1) -> dict[str, Any]:
    return {"seq": seq, "state": state, "done": done, "total": 100, "epoch": epoch}


def event(seq: int, state: str = "running", job_id: str = JOB, epoch: int = 1) -> Event:
    return Event(id=job_id, seq=seq, epoch=epoch, state=state, done=seq, total=100)


# --- KeepLatestBuffer -----------------------------------------------------------------


def test_buffer_keeps_order_below_capacity() -> None:
    buffer = KeepLatestBuffer(4)
    for seq in range(1, 4):
        buffer.push(msg(seq))
    assert [m["seq"] for m in buffer.drain()] == [1, 2, 3]
    assert buffer.dropped == 0


def test_full_buffer_drops_the_oldest_intermediate_and_keeps_the_latest() -> None:
    buffer = KeepLatestBuffer(3)
    for seq in range(1, 11):
        buffer.push(msg(seq))
    assert [m["seq"] for m in buffer.drain()] == [8, 9, 10]
    assert buffer.dropped == 7


def test_full_buffer_never_drops_a_final_state() -> None:
    buffer = KeepLatestBuffer(2)
    buffer.push(msg(1))
    buffer.push(msg(2, "done"))
    for seq in range(3, 50):  # a misbehaving producer keeps pushing after the final
        buffer.push(msg(seq))
    items = buffer.drain()
    assert msg(2, "done") in items
    assert len(items) == 2


def test_final_survives_a_flood_before_it() -> None:
    buffer = KeepLatestBuffer(1)
    for seq in range(1, 1000):
        buffer.push(msg(seq))
    buffer.push(msg(1000, "failed"))
    assert buffer.drain() == [msg(1000, "failed")]


def test_buffer_needs_room_for_one() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        KeepLatestBuffer(0)


# --- clone_join -----------------------------------------------------------------------


def test_join_drops_buffered_events_covered_by_the_snapshot() -> None:
    buffered = [msg(3), msg(4), msg(5), msg(6)]
    sent = clone_join(msg(4), buffered)
    assert [m["seq"] for m in sent] == [4, 5, 6]  # snapshot, then strictly newer events


def test_join_with_nothing_buffered_sends_the_snapshot() -> None:
    assert clone_join(msg(7), []) == [msg(7)]


def test_join_after_seq_skips_a_snapshot_the_client_has() -> None:
    assert [m["seq"] for m in clone_join(msg(5), [msg(6)], after=5)] == [6]
    assert [m["seq"] for m in clone_join(msg(5), [msg(6)], after=4)] == [5, 6]


def test_join_after_seq_drops_events_the_client_has() -> None:
    assert [m["seq"] for m in clone_join(msg(3), [msg(4), msg(5), msg(6)], after=5)] == [6]


def test_join_always_sends_a_final_snapshot_even_if_the_client_saw_its_seq() -> None:
    final = msg(9, "done")
    assert clone_join(final, [msg(10)], after=9) == [final]


def test_join_stops_at_a_final_buffered_event() -> None:
    sent = clone_join(msg(1), [msg(2), msg(3, "cancelled"), msg(4)])
    assert [m["seq"] for m in sent] == [1, 2, 3]


def test_join_keeps_events_from_a_newer_broker_epoch() -> None:
    sent = clone_join(msg(5, epoch=1), [msg(2, epoch=2)])
    assert [(m["seq"], m["epoch"]) for m in sent] == [(5, 1), (2, 2)]


def test_join_with_no_gap_and_no_duplicate_for_every_join_point() -> None:
    stream = [msg(seq) for seq in range(1, 21)] + [msg(21, "done")]
    for snap_at in range(0, 21):
        for subscribed_at in range(0, snap_at + 1):  # subscribe first, then snapshot
            snapshot = stream[snap_at]
            buffered = stream[subscribed_at:]
            sent = clone_join(snapshot, buffered)
            cursor = Cursor.after_join(snapshot, sent, None)
            seqs = [m["seq"] for m in sent]
            assert seqs == list(range(snapshot["seq"], 22)), (snap_at, subscribed_at)
            assert cursor.seq == 21


# --- Cursor ---------------------------------------------------------------------------


def test_cursor_admits_only_newer_messages() -> None:
    cursor = Cursor(seq=5, epoch=1)
    assert not cursor.admit(msg(5))
    assert not cursor.admit(msg(3))
    assert cursor.admit(msg(6))
    assert not cursor.admit(msg(6))


def test_cursor_after_join_starts_at_after_when_nothing_was_sent() -> None:
    cursor = Cursor.after_join(msg(3), [], after=7)
    assert not cursor.admit(msg(7))
    assert cursor.admit(msg(8))


def test_cursor_admits_a_newer_epoch() -> None:
    cursor = Cursor(seq=50, epoch=1)
    assert cursor.admit(msg(2, epoch=2))
    assert not cursor.admit(msg(40, epoch=1))


# --- messages -------------------------------------------------------------------------


def test_event_and_snapshot_messages_are_json_ready_and_never_carry_the_result() -> None:
    assert event_message(event(3))["kind"] == "event"
    job = {"id": JOB, "seq": 3, "state": "done", "result": {"big": "x" * 10}, "task": "t"}
    snapshot = snapshot_message(job)
    assert snapshot["kind"] == "snapshot" and snapshot["state"] == "done"
    assert "result" not in snapshot


# --- Relay over real sockets ------------------------------------------------------------


def test_dispatch_matches_the_topic_exactly() -> None:
    async def scenario() -> None:
        context = zmq.asyncio.Context()
        relay = Relay(context, f"ipc://{tempfile.mkdtemp(prefix='jc-')}/none")
        try:
            async with relay.watch(JOB) as watch:
                longer = JOB + "zz"  # ZeroMQ would deliver it: SUBSCRIBE is a prefix match
                relay.dispatch(encode(Event(id=longer, seq=1, epoch=1, state="running")))
                relay.dispatch([JOB.encode(), TAG, Command.EVENT.value, b"not json"])
                relay.dispatch([JOB.encode()])
                assert len(watch.buffer) == 0
                relay.dispatch(encode(event(1)))
                assert [m["seq"] for m in watch.drain()] == [1]
        finally:
            relay.close()
            context.term()

    asyncio.run(asyncio.wait_for(scenario(), 5))


def test_watch_refuses_a_malformed_id_before_subscribing() -> None:
    async def scenario() -> None:
        context = zmq.asyncio.Context()
        relay = Relay(context, f"ipc://{tempfile.mkdtemp(prefix='jc-')}/none")
        try:
            for bad in ("", "A", "A" * 21, "A" * 23, "../" * 8, "é" * 22):
                with pytest.raises(ValueError, match="not a job id"):
                    async with relay.watch(bad):
                        pass
            assert relay.watches == {}
        finally:
            relay.close()
            context.term()

    asyncio.run(asyncio.wait_for(scenario(), 5))


def test_relay_subscribes_on_first_watcher_and_unsubscribes_on_last() -> None:
    async def scenario() -> None:
        context = zmq.asyncio.Context()
        xpub = context.socket(zmq.XPUB)
        xpub.setsockopt(zmq.LINGER, 0)
        xpub.setsockopt(zmq.XPUB_VERBOSE, 1)
        endpoint = f"ipc://{tempfile.mkdtemp(prefix='jc-')}/ev"
        xpub.bind(endpoint)
        relay = Relay(context, endpoint)
        reader = asyncio.create_task(relay.run())

        async def subscription() -> bytes:
            return bytes(await asyncio.wait_for(xpub.recv(), 5))

        try:
            async with relay.watch(JOB) as first:
                assert await subscription() == b"\x01" + JOB.encode()
                async with relay.watch(JOB) as second:
                    await xpub.send_multipart(encode(event(1)))
                    await xpub.send_multipart(encode(event(1, job_id=OTHER)))
                    await xpub.send_multipart(encode(event(2, "done")))
                    got = [await asyncio.wait_for(second.get(), 5) for _ in range(2)]
                    assert [m["seq"] for m in got] == [1, 2]
                assert not await xpub.poll(100)  # the second watcher left: still subscribed
                assert [m["seq"] for m in first.drain()] == [1, 2]
            assert await subscription() == b"\x00" + JOB.encode()
            assert relay.watches == {}
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
            relay.close()
            xpub.close()
            context.term()

    asyncio.run(asyncio.wait_for(scenario(), 10))


def test_a_watcher_that_never_reads_does_not_stop_the_others() -> None:
    async def scenario() -> None:
        context = zmq.asyncio.Context()
        relay = Relay(context, f"ipc://{tempfile.mkdtemp(prefix='jc-')}/none", capacity=4)
        try:
            async with relay.watch(JOB) as stalled, relay.watch(JOB) as reader:
                seen: list[int] = []
                for seq in range(1, 10_001):
                    relay.dispatch(encode(event(seq, "done" if seq == 10_000 else "running")))
                    if seq % 1000 == 0:
                        seen += [m["seq"] for m in reader.drain()]
                assert seen[-1] == 10_000 and seen == sorted(set(seen))
                stalled_items = stalled.drain()
                assert len(stalled_items) == 4
                assert stalled_items[-1]["state"] == "done"
                assert stalled.buffer.dropped == 10_000 - 4
        finally:
            relay.close()
            context.term()

    asyncio.run(asyncio.wait_for(scenario(), 10))


def test_watch_notes_a_sequence_gap() -> None:
    async def scenario() -> None:
        watch = Watch(JOB, 8)
        watch.push(event(1))
        watch.push(event(2))
        assert not watch.needs_resync
        watch.push(event(5))
        assert watch.needs_resync

    asyncio.run(scenario())


def test_a_waiting_get_wakes_on_a_push_and_ends_when_the_watcher_goes() -> None:
    async def scenario() -> None:
        watch = Watch(JOB, 8)
        waiting = asyncio.create_task(watch.get())
        await asyncio.sleep(0)
        watch.push(event(1))
        assert (await asyncio.wait_for(waiting, 5) or {}).get("seq") == 1
        waiting = asyncio.create_task(watch.get())
        await asyncio.sleep(0)
        assert not waiting.done()
        watch.end()
        with pytest.raises(WatchEnded):
            await asyncio.wait_for(waiting, 5)
        watch.push(event(2))  # buffered, but the watcher is gone: nothing more is read
        with pytest.raises(WatchEnded):
            await watch.get()

    asyncio.run(scenario())


def test_a_message_is_encoded_once_for_all_its_watchers() -> None:
    message = event_message(event(3))
    text = message.text()
    assert json.loads(text) == dict(message)
    assert message.text() is text, "the second watcher reuses the first one's encoding"


def test_a_quiet_watch_is_woken_once_and_a_busy_one_is_not() -> None:
    async def scenario() -> None:
        context = zmq.asyncio.Context()
        relay = Relay(context, f"ipc://{tempfile.mkdtemp(prefix='jc-')}/none")
        try:
            async with relay.watch(JOB) as quiet, relay.watch(OTHER) as busy:
                waiting = asyncio.create_task(quiet.get())
                await asyncio.sleep(0)
                start = quiet.last_push
                busy.last_push = start + 4.0  # an event 4 s in
                assert relay.wake_quiet(start + 4.9, quiet_s=5.0) == 0
                assert relay.wake_quiet(start + 5.0, quiet_s=5.0) == 1  # only the quiet one
                assert await asyncio.wait_for(waiting, 5) is None  # its reader resyncs
                assert relay.wake_quiet(start + 6.0, quiet_s=5.0) == 0  # once per quiet spell
                relay.dispatch(encode(event(1)))
                assert (await asyncio.wait_for(quiet.get(), 5) or {}).get("seq") == 1
                assert not busy.quiet and len(busy.buffer) == 0
        finally:
            relay.close()
            context.term()

    asyncio.run(asyncio.wait_for(scenario(), 10))
