"""Building client requests and reading the broker's replies (pure, shared by both clients)."""

from __future__ import annotations

import json
from typing import Any

from broker import protocol as p
from broker.batches import OPTIONS as BATCH_OPTIONS
from broker.errors import (
    BadArguments,
    JobCancelled,
    JobFailed,
    PayloadTooLarge,
    ProtocolError,
    error_for_code,
)
from broker.groups import MAX_GROUP_SIZE
from broker.jobs import FINAL_STATES, canonical_args
from broker.listing import check_filters


def submit_message(
    req: int,
    task: str,
    args: dict[str, Any] | None,
    *,
    ttl: float | None,
    force: bool,
    priority: str,
    delay: float,
    run_at: float | None,
    scope: str,
    max_attempts: int | None,
    timeout: float | None,
    wait: bool = False,
) -> p.Submit:
    """A ``Submit`` with canonical args; bad args raise before anything is sent."""
    return p.Submit(
        req=req, task=task, args=canonical_args({} if args is None else args),
        ttl_s=None if ttl is None else float(ttl), force=force, priority=priority,
        delay_s=float(delay), run_at=run_at, scope=scope, max_attempts=max_attempts,
        timeout_s=None if timeout is None else float(timeout), wait=wait,
    )  # fmt: skip


def submit_options(options: dict[str, Any]) -> dict[str, Any]:
    """``submit``'s keyword options with their defaults filled in (for ``map`` and ``group``).

    Raises:
        TypeError: an option ``submit`` does not take.
    """
    defaults = {"ttl": None, "force": False, "priority": "normal", "delay": 0.0, "run_at": None,
                "scope": "", "max_attempts": None, "timeout": None}  # fmt: skip
    unknown = set(options) - set(defaults)
    if unknown:
        raise TypeError(f"unknown submit option {sorted(unknown)[0]!r}")
    return {**defaults, **options}


def batch_options(options: dict[str, Any]) -> dict[str, Any]:
    """``submit``'s keyword options (checked as ``submit_options``) as ``Submit`` fields."""
    one = submit_message(0, "", {}, **submit_options(options))
    return {name: getattr(one, name) for name in BATCH_OPTIONS}


def group_message(req: int, task: str, args_list: list[dict[str, Any]], **options: Any) -> p.SubmitGroup:
    """A ``SubmitGroup`` (options as ``submit_message``'s); bad args raise before sending.

    Raises:
        BadArguments: not 1..MAX_GROUP_SIZE args objects, or one is bad (its index named).
        PayloadTooLarge: the args together exceed MAX_ARGS_BYTES.
    """
    if not isinstance(args_list, list) or not 1 <= len(args_list) <= MAX_GROUP_SIZE:
        raise BadArguments(f"a group takes a list of 1..{MAX_GROUP_SIZE} args objects")
    encoded = []
    for index, args in enumerate(args_list):
        try:
            encoded.append(canonical_args(args))
        except BadArguments as exc:
            raise type(exc)(f"job {index}: {exc}") from None
    payload = b"[" + b",".join(encoded) + b"]"
    if len(payload) > p.MAX_ARGS_BYTES:
        raise PayloadTooLarge(f"a group's args exceed {p.MAX_ARGS_BYTES} bytes (got {len(payload)})")
    one = submit_message(req, task, {}, **options)
    return p.SubmitGroup(
        req=req, task=task, args=payload, ttl_s=one.ttl_s, force=one.force, priority=one.priority,
        delay_s=one.delay_s, run_at=one.run_at, scope=one.scope, max_attempts=one.max_attempts,
        timeout_s=one.timeout_s,
    )  # fmt: skip


