"""The JSON API: ``/api/jobs`` (submit, status, cancel) and ``/healthz``.

Request bodies are read with a size bound, must be ``application/json`` (which a cross-site
form cannot send without a preflight) and are parsed strictly: NaN, deep nesting and huge
integers are 400s. Submissions are rate-limited per client (429, ``web.throttle``). Every
failure is ``{"error": ...}`` with a 4xx status.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field
from typing import Any, Final

from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from broker.errors import BadArguments, UnknownJob
from broker.jobs import PRIORITIES, canonical_args, check_task_name, is_job_id, parse_args
from web.auth import request_scope
from web.callbacks import CallbackSender, check_callback_url
from web.errors import ApiError
from web.settings import Settings
from web.throttle import check_submit

SUBMIT_FIELDS: Final = frozenset({"task", "args", "ttl", "force", "priority", "delay", "callback_url"})
MAX_TTL_S: Final = 10 * 365 * 86400.0
MAX_DELAY_S: Final = 365 * 86400.0
HEALTH_TIMEOUT_S: Final = 2.0


@dataclass(frozen=True, slots=True)
class SubmitRequest:
    """A validated ``POST /api/jobs`` body."""

    task: str
    args: dict[str, Any] = field(default_factory=dict)
    ttl: float | None = None
    force: bool = False
    priority: str = "normal"
    delay: float = 0.0
    callback_url: str | None = None


def parse_submit(body: Any) -> SubmitRequest:
    """Validate a submit body (pure).

    Raises:
        BadArguments: a missing or unknown field, a wrong type, a value out of range.
    """
    if not isinstance(body, dict):
        raise BadArguments(f"body must be a JSON object (got {type(body).__name__})")
    if "scope" in body:
        raise BadArguments("scope is set by the server (the signed-in user), never by the request")
    unknown = set(body) - SUBMIT_FIELDS
    if unknown:
        raise BadArguments(f"unknown field {sorted(unknown)[0]!r}")
    task = body.get("task")
    if not isinstance(task, str):
        raise BadArguments("task must be a string")
    check_task_name(task)
    args = body.get("args", {})
    canonical_args(args)  # raises BadArguments / PayloadTooLarge with the rule broken
    force = body.get("force", False)
    if not isinstance(force, bool):
        raise BadArguments("force must be true or false")
    priority = body.get("priority", "normal")
    if priority not in PRIORITIES:
        raise BadArguments(f"priority must be one of {', '.join(PRIORITIES)} (got {priority!r})")
    ttl = _number(body.get("ttl"), "ttl", MAX_TTL_S, optional=True)
    delay = _number(body.get("delay", 0.0), "delay", MAX_DELAY_S) or 0.0
    callback_url = body.get("callback_url")
    if callback_url is not None and not isinstance(callback_url, str):
        raise BadArguments("callback_url must be a string")
    return SubmitRequest(task, args, ttl, force, str(priority), delay, callback_url)


def _number(value: Any, name: str, maximum: float, optional: bool = False) -> float | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadArguments(f"{name} must be a number of seconds")
    if not (math.isfinite(value) and 0 <= value <= maximum):
        raise BadArguments(f"{name} must be within 0..{maximum:.0f} seconds (got {value})")
    return float(value)


def check_origin(conn: HTTPConnection) -> None:
    """Refuse a state-changing request from a foreign browser origin (CSRF)."""
    settings: Settings = conn.state.settings
    if not settings.origin_allowed(conn.headers.get("origin"), conn.headers.get("host")):
        raise ApiError(403, "cross-origin request refused")


async def read_json(request: Request) -> Any:
    """The request's JSON body, bounded in size and strictly parsed."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/json":
        raise ApiError(415, "content type must be application/json")
    limit = request.state.settings.max_body_bytes
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise ApiError(413, f"body exceeds {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"body exceeds {limit} bytes (got more than {size})")
        chunks.append(chunk)
    try:
        return parse_args(b"".join(chunks))  # rejects NaN, deep nesting, huge ints
    except BadArguments as exc:
        raise ApiError(400, str(exc).replace("args are not", "the body is not", 1)) from None


def job_id_param(conn: HTTPConnection) -> str:
    """The ``{job_id}`` path parameter, 404 (same as unknown) when malformed."""
    job_id = str(conn.path_params["job_id"])
    if not is_job_id(job_id):
        raise UnknownJob(job_id)
    return job_id


async def submit_job(request: Request) -> JSONResponse:
    """``POST /api/jobs``: 202 with the job, or 200 with ``cached: true`` and the result."""
    check_origin(request)
    check_submit(request)  # 429 past the client's rate, before the body is even read
    body = parse_submit(await read_json(request))
    callbacks: CallbackSender = request.state.callbacks
    target = None if body.callback_url is None else check_callback_url(body.callback_url, callbacks.policy)
    if target is not None:
        callbacks.check_capacity()  # 503 before the job exists
    job = await request.state.client.submit(
        body.task,
        body.args,
        ttl=body.ttl,
        force=body.force,
        priority=body.priority,
        delay=body.delay,
        scope=request_scope(request),  # the signed-in user's, when the host app authenticates
    )
    if target is not None:
        callbacks.schedule(job.id, target)
    view = dict(job.view)
    finished = view.get("cached") or view.get("state") == "done"
    return JSONResponse(view, status_code=200 if finished else 202)


async def job_status(request: Request) -> JSONResponse:
    """``GET /api/jobs/{id}``: the job (result included when done); unknown → 404."""
    job = await request.state.client.status(job_id_param(request))
    return JSONResponse(job)


async def cancel_job(request: Request) -> JSONResponse:
    """``DELETE /api/jobs/{id}``: cancel the job; answers with its state."""
    check_origin(request)
    job = await request.state.client.cancel(job_id_param(request))
    return JSONResponse(job)


async def healthz(request: Request) -> JSONResponse:
    """``GET /healthz``: 200 when the broker answers, else 503."""
    try:
        await asyncio.wait_for(request.state.client.stats(), HEALTH_TIMEOUT_S)
    except TimeoutError:
        return JSONResponse({"ok": False, "error": "broker unreachable"}, status_code=503)
    return JSONResponse({"ok": True, "watched_jobs": len(request.state.relay.watches)})


routes: Final = [
    Route("/api/jobs", submit_job, methods=["POST"]),
    Route("/api/jobs/{job_id:path}", job_status, methods=["GET"]),
    Route("/api/jobs/{job_id:path}", cancel_job, methods=["DELETE"]),
    Route("/healthz", healthz, methods=["GET"]),
]
