"""The agent's link to whoever started it: the pool, or a person (or test) at a terminal.

Started by the pool (``--notify-fd``), the agent writes ``connected`` once on the pool's
pipe when it first hears from the broker (the pool's ready line waits for every slot),
and it shuts down cold when its parent is no longer the pool that started it: a pool
ended by SIGKILL cannot stop its agents itself. Started by hand, the agent prints one
ready line instead, with its pid, broker and tasks, which tests and scripts wait for.
"""

from __future__ import annotations

import logging
import os
import sys

logger = logging.getLogger(__name__)


class ParentLink:
    """The pool's notify pipe and pid, or neither when the agent was started by hand."""

    def __init__(self, notify_fd: int | None) -> None:
        self.notify_fd = notify_fd
        self.notified = False
        self.parent_pid = os.getppid() if notify_fd is not None else None

    def announce(self, broker: str, tasks: list[str]) -> None:
        """Print the ready line, if started by hand (the pool waits for ``connected``)."""
        if self.notify_fd is not None:
            return
        sys.stdout.write(f"jobcast agent ready: pid {os.getpid()}, broker {broker}, "
                         f"tasks [{', '.join(tasks)}]\n")  # fmt: skip
        sys.stdout.flush()

    def connected(self) -> None:
        """Tell the pool, once, that the agent has heard from the broker."""
        if self.notify_fd is None or self.notified:
            return
        self.notified = True
        try:
            os.write(self.notify_fd, b"connected\n")
        except OSError:
            logger.warning("could not notify the pool")

    def pool_gone(self) -> bool:
        """Whether the pool that started the agent has gone (true once)."""
        if self.parent_pid is not None and os.getppid() != self.parent_pid:
            self.parent_pid = None
            return True
        return False
