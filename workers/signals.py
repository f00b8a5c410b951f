"""SIGTERM/SIGINT as a counter, plus a wake-up socket a poller can watch (huey's flags)."""

from __future__ import annotations

import signal
import socket
from types import FrameType


class SignalFlags:
    """Counts SIGTERM/SIGINT in a handler that only sets a flag, and wakes the poller."""

    def __init__(self) -> None:
        self.count = 0
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)

    @property
    def fd(self) -> int:
        """The fd that becomes readable when a signal arrives (register it in the poller)."""
        return self._wake_r.fileno()

    def install(self) -> None:
        """Handle SIGTERM and SIGINT here (main thread only)."""
        signal.set_wakeup_fd(self._wake_w.fileno(), warn_on_full_buffer=False)
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.count += 1  # only a flag: the loop does the work

    def drain(self) -> None:
        """Empty the wake-up socket."""
        try:
            while self._wake_r.recv(4096):
                pass
        except BlockingIOError:
            pass

    def close(self) -> None:
        """Stop waking, close the sockets (handlers stay: a late signal is still a flag)."""
        signal.set_wakeup_fd(-1)
        self._wake_r.close()
        self._wake_w.close()
