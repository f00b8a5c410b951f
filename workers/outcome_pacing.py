"""When the agent reads its runner's result pipe: as outcomes come, or in batches (pure).

While the runner holds more than one attempt, short jobs end back to back. Reading each
outcome as it lands would wake the agent once per job, so after a read the agent leaves
the result pipe alone for ``OUTCOME_BATCH_S``; the outcomes that wait are then read, and
reported, together (one bundle), and the agent wakes once per batch instead of once per
short job. The pause ends early when a deadline falls due (the running attempt's timeout
or cancel grace, or the warm-shutdown deadline): the agent must see the outcomes that
wait before it kills the runner for one of them. With one attempt held or none, every
outcome is read as it comes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from workers.slot import Attempt

OUTCOME_BATCH_S: Final = 0.001  # with more attempts held, outcomes are read at most this often


class OutcomePacing:
    """Whether the agent watches the result pipe now, or leaves it until ``paused_until``.

    ``held`` is the slot's attempts in the order the runner runs them (the first runs).
    """

    __slots__ = ("batch_s", "paused_until")

    def __init__(self, batch_s: float = OUTCOME_BATCH_S) -> None:
        self.batch_s = batch_s
        self.paused_until: float | None = None  # monotonic; None: reading as outcomes come

    def pause(self, now: float, held: Sequence[Attempt]) -> bool:
        """After a read: whether to stop watching the pipe until ``paused_until`` (true
        only when a pause starts: more than one attempt held, and none under way)."""
        if len(held) > 1 and self.paused_until is None:
            self.paused_until = now + self.batch_s
            return True
        return False

    def resume(self, now: float, held: Sequence[Attempt], stop_deadline: float | None) -> bool:
        """Whether the pause ends now (then watch and read the pipe again): it is over, or
        the running attempt's deadline or ``stop_deadline`` is due."""
        paused_until = self.paused_until
        if paused_until is None:
            return False
        stopping = stop_deadline is not None and now >= stop_deadline
        if now >= paused_until or stopping or (bool(held) and held[0].due(now)):
            self.paused_until = None
            return True
        return False
