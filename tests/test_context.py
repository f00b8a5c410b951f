"""The Job context: throttled progress on a real PUB socket, flush, validation, cancel."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from functools import partial

import pytest
import zmq

from broker.errors import JobCancelled
from broker.protocol import Progress, decode
from workers.context import MAX_MESSAGE_CHARS, Job
from workers.inbox import ControlInbox
from workers.pipes import write_message


@pytest.fixture
def pubsub(tmpdir_short: str) -> Iterator[tuple[zmq.Socket[bytes], zmq.Socket[bytes]]]:
    """A connected (PUB, SUB) pair on ipc, the subscription already in effect."""
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    pub = ctx.socket(zmq.PUB)
    for sock in (sub, pub):
        sock.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    endpoint = f"ipc://{tmpdir_short}/ev"
    sub.bind(endpoint)
    pub.connect(endpoint)
    _wait_for_subscription(pub, sub)
    yield pub, sub
    pub.close()
    sub.close()
    ctx.term()


def _wait_for_subscription(pub: zmq.Socket[bytes], sub: zmq.Socket[bytes]) -> None:
    # PUB drops everything until the SUB's subscription arrives: probe until one gets through.
    for _ in range(200):
        pub.send_multipart([b"probe"])
        if sub.poll(20):
            while sub.poll(20):
                sub.recv_multipart()
            return
    raise TimeoutError("subscription never reached the PUB socket")


def _received(sub: zmq.Socket[bytes], quiet_ms: int = 200) -> list[Progress]:
    events = []
    while sub.poll(quiet_ms):
        msg = decode(sub.recv_multipart())
        assert isinstance(msg, Progress)
        events.append(msg)
    return events


def test_tight_loop_is_throttled_and_the_last_is_flushed(
    pubsub: tuple[zmq.Socket[bytes], zmq.Socket[bytes]],
) -> None:
    pub, sub = pubsub
    job = Job("job-a", 2, publisher=pub)
    for i in range(1, 10_001):
        job.progress(i, 10_000, f"row {i}")
    assert job.flush() == {"done": 10_000, "total": 10_000, "message": "row 10000"}
    events = _received(sub)
    assert 1 <= len(events) <= 20
    assert events[0] == Progress(id="job-a", attempt=2, done=1, total=10_000, message="row 1")
    assert (events[-1].done, events[-1].total) == (10_000, 10_000)


def test_throttle_lets_one_message_through_per_interval(
    pubsub: tuple[zmq.Socket[bytes], zmq.Socket[bytes]],
) -> None:
    pub, sub = pubsub
    now = [0.0]
    job = Job("job-b", 1, publisher=pub, clock=lambda: now[0])
    for step in range(30):  # a call every 1/8 s, and 9 more in between (exact floats)
        for tick in range(10):
            now[0] = step / 8 + tick / 1024
            job.progress(step * 10 + tick, 300)
    job.flush()
    events = _received(sub)
    assert len(events) == 31  # one per interval, and the flushed last one
    assert events[-1].done == 299


def test_flush_does_not_resend_what_was_published(
    pubsub: tuple[zmq.Socket[bytes], zmq.Socket[bytes]],
) -> None:
    pub, sub = pubsub
    job = Job("job-c", 1, publisher=pub)
    job.progress(1, 1, "only")
    assert job.flush() == {"done": 1, "total": 1, "message": "only"}
    assert len(_received(sub)) == 1
    assert Job("job-d", 1, publisher=pub).flush() is None  # no progress: nothing to report


def test_a_quiet_job_publishes_nothing_in_its_first_interval(
    pubsub: tuple[zmq.Socket[bytes], zmq.Socket[bytes]],
) -> None:
    pub, sub = pubsub
    now = [10.0]
    short = Job("job-q", 1, publisher=pub, clock=lambda: now[0], quiet=True)
    short.progress(1, 1, "done fast")
    now[0] += 0.001
    assert short.flush() == {"done": 1, "total": 1, "message": "done fast"}  # in the outcome
    assert _received(sub) == []  # a job that ends in its first interval publishes nothing
    long = Job("job-r", 1, publisher=pub, clock=lambda: now[0], quiet=True)
    long.progress(1, 3, "one")
    now[0] += 0.125
    long.progress(2, 3, "two")  # past the first interval: published as usual
    now[0] += 0.001
    long.progress(3, 3, "three")  # throttled, then flushed
    long.flush()
    assert [event.message for event in _received(sub)] == ["two", "three"]


def test_long_messages_are_truncated() -> None:
    job = Job("job-e", 1)
    job.progress(1, 2, "x" * 5000)
    last = job.last
    assert last is not None and len(last["message"]) == MAX_MESSAGE_CHARS
    assert len(json.dumps(last)) < 1100


@pytest.mark.parametrize(
    ("done", "total", "error"),
    [(-1, 10, ValueError), (1, -2, ValueError), (1.5, 10, ValueError), (True, 10, ValueError),
     ("1", 10, ValueError)],
)  # fmt: skip
def test_progress_validates_counts(done: object, total: object, error: type[Exception]) -> None:
    job = Job("job-f", 1)
    with pytest.raises(error, match="must be an int >= 0"):
        job.progress(done, total)  # type: ignore[arg-type]
    job.progress(0, 0)  # the next good call still works
    assert job.last == {"done": 0, "total": 0, "message": ""}


def test_progress_rejects_a_non_string_message() -> None:
    job = Job("job-g", 1)
    with pytest.raises(TypeError, match="message must be a str"):
        job.progress(1, 2, 3)  # type: ignore[arg-type]
    job.progress(1, 2, "ok")


def test_cancel_on_the_control_pipe_raises_in_progress() -> None:
    read_fd, write_fd = os.pipe()
    try:
        job = Job("job-h", 1, cancel_check=partial(ControlInbox(read_fd).cancelled, ("job-h", 1)))
        job.progress(1, 10)
        write_message(write_fd, {"cmd": "cancel", "id": "job-h", "attempt": 1})
        with pytest.raises(JobCancelled):
            for i in range(2, 100_000):  # the pipe is checked every few ms, not every call
                job.progress(i, 100_000)
        assert job.cancelled
        with pytest.raises(JobCancelled):  # sticky: a task that swallows it is told again
            job.progress(3, 10)
    finally:
        os.close(read_fd)
        os.close(write_fd)


def test_a_cancel_for_another_job_is_ignored() -> None:
    read_fd, write_fd = os.pipe()
    try:
        check = partial(ControlInbox(read_fd).cancelled, ("job-i", 1))
        job = Job("job-i", 1, cancel_check=check, clock=iter(range(10**6)).__next__)
        write_message(write_fd, {"cmd": "cancel", "id": "someone-else", "attempt": 1})
        job.progress(1, 10)
        job.progress(2, 10)
        assert not job.cancelled
    finally:
        os.close(read_fd)
        os.close(write_fd)


def test_a_closed_control_pipe_cancels() -> None:
    read_fd, write_fd = os.pipe()
    os.close(write_fd)
    try:
        job = Job("job-j", 1, cancel_check=partial(ControlInbox(read_fd).cancelled, ("job-j", 1)))
        with pytest.raises(JobCancelled):
            job.progress(1, 10)
    finally:
        os.close(read_fd)
