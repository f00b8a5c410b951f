"""The agent's link to whoever started it, on a real pipe: ready line, one ``connected``."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import pytest

from workers.parent_link import ParentLink


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    read_fd, write_fd = os.pipe()
    yield read_fd, write_fd
    for fd in (read_fd, write_fd):
        with contextlib.suppress(OSError):
            os.close(fd)


def test_started_by_hand_it_prints_the_ready_line_and_watches_no_pool(
    capsys: pytest.CaptureFixture[str],
) -> None:
    link = ParentLink(None)
    link.announce("ipc:///tmp/jc-x/jc", ["echo", "slow"])
    link.connected()  # no pipe: nothing to tell
    assert capsys.readouterr().out == (
        f"jobcast agent ready: pid {os.getpid()}, broker ipc:///tmp/jc-x/jc, tasks [echo, slow]\n"
    )
    assert not link.pool_gone()


def test_started_by_the_pool_it_says_connected_once_and_prints_nothing(
    pipe: tuple[int, int], capsys: pytest.CaptureFixture[str]
) -> None:
    read_fd, write_fd = pipe
    link = ParentLink(write_fd)
    link.announce("ipc:///tmp/jc-x/jc", ["echo"])
    link.connected()
    link.connected()
    os.close(write_fd)
    assert os.read(read_fd, 100) == b"connected\n"
    assert os.read(read_fd, 100) == b""
    assert capsys.readouterr().out == ""
    assert not link.pool_gone()  # this test's parent still lives


def test_a_closed_pool_pipe_is_a_warning_not_a_crash(pipe: tuple[int, int]) -> None:
    read_fd, write_fd = pipe
    os.close(read_fd)
    link = ParentLink(write_fd)
    link.connected()  # EPIPE (SIGPIPE is ignored by Python)
    assert link.notified
