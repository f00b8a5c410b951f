"""Re-submitting a failed or cancelled job: what to keep of it, and the new ``Submit`` (pure).

A retry is a forced submission (past the result cache) of the same task, args, scope,
priority, ttl, attempt cap and timeout, under a new id. If an identical job is queued or
running at that moment, the retry joins it, as any submission does. The broker keeps a
finished job's ``retry_spec`` in memory with the job, and on disk (``spec:{id}``) for as
long as the job's record is retained, so a retry works as long as ``status`` does.
"""

from __future__ import annotations

from typing import Any, Final

from broker import protocol as p
from broker.jobs import Job, State

RETRYABLE: Final = frozenset({str(State.FAILED), str(State.CANCELLED)})


def retry_spec(job: Job) -> dict[str, Any]:
    """What a retry needs of a job, JSON-ready (args included only when it is retryable)."""
    spec: dict[str, Any] = {"state": str(job.state)}
    if spec["state"] in RETRYABLE:
        spec.update(
            task=job.task, args=job.args.decode("utf-8"), scope=job.scope, priority=job.priority,
            ttl_s=job.ttl_s, max_attempts=job.max_attempts, timeout_s=job.timeout_s,
        )  # fmt: skip
    return spec


def resubmission(req: int, job_id: str, spec: dict[str, Any] | None) -> p.Submit | p.Error:
    """The forced ``Submit`` that retries the job, or the ``Error`` that refuses to."""
    if spec is None:
        return p.Error(req=req, code="unknown_job", message="no such job (or past its retention)")
    state = spec.get("state")
    if state not in RETRYABLE:
        message = f"job {job_id} is {state}: only failed or cancelled jobs can be retried"
        return p.Error(req=req, code="not_retryable", message=message)
    try:
        return p.Submit(
            req=req, task=str(spec["task"]), args=str(spec["args"]).encode("utf-8"), force=True,
            ttl_s=_optional_number(spec.get("ttl_s")), priority=str(spec.get("priority", "normal")),
            scope=str(spec.get("scope", "")), max_attempts=_optional_int(spec.get("max_attempts")),
            timeout_s=_optional_number(spec.get("timeout_s")),
        )  # fmt: skip
    except (KeyError, UnicodeEncodeError):
        return p.Error(
            req=req, code="not_retryable", message=f"job {job_id}: its stored record is unreadable"
        )


def _optional_number(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def _optional_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
