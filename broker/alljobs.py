"""The all-jobs topic for dashboards (pure): which events to copy to it, and when.

Every job event is also published under ``protocol.ALL_JOBS_TOPIC``, but only while a
subscriber asked for exactly that topic (an empty-prefix subscriber already gets every
job's own topic). With nobody subscribed the feed costs one dictionary lookup per event.

A change of state (queued, running, a final state, or the first event seen of a job) is
copied at once, always. Every other event (progress, log lines, a queue place, a repeat
for a new watcher) is thinned per job to one copy per ``interval_s``: one inside the
interval is held back, and the job's *latest* figures are copied when the interval ends
(``due``), so a dashboard never stays on a stale bar and a busy broker never floods it.
A change of state replaces the held-back copy.
"""

from __future__ import annotations

from typing import Final, Generic, Protocol, TypeVar

from broker.jobs import FINAL_STATES
from broker.progress import Subscriptions
from broker.protocol import ALL_JOBS_TOPIC

PROGRESS_INTERVAL_S: Final = 0.2  # at most about 5 progress copies per job per second


class Stateful(Protocol):
    """Anything with a job id and a state (the broker's ``Job``)."""

    @property
    def id(self) -> str: ...

    @property
    def state(self) -> str: ...


J = TypeVar("J", bound=Stateful)


class AllJobsFeed(Generic[J]):
    """Decides which job events go to the all-jobs topic; see the module docstring."""

    def __init__(self, subscriptions: Subscriptions, interval_s: float = PROGRESS_INTERVAL_S) -> None:
        self.subscriptions = subscriptions
        self.interval_s = interval_s
        self.last_state: dict[str, str] = {}  # job id → the state last copied (live jobs only)
        self.last_copy_s: dict[str, float] = {}  # job id → when it was last copied
        self.held: dict[str, J] = {}  # job id → job whose latest figures wait for ``due``
        self.earliest_due_s = float("inf")  # cached: ``due`` and ``next_deadline`` run every turn

    @property
    def active(self) -> bool:
        """Whether anyone subscribed to the all-jobs topic itself."""
        return self.subscriptions.subscribed(ALL_JOBS_TOPIC)

    def on_event(self, job: J, now: float) -> bool:
        """Whether to copy this event of ``job`` now (else it may be held for ``due``)."""
        if not self.active:
            self._forget_all()
            return False
        state = str(job.state)
        if self.last_state.get(job.id) != state:
            self._copied_change(job.id, state, now)
            return True
        last = self.last_copy_s[job.id]
        if now >= last + self.interval_s:
            self.last_copy_s[job.id] = now
            self.held.pop(job.id, None)
            return True
        self.held[job.id] = job
        self.earliest_due_s = min(self.earliest_due_s, last + self.interval_s)
        return False

    def _copied_change(self, job_id: str, state: str, now: float) -> None:
        self.held.pop(job_id, None)
        if state in FINAL_STATES:
            self.last_state.pop(job_id, None)  # nothing follows a final state: forget the job
            self.last_copy_s.pop(job_id, None)
        else:
            self.last_state[job_id] = state
            self.last_copy_s[job_id] = now

    def due(self, now: float) -> list[J]:
        """Jobs whose held-back copy is due now (their latest figures get copied)."""
        if now < self.earliest_due_s:
            return []
        ready = [
            job for job_id, job in self.held.items() if now >= self.last_copy_s[job_id] + self.interval_s
        ]
        for job in ready:
            del self.held[job.id]
            self.last_copy_s[job.id] = now
        self.earliest_due_s = min((self.last_copy_s[job_id] for job_id in self.held), default=float("inf"))
        self.earliest_due_s += self.interval_s
        return ready if self.active else []

    def next_deadline(self) -> float:
        """When ``due`` next has something (``inf`` when nothing is held)."""
        return self.earliest_due_s

    def _forget_all(self) -> None:
        if self.last_copy_s or self.held:
            self.last_state.clear()
            self.last_copy_s.clear()
            self.held.clear()
            self.earliest_due_s = float("inf")
