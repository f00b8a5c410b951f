"""Periodic tasks run by the broker (pure): ``@task("x", every=60)`` or ``cron="*/5 * * * *"``.

The broker learns schedules from the workers' ``Ready`` options and submits one run (empty
args) when one is due. A schedule that fell behind (the broker was down or stalled) runs
once, then continues from now: never a burst of missed runs. The last run of each task is
journaled, so a restarted broker knows whether a run was missed while it was down.
Cron specs are read in UTC, or in the IANA time zone given as ``tz`` ("Europe/Paris"):
"0 6 * * *" then means 06:00 there, summer and winter (croniter follows the zone's DST).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from functools import lru_cache
from typing import Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter  # pure date arithmetic: no I/O

MIN_EVERY_S: Final = 0.1
MAX_EVERY_S: Final = 366 * 86400.0
MAX_CRON_CHARS: Final = 200
MAX_TZ_CHARS: Final = 64
RUN_KEY_PREFIX: Final = "periodic:"  # journal meta key of a task's last run


@dataclass(frozen=True, slots=True)
class Spec:
    """How often a task runs: every ``every_s`` seconds, or on a cron spec."""

    every_s: float | None = None
    cron: str | None = None
    tz: str | None = None  # the cron spec's IANA time zone (None: UTC)

    def next_after(self, wall: float, previous: float | None = None) -> float:
        """The first run time strictly after ``wall``; ``every`` keeps ``previous``'s phase."""
        if self.every_s is not None:
            if previous is None:
                return wall + self.every_s
            steps = max(math.floor((wall - previous) / self.every_s) + 1, 1)
            return previous + steps * self.every_s
        start = datetime.fromtimestamp(wall, zone(self.tz) if self.tz else UTC)
        return float(croniter(self.cron, start).get_next(float))


def spec_from_options(options: Any) -> Spec | None:
    """The schedule a worker declared for one task, or None (none, or malformed)."""
    if not isinstance(options, dict):
        return None
    every, cron, tz = options.get("every_s"), options.get("cron"), options.get("tz")
    if isinstance(every, int | float) and not isinstance(every, bool):
        return Spec(every_s=float(every)) if MIN_EVERY_S <= every <= MAX_EVERY_S else None
    if tz is not None and not (isinstance(tz, str) and is_valid_timezone(tz)):
        return None
    return Spec(cron=cron, tz=tz) if isinstance(cron, str) and is_valid_cron(cron) else None


def is_valid_cron(spec: str) -> bool:
    """Whether ``spec`` is a cron expression croniter accepts (5 or 6 fields)."""
    return len(spec) <= MAX_CRON_CHARS and bool(croniter.is_valid(spec))


def is_valid_timezone(name: str) -> bool:
    """Whether ``name`` is an IANA time zone known here ("Europe/Paris", "UTC")."""
    if not name or len(name) > MAX_TZ_CHARS:
        return False
    try:
        zone(name)
    except (ZoneInfoNotFoundError, ValueError):  # ValueError: a path-like name
        return False
    return True


@lru_cache(maxsize=64)
def zone(name: str) -> tzinfo:
    """The time zone ``name`` (read once from the system's zone data)."""
    return ZoneInfo(name)


class PeriodicSchedules:
    """Each periodic task's spec and next run time (wall-clock seconds)."""

    def __init__(self) -> None:
        self._specs: dict[str, Spec] = {}
        self._next: dict[str, float] = {}
        self._last_run: dict[str, float] = {}

    def restore(self, last_runs: dict[str, float]) -> None:
        """Last run times replayed from the journal (before any worker is learnt)."""
        self._last_run.update(last_runs)

    def learn(self, tasks: list[str], options: dict[str, Any], now_wall: float) -> None:
        """Record the schedules a worker declares; an unchanged one keeps its next run."""
        for task in tasks:
            spec = spec_from_options(options.get(task))
            if spec is None:
                self._specs.pop(task, None)
                self._next.pop(task, None)
            elif self._specs.get(task) != spec:
                self._specs[task] = spec
                self._next[task] = self._first_run(spec, task, now_wall)

    def _first_run(self, spec: Spec, task: str, now_wall: float) -> float:
        last = self._last_run.get(task)
        if last is None or last > now_wall:
            return spec.next_after(now_wall)
        return spec.next_after(last, previous=last)  # may be past: then it runs once, at once

    def due(self, now_wall: float) -> list[str]:
        """Tasks due now; each is moved to its next run strictly after ``now_wall``."""
        due = [task for task, at in self._next.items() if at <= now_wall]
        for task in due:
            self._last_run[task] = now_wall
            self._next[task] = self._specs[task].next_after(now_wall, previous=self._next[task])
        return due

    def next_due(self) -> float | None:
        """The earliest next run, if any task is periodic."""
        return min(self._next.values(), default=None)

    def schedules(self) -> dict[str, float]:
        """Each periodic task's next run time."""
        return dict(self._next)


def last_runs_from(meta: dict[str, Any]) -> dict[str, float]:
    """The last run times among the journal's meta records."""
    return {
        key.removeprefix(RUN_KEY_PREFIX): float(value)
        for key, value in meta.items()
        if key.startswith(RUN_KEY_PREFIX) and isinstance(value, int | float)
    }