def job_view(reply: p.Message) -> dict[str, Any]:
    """The job dict from a reply (with ``result`` decoded when present).

    A group's snapshot carries its children rows where a job's carries its result: they
    become ``children``.

    Raises:
        JobcastError: the broker answered with an error (UnknownJob, UnknownTask, …).
    """
    if isinstance(reply, p.Error):
        raise error_for_code(reply.code, reply.message)
    if not isinstance(reply, p.Snapshot):
        raise ProtocolError(f"expected a job snapshot, got {type(reply).__name__}")
    view = dict(reply.job)
    if reply.result is not None:
        view["children" if view.get("kind") == "group" else "result"] = json.loads(reply.result)
    return view


def list_message(req: int, state: str | None, task: str | None, limit: int) -> p.ListJobs:
    """A ``ListJobs`` request; bad filters raise BadArguments before anything is sent."""
    check_filters(state, task, limit)
    return p.ListJobs(req=req, state=state, task=task, limit=limit)


def job_list(reply: p.Message) -> list[dict[str, Any]]:
    """The job views of a ``JobList`` reply, newest first.

    Raises:
        JobcastError: the broker answered with an error (BadArguments, …).
    """
    if isinstance(reply, p.Error):
        raise error_for_code(reply.code, reply.message)
    if not isinstance(reply, p.JobList):
        raise ProtocolError(f"expected a job list, got {type(reply).__name__}")
    views = json.loads(reply.views)
    if not isinstance(views, list):
        raise ProtocolError("a job list must be a JSON array")
    return views


def metrics_view(reply: p.Message) -> dict[str, Any]:
    """The per-task figures of a ``Counters`` reply, with the broker's stats under ``stats``."""
    if isinstance(reply, p.Error):
        raise error_for_code(reply.code, reply.message)
    if not isinstance(reply, p.Counters) or reply.metrics is None:
        raise ProtocolError(f"expected counters with metrics, got {type(reply).__name__}")
    figures = json.loads(reply.metrics)
    if not isinstance(figures, dict):
        raise ProtocolError("metrics must be a JSON object")
    return {**figures, "stats": reply.stats}


def counters(reply: p.Message) -> dict[str, Any]:
    """The figures of a ``Counters`` reply (raises the broker's error otherwise)."""
    if isinstance(reply, p.Counters):
        return reply.stats
    job_view(reply)  # raises the broker's error
    raise ProtocolError(f"expected figures, got {type(reply).__name__}")


def final_result(view: dict[str, Any]) -> Any:
    """The result of a finished job, or the exception its final state means."""
    match view["state"]:
        case "done":
            return view.get("result")
        case "failed":
            raise JobFailed(view["id"], view.get("error") or {})
        case "cancelled":
            raise JobCancelled(view["id"])
    raise ValueError(f"job {view['id']} is not finished ({view['state']})")


def event_view(event: p.Event) -> dict[str, Any]:
    """An event as the dict users and browsers see."""
    view: dict[str, Any] = {
        "id": event.id, "seq": event.seq, "epoch": event.epoch, "state": event.state,
        "done": event.done, "total": event.total, "message": event.message,
        "eta_s": event.eta_s, "ts": event.ts, "attempts": event.attempts,
    }  # fmt: skip
    if event.error is not None:
        view["error"] = event.error
    if event.extra:
        view.update(event.extra)
    return view


class EventFollower:
    """Clone-pattern bookkeeping for one watcher: pass only newer events, stop after the end."""

    def __init__(self, after: int = 0) -> None:
        self.last_seq = after
        self.finished = False

    def accept(self, event: dict[str, Any]) -> bool:
        """Whether to deliver ``event`` (newer than all delivered); notes a final state."""
        if event["seq"] <= self.last_seq:
            return False
        self.last_seq = event["seq"]
        self.finished = event["state"] in FINAL_STATES
        return True


def published_event(frames: list[bytes], job_id: str) -> dict[str, Any] | None:
    """The event in a SUB message, if it is for exactly ``job_id`` (SUBSCRIBE is a prefix)."""
    if frames[0] != job_id.encode():
        return None
    msg = p.decode(frames)
    return event_view(msg) if isinstance(msg, p.Event) else None
