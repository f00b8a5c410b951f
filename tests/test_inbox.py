"""The runner's control inbox on a real pipe: order, cancels of waiting jobs, return, EOF."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import pytest

from workers.inbox import AttemptKey, ControlInbox
from workers.pipes import MAX_FRAME_BYTES, MessageReader, pack, write_message


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    read_fd, write_fd = os.pipe()
    yield read_fd, write_fd
    for fd in (read_fd, write_fd):
        with contextlib.suppress(OSError):  # a test may have closed the writing end
            os.close(fd)


def assign(fd: int, job_id: str, attempt: int = 1) -> None:
    write_message(fd, {"cmd": "assign", "id": job_id, "attempt": attempt, "task": "echo"}, b'{"x":1}')


def test_assignments_come_out_in_order_with_their_args(pipe: tuple[int, int]) -> None:
    read_fd, write_fd = pipe
    inbox = ControlInbox(read_fd)
    for job_id in ("a", "b", "c"):
        assign(write_fd, job_id)
    got = [inbox.next_assign() for _ in range(3)]
    assert [(h["id"], payload, cancelled) for h, payload, cancelled in got] == [
        ("a", b'{"x":1}', False), ("b", b'{"x":1}', False), ("c", b'{"x":1}', False)
    ]  # fmt: skip


def test_a_cancel_written_after_a_waiting_assignment_stops_it_before_it_starts(pipe: tuple[int, int]) -> None:
    read_fd, write_fd = pipe
    inbox = ControlInbox(read_fd)
    assign(write_fd, "a")
    assign(write_fd, "b")
    assert inbox.next_assign() is not None  # "a" runs
    write_message(write_fd, {"cmd": "cancel", "id": "b", "attempt": 1})
    write_message(write_fd, {"cmd": "cancel", "id": "a", "attempt": 2})  # another attempt: moot
    assert not inbox.cancelled(("a", 1))
    header, _, cancelled = inbox.next_assign() or ({}, b"", False)
    assert (header["id"], cancelled) == ("b", True)


def test_a_cancel_for_the_running_attempt_is_seen_by_its_check(pipe: tuple[int, int]) -> None:
    read_fd, write_fd = pipe
    inbox = ControlInbox(read_fd)
    assign(write_fd, "a")
    inbox.next_assign()
    assert not inbox.cancelled(("a", 1))
    write_message(write_fd, {"cmd": "cancel", "id": "a", "attempt": 1})
    assert inbox.cancelled(("a", 1))


def test_return_drops_what_waits_and_reports_it_and_later_work_still_comes(pipe: tuple[int, int]) -> None:
    read_fd, write_fd = pipe
    returned: list[list[AttemptKey]] = []
    inbox = ControlInbox(read_fd, on_return=returned.append)
    for job_id in ("a", "b", "c"):
        assign(write_fd, job_id)
    assert inbox.next_assign() is not None  # "a" runs
    write_message(write_fd, {"cmd": "return"})
    assign(write_fd, "d")  # sent after the return: kept
    assert not inbox.cancelled(("a", 1))  # the running one is not returned
    assert returned == [[("b", 1), ("c", 1)]]
    header, _, _ = inbox.next_assign() or ({}, b"", False)
    assert header["id"] == "d"


def test_end_of_file_cancels_the_running_attempt_and_ends_the_work(pipe: tuple[int, int]) -> None:
    read_fd, write_fd = pipe
    inbox = ControlInbox(read_fd)
    assign(write_fd, "a")
    os.close(write_fd)
    assert inbox.next_assign() is not None  # what was written before the end still runs
    assert inbox.cancelled(("a", 1))
    assert inbox.next_assign() is None


def test_the_reader_reassembles_messages_from_any_chunking() -> None:
    data = pack({"cmd": "assign", "id": "a"}, b"x" * 3000) + pack({"cmd": "return"})
    for chunk in (1, 3, 4, 5, 1000, len(data)):
        reader = MessageReader()
        got = [m for i in range(0, len(data), chunk) for m in reader.feed(data[i : i + chunk])]
        assert got == [({"cmd": "assign", "id": "a"}, b"x" * 3000), ({"cmd": "return"}, b"")], chunk


def test_the_reader_refuses_a_frame_past_its_bound() -> None:
    with pytest.raises(ValueError, match="pipe frame exceeds"):
        MessageReader().feed((MAX_FRAME_BYTES + 1).to_bytes(4, "big"))


def test_has_waiting_says_whether_assignments_wait_behind_the_one_handed_out(pipe: tuple[int, int]) -> None:
    read_fd, write_fd = pipe
    inbox = ControlInbox(read_fd)
    for i in (1, 2):
        assign(write_fd, f"j{i}")
    assert inbox.next_assign() is not None and inbox.has_waiting
    assert inbox.next_assign() is not None and not inbox.has_waiting
