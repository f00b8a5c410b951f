"""Listing jobs for operators: filters, order and the bounded reply (pure).

Newest first: a finished job by when it finished, a live (queued or running) job by when
it was submitted. Finished jobs come from what the broker keeps in memory, the last
``MAX_JOBS_IN_MEMORY`` (10,000) of them since it started; older ones stay readable by id
(``status``) but are not listed. List views carry the error's type and message; the
traceback is left out to keep a 1000-job reply bounded (``status`` has it).
"""

from __future__ import annotations

import heapq
import itertools
import json
from collections.abc import Iterable, Iterator
from typing import Any, Final

from broker.errors import BadArguments
from broker.jobs import FINAL_STATES, MAX_TASK_NAME, Job, State

MAX_LIST_LIMIT: Final = 1000
DEFAULT_LIST_LIMIT: Final = 50
STATE_NAMES: Final = tuple(str(state) for state in State)


def check_filters(state: Any, task: Any, limit: Any) -> None:
    """Reject a state, task or limit a listing cannot take.

    Raises:
        BadArguments: an unknown state, a task that is not a short string, a limit
            outside 1..MAX_LIST_LIMIT.
    """
    if state is not None and state not in STATE_NAMES:
        raise BadArguments(f"state must be one of {', '.join(STATE_NAMES)} (got {state!r})")
    if task is not None and not (isinstance(task, str) and 0 < len(task) <= MAX_TASK_NAME):
        raise BadArguments(f"task must be a name of 1..{MAX_TASK_NAME} characters (got {task!r})")
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIST_LIMIT:
        raise BadArguments(f"limit must be an integer within 1..{MAX_LIST_LIMIT} (got {limit!r})")


def select_jobs(
    jobs: Iterable[Job],
    finished_newest_first: Iterable[Job],
    *,
    state: str | None = None,
    task: str | None = None,
    limit: int = DEFAULT_LIST_LIMIT,
) -> list[Job]:
    """The ``limit`` newest jobs matching the filters (filters checked by ``check_filters``).

    ``jobs`` is every job in memory (live and finished); ``finished_newest_first`` the
    finished ones in the order they finished, newest first, so finished-only listings
    stop early instead of scanning everything.
    """
    wanted = None if state is None else State(state)

    def matches(job: Job) -> bool:
        return (wanted is None or job.state is wanted) and (task is None or job.task == task)

    finished: Iterator[Job] = iter(())
    if wanted is None or wanted in FINAL_STATES:
        finished = itertools.islice(filter(matches, finished_newest_first), limit)
    live: Iterator[Job] = iter(())
    if wanted is None or wanted not in FINAL_STATES:
        live = (job for job in jobs if not job.is_final and matches(job))
    return heapq.nlargest(limit, itertools.chain(finished, live), key=recency)


def recency(job: Job) -> float:
    """When a job last mattered: finished jobs by their end, live ones by submission."""
    if job.is_final and job.finished_at is not None:
        return job.finished_at
    return job.created_at


def list_view(job: Job, epoch: int) -> dict[str, Any]:
    """A job's view for a listing: the full view, the error without its traceback."""
    view = job.view(epoch)
    if job.error is not None:
        view["error"] = {"type": job.error.get("type", ""), "message": job.error.get("message", "")}
    return view


def encode_views(jobs: list[Job], epoch: int) -> bytes:
    """The JSON array payload of a ``JobList`` reply."""
    views = [list_view(job, epoch) for job in jobs]
    return json.dumps(views, separators=(",", ":")).encode()
