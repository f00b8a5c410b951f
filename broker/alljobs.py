"""The all-jobs topic for dashboards (pure): which events to copy to it, and when.

Every job event is also published under ``protocol.ALL_JOBS_TOPIC``, but only while a
subscriber asked for exactly that topic (an empty-prefix subscriber already gets every
job's own topic). With nobody subscribed the feed costs one dictionary lookup per event.

State changes (queued, running, final) are always copied at once. Progress is thinned per
job to one copy per ``interval_s``: a progress event inside the interval is held back, and
the job's *latest* figures are copied when the interval ends (``due``), so a dashboard never
stays on a stale bar, and a busy broker never floods dashboards. A state change for a job
replaces its held-back progress.
"""

from __future__ import annotations

from typing import Final, Generic, Protocol, TypeVar

from broker.progress import Subscriptions
from broker.protocol import ALL_JOBS_TOPIC

PROGRESS_INTERVAL_S: Final = 0.2  # at most about 5 progress copies per job per second


class Identified(Protocol):
    """Anything with a job id (the broker's ``Job``)."""

    @property
    def id(self) -> str: ...


J = TypeVar("J", bound=Identified)


class AllJobsFeed(Generic[J]):
    """Decides which job events go to the all-jobs topic; see the module docstring."""

    def __init__(self, subscriptions: Subscriptions, interval_s: float = PROGRESS_INTERVAL_S) -> None:
        self.subscriptions = subscriptions
        self.interval_s = interval_s
        self.last_copy_s: dict[str, float] = {}  # job id → when progress was last copied
        self.held: dict[str, J] = {}  # job id → job whose latest progress waits for ``due``
        self.earliest_due_s = float("inf")  # cached: ``due`` and ``next_deadline`` run every turn

    @property
    def active(self) -> bool:
        """Whether anyone subscribed to the all-jobs topic itself."""
        return self.subscriptions.subscribed(ALL_JOBS_TOPIC)

    def on_change(self, job: J, now: float, *, final: bool) -> bool:
        """A state change: whether to copy it (always, while anyone listens)."""
        if not self.active:
            self._forget_all()
            return False
        self.held.pop(job.id, None)
        if final:
            self.last_copy_s.pop(job.id, None)
        else:
            self.last_copy_s[job.id] = now
        return True

    def on_progress(self, job: J, now: float) -> bool:
        """A progress event: whether to copy it now (else it is held for ``due``)."""
        if not self.active:
            self._forget_all()
            return False
        last = self.last_copy_s.get(job.id)
        if last is None or now >= last + self.interval_s:
            self.last_copy_s[job.id] = now
            self.held.pop(job.id, None)
            return True
        self.held[job.id] = job
        self.earliest_due_s = min(self.earliest_due_s, last + self.interval_s)
        return False

    def due(self, now: float) -> list[J]:
        """Jobs whose held-back progress is due now (their latest figures get copied)."""
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
            self.last_copy_s.clear()
            self.held.clear()
            self.earliest_due_s = float("inf")
