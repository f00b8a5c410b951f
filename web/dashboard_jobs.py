"""Job lists and retry for the dashboard, through the broker's LIST and RETRY commands."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from broker.async_client import AsyncClient
from broker.jobs import State, check_task_name
from web.errors import ApiError

SNAPSHOT_LIMITS: Final = {"running": 100, "queued": 100, "failed": 20}
JOB_FIELDS: Final = ("id", "task", "state", "done", "total", "message", "eta_s", "seq", "epoch",
                     "attempts", "max_attempts", "error", "created_at", "started_at",
                     "finished_at")  # fmt: skip
STATE_NAMES: Final = tuple(str(state) for state in State)
DEFAULT_LIMIT: Final = 50
MAX_LIMIT: Final = 500


def job_fields(job: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of a job the dashboard shows (never its args or result)."""
    return {name: job.get(name) for name in JOB_FIELDS}


async def job_lists(client: AsyncClient) -> list[dict[str, Any]]:
    """Running, queued and recently failed jobs for a dashboard snapshot, newest first."""
    found: list[dict[str, Any]] = []
    for state, limit in SNAPSHOT_LIMITS.items():
        found.extend(job_fields(job) for job in await client.jobs(state=state, limit=limit))
    return found


def list_query(params: Mapping[str, str]) -> dict[str, Any]:
    """``state``, ``task`` and ``limit`` from a query string, validated.

    Raises:
        ApiError: 400 for an unknown state, a bad task name or a limit out of range.
    """
    state = params.get("state") or None
    if state is not None and state not in STATE_NAMES:
        raise ApiError(400, f"state must be one of {', '.join(STATE_NAMES)} (got {state[:32]!r})")
    task = params.get("task") or None
    if task is not None:
        check_task_name(task)
    raw = params.get("limit", str(DEFAULT_LIMIT))
    if not (raw.isascii() and raw.isdigit() and 1 <= int(raw[:6]) <= MAX_LIMIT):
        raise ApiError(400, f"limit must be within 1..{MAX_LIMIT} (got {raw[:32]!r})")
    return {"state": state, "task": task, "limit": int(raw)}


async def list_jobs(client: AsyncClient, params: Mapping[str, str]) -> list[dict[str, Any]]:
    """Jobs matching the query, newest first.

    Raises:
        ApiError: 400 for a bad query.
    """
    return [job_fields(job) for job in await client.jobs(**list_query(params))]


async def retry_job(client: AsyncClient, job_id: str) -> dict[str, Any]:
    """Re-submit a failed or cancelled job under a new id; the new job's view."""
    job = await client.retry(job_id)
    return job_fields(job.view)
