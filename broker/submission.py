"""Validate a ``Submit`` and turn it into a new ``Job`` (pure)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from broker import protocol as p
from broker.errors import BadArguments
from broker.jobs import PRIORITIES, Job, cache_key, canonical_args, check_task_name, parse_args
from broker.lifecycle import TaskDefaults

MAX_DELAY_S: Final = 366 * 86400.0
MAX_ATTEMPTS_CAP: Final = 100
MAX_SCOPE: Final = 200


@dataclass(frozen=True, slots=True)
class Submission:
    """A checked submission: canonical args and the cache key they hash to."""

    msg: p.Submit
    args: bytes
    cache_key: str
    run_at: float

    def to_job(self, job_id: str, now_wall: float) -> Job:
        """A new queued job for this submission."""
        msg = self.msg
        return Job(
            id=job_id, task=msg.task, args=self.args, cache_key=self.cache_key,
            created_at=now_wall, ttl_s=msg.ttl_s, priority=msg.priority, run_at=self.run_at,
            max_attempts=msg.max_attempts, timeout_s=msg.timeout_s, scope=msg.scope,
        )  # fmt: skip


def prepare_submission(
    msg: p.Submit, now_wall: float, defaults: TaskDefaults, have_workers: bool
) -> Submission:
    """Check a submission and compute its canonical args and cache key.

    Raises:
        BadArguments: bad args or options (PayloadTooLarge when oversized).
        LookupError: workers are connected and none offers the task.
    """
    check_task_name(msg.task)
    _check_options(msg)
    args = canonical_args(parse_args(msg.args))
    if have_workers and not defaults.knows(msg.task):
        raise LookupError(f"no worker offers task {msg.task!r}")
    run_at = msg.run_at if msg.run_at is not None else now_wall + msg.delay_s
    return Submission(msg, args, cache_key(msg.task, args, msg.scope), run_at)


def _check_options(msg: p.Submit) -> None:
    if msg.priority not in PRIORITIES:
        raise BadArguments(f"priority must be one of {', '.join(PRIORITIES)} (got {msg.priority!r})")
    if msg.ttl_s is not None and not 0 <= msg.ttl_s <= 10 * 365 * 86400:
        raise BadArguments(f"ttl must be within 0..10 years in seconds (got {msg.ttl_s})")
    if not 0 <= msg.delay_s <= MAX_DELAY_S:
        raise BadArguments(f"delay must be within 0..{MAX_DELAY_S:g} s (got {msg.delay_s})")
    if msg.max_attempts is not None and not 1 <= msg.max_attempts <= MAX_ATTEMPTS_CAP:
        raise BadArguments(f"max_attempts must be within 1..{MAX_ATTEMPTS_CAP} (got {msg.max_attempts})")
    if msg.timeout_s is not None and not 0 < msg.timeout_s <= 7 * 86400:
        raise BadArguments(f"timeout must be within 0..7 days in seconds (got {msg.timeout_s})")
    if len(msg.scope) > MAX_SCOPE:
        raise BadArguments(f"scope exceeds {MAX_SCOPE} characters (got {len(msg.scope)})")
