"""The jobcast wire messages (pure): one frozen dataclass per command, and ``Message``.

``broker.protocol`` maps each to its command word and encodes and decodes them; the frame
grammar is in its docstring. Every field is JSON in the header, except the payload field
of the messages that carry one (args, a result, a list of views).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeAlias

# --- client ↔ broker ---------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class SubmitFields:
    """The fields every submit message carries: the task, its args and the job options
    (not a message of its own: ``Submit``, ``SubmitGroup`` and ``SubmitMany`` are)."""

    req: int
    task: str
    args: bytes
    ttl_s: float | None = None
    force: bool = False
    priority: str = "normal"
    delay_s: float = 0.0
    run_at: float | None = None
    scope: str = ""
    max_attempts: int | None = None
    timeout_s: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Submit(SubmitFields):
    """Queue a job (or join the running one with the same cache key).

    With ``wait`` the reply (``req``) is followed by the job's final snapshot under
    ``req`` + 1, as if a WAIT for it had come with the submit: one request per job run
    to its end (Gearman's doNormal).
    """

    wait: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class SubmitGroup(SubmitFields):
    """Submit one job per args object as one group (``args``: a JSON array of objects)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SubmitMany(SubmitFields):
    """Submit one job per args object (``args``: a JSON array of objects), each admitted as
    its own ``Submit`` with these options; the reply is one ``JobList``, a slot per item."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Status:
    """Ask for a job's snapshot."""

    req: int
    id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Cancel:
    """Cancel a job: drop it if queued, stop it if running."""

    req: int
    id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Wait:
    """Reply with the job's snapshot once it reaches a final state."""

    req: int
    id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class WaitMany:
    """``Wait`` for each of ``ids`` (1..1000): the reply for ``ids[i]`` is its own snapshot,
    sent once it is final, with ``req + i``. With ``bundles`` the snapshots of jobs that end
    in one broker turn may come as one bundle (``broker.bundle``)."""

    req: int
    ids: list[str]
    bundles: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Stats:
    """Ask for queue, worker and counter figures (and per-task metrics if ``metrics``)."""

    req: int
    metrics: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class ListJobs:
    """List jobs newest first, optionally of one state and one task (``limit`` ≤ 1000)."""

    req: int
    state: str | None = None
    task: str | None = None
    limit: int = 50


@dataclass(frozen=True, slots=True, kw_only=True)
class JobList:
    """The reply to ``ListJobs`` and ``SubmitMany``: ``views`` is a JSON array of job views
    (payload); in a reply to ``SubmitMany`` a refused item's slot is ``{"error": {...}}``."""

    req: int
    views: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class Retry:
    """Re-submit a failed or cancelled job (same task, args, scope, priority; a new id)."""

    req: int
    id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Pause:
    """Stop dispatching a task's jobs (they stay queued; submits are still accepted)."""

    req: int
    task: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Resume:
    """Dispatch a paused task's jobs again."""

    req: int
    task: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Snapshot:
    """A job's current state; ``result`` is its JSON result bytes once done."""

    req: int
    job: dict[str, Any]
    result: bytes | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Counters:
    """The broker's figures, in reply to ``Stats`` (``metrics``: JSON payload, if asked) and
    to ``Pause``/``Resume``."""

    req: int
    stats: dict[str, Any]
    metrics: bytes | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Error:
    """A refused request: ``code`` for machines, ``message`` for people."""

    req: int = 0
    code: str
    message: str


# --- worker ↔ broker ---------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Ready:
    """A worker slot announces itself and the tasks it can run.

    ``options`` maps a task name to its defaults: ``ttl_s``, ``timeout_s``, ``max_attempts``.
    ``busy`` says the slot still runs an attempt from before it reconnected: it is not idle
    until it reports that attempt's outcome. ``prefetch`` is how many attempts it will
    hold at once (the broker sends more than one only for short tasks: ``broker.prefetch``).
    ``bundles`` says it reads several messages sent as one (``broker.bundle``).
    """

    tasks: list[str]
    options: dict[str, Any] | None = None
    busy: bool = False
    pid: int = 0
    host: str = ""
    prefetch: int = 1
    bundles: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Heartbeat:
    """Proof of life, sent when nothing else was sent for an interval."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Log:
    """Lines a running attempt logged with ``job.log(text)``, in order (sent before Done)."""

    id: str
    attempt: int
    lines: list[str]


@dataclass(frozen=True, slots=True, kw_only=True)
class Assign:
    """The broker hands a job attempt to an idle worker."""

    id: str
    task: str
    attempt: int
    args: bytes
    timeout_s: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Done:
    """An attempt finished; ``result`` is its JSON result bytes.

    ``last`` is the attempt's last progress (``done``, ``total``, ``message``): the PUB
    copy of it may arrive after this message, and then the broker drops it. ``run_s`` is
    how long the task ran in the runner: what a task's mean run time is made of, free of
    the time the job took to get there and back (``broker.prefetch``).
    """

    id: str
    attempt: int
    result: bytes
    last: dict[str, Any] | None = None
    run_s: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Failed:
    """An attempt failed; ``error`` has ``type``, ``message`` and ``traceback``."""

    id: str
    attempt: int
    error: dict[str, Any]
    retry: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class Release:
    """A slot gives back an attempt it held but never started (warm shutdown, reconnect):
    the job goes back to the queue and the attempt does not count."""

    id: str
    attempt: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Stop:
    """The broker asks a worker to stop an attempt (cancel)."""

    id: str
    attempt: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Bye:
    """The peer is going away (warm shutdown)."""


# --- published events ----------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Progress:
    """A worker's progress report for one attempt, published with topic = job id."""

    id: str
    attempt: int
    done: int
    total: int
    message: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """A job event stamped by the broker, published with topic = job id."""

    id: str
    seq: int
    epoch: int
    state: str
    task: str = ""
    done: int = 0
    total: int = 0
    message: str = ""
    eta_s: float | None = None
    ts: float = 0.0
    attempts: int = 0
    error: dict[str, Any] | None = None
    extra: dict[str, Any] | None = None


Message: TypeAlias = (
    Submit
    | SubmitGroup
    | SubmitMany
    | Status
    | Cancel
    | Wait
    | WaitMany
    | Stats
    | Pause
    | Resume
    | Snapshot
    | Counters
    | Error
    | Ready
    | Heartbeat
    | Log
    | Assign
    | Done
    | Failed
    | Release
    | Stop
    | Bye
    | Progress
    | Event
    | ListJobs
    | JobList
    | Retry
)
