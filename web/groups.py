"""Groups over HTTP: ``POST /api/groups``, ``GET /api/groups/{id}``, the live page
``GET /groups/{id}``, its WebSocket ``/api/groups/{id}/events`` and the demo's parallel report.

A group is many jobs submitted at once and watched as one bar. The body of
``POST /api/groups`` is ``POST /api/jobs``'s with ``args`` a list of args objects (one job
each, at most ``MAX_GROUP_SIZE``); every one is checked before anything is submitted, so a
bad one is a 400 naming its index and nothing runs. The WebSocket is the job one (same
join, same messages); a group's messages add ``size``, ``counts``, ``child`` (the row that
changed) and, in snapshots, ``children``.
"""

from __future__ import annotations

import asyncio
from typing import Any, Final
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse
from starlette.routing import Route, WebSocketRoute

from broker.errors import BadArguments, UnknownJob, UnknownTask
from broker.groups import MAX_GROUP_SIZE
from broker.jobs import FINAL_STATES, canonical_args
from web.api import SubmitRequest, check_origin, job_id_param, parse_submit, read_json
from web.auth import request_scope
from web.errors import ApiError
from web.events import job_events
from web.render import Markup, escape, render, render_value
from web.throttle import check_submit

DEMO_TABLES: Final = ("orders", "customers", "invoices", "refunds", "shipments",
                      "returns", "payments", "reviews", "stock", "visits")  # fmt: skip
MAX_SUMMARY_COLUMNS: Final = 8
LABELS: Final = {"queued": "Queued", "running": "Running", "done": "Done", "failed": "Failed",
                 "cancelled": "Cancelled"}  # fmt: skip


def parse_group(body: Any) -> tuple[SubmitRequest, list[dict[str, Any]]]:
    """Validate a ``POST /api/groups`` body (pure): the options, then each child's args.

    Raises:
        BadArguments: what ``parse_submit`` refuses, ``args`` not a list of 1..MAX_GROUP_SIZE
            objects, or a bad one (its index named).
    """
    if not isinstance(body, dict):
        raise BadArguments(f"body must be a JSON object (got {type(body).__name__})")
    args = body.get("args")
    if not isinstance(args, list):
        raise BadArguments("args must be a list of args objects, one per job")
    if not 1 <= len(args) <= MAX_GROUP_SIZE:
        raise BadArguments(f"a group has 1..{MAX_GROUP_SIZE} jobs (got {len(args)})")
    options = parse_submit({**body, "args": {}})
    for index, item in enumerate(args):
        try:
            canonical_args(item)
        except BadArguments as exc:
            raise type(exc)(f"args[{index}]: {exc}") from None
    return options, args


async def submit_group(request: Request) -> JSONResponse:
    """``POST /api/groups``: 202 with the group and its children (200 if all were cached)."""
    check_origin(request)
    check_submit(request)
    options, args = parse_group(await read_json(request))
    group = await request.state.client.group(
        options.task, args, ttl=options.ttl, force=options.force, priority=options.priority,
        delay=options.delay, scope=request_scope(request),  # the signed-in user's (web.auth)
    )  # fmt: skip
    return JSONResponse(group.view, status_code=200 if group.view["state"] in FINAL_STATES else 202)


async def group_view(request: Request) -> dict[str, Any]:
    """The group named by the path (404 if the id is not a group's)."""
    group_id = job_id_param(request)
    view: dict[str, Any] = await request.state.client.status(group_id)
    if view.get("kind") != "group":
        raise UnknownJob(group_id)
    return view


async def group_status(request: Request) -> JSONResponse:
    """``GET /api/groups/{id}``: state, aggregate done/total, counts and children rows."""
    return JSONResponse(await group_view(request))


async def cancel_group(request: Request) -> JSONResponse:
    """``DELETE /api/groups/{id}``: cancel every child not yet finished; answers with the group."""
    check_origin(request)
    view = await group_view(request)
    client = request.state.client
    live = [row["id"] for row in view.get("children", []) if row.get("state") not in FINAL_STATES]
    await asyncio.gather(*(client.cancel(job_id) for job_id in dict.fromkeys(live)))
    return JSONResponse(await group_view(request))


async def group_page(request: Request) -> HTMLResponse:
    """``GET /groups/{id}``: one live aggregate bar and the children's rows; results when done."""
    view = await group_view(request)
    base = str(request.scope.get("root_path", "")).rstrip("/")
    final = view["state"] in FINAL_STATES
    summary = await _summary(request, view) if final else Markup("")
    return HTMLResponse(render(
        "group.html", base=base, task=view.get("task", "group"), size=view["size"], group_id=view["id"],
        next="" if final else request.url.path, summary=summary, children=_rows(base, view),
    ))  # fmt: skip


def _rows(base: str, view: dict[str, Any]) -> Markup:
    return Markup("".join(_row(base, str(view.get("task")), number, row)
                          for number, row in enumerate(view.get("children", []), start=1)))  # fmt: skip


def _row(base: str, task: str, number: int, row: dict[str, Any]) -> str:
    job_id, state = escape(row["id"]), str(row.get("state"))
    return (
        f'<li class="jobcast-child" data-jobcast-child="{job_id}" data-jobcast-state="{escape(state)}">'
        f'<a href="{escape(base)}/jobs/{job_id}">{escape(task)} {number}</a> '
        f'<span class="jobcast-child-state">{escape(LABELS.get(state, state))}</span>'
        '<span class="jobcast-child-bar"><span class="jobcast-child-fill"></span></span>'
        f'<span class="jobcast-child-count">{escape(row.get("done"))} / {escape(row.get("total"))}</span>'
        "</li>"
    )


async def _summary(request: Request, view: dict[str, Any]) -> Markup:
    """A finished group's results, one row per child, and a total of their numeric fields."""
    ids = [row["id"] for row in view.get("children", [])]
    unique = list(dict.fromkeys(ids))
    jobs = dict(
        zip(unique, await asyncio.gather(*(request.state.client.status(i) for i in unique)), strict=True)
    )
    results = [jobs[job_id].get("result") for job_id in ids]
    columns = _columns(results)
    head = "".join(f"<th>{escape(name)}</th>" for name in ["#", "state", *columns])
    body = "".join(_result_row(number, jobs[job_id], columns) for number, job_id in enumerate(ids, start=1))
    totals = {name: _total(results, name) for name in columns}
    if any(value is not None for value in totals.values()):
        cells = "".join(f"<td>{'' if totals[n] is None else escape(totals[n])}</td>" for n in columns)
        body += f'<tr class="jobcast-total"><th>Total</th><td></td>{cells}</tr>'
    return Markup(f'<h2>Results</h2><table class="result jobcast-results"><tr>{head}</tr>{body}</table>')


def _columns(results: list[Any]) -> list[str]:
    names: dict[str, None] = {}
    for result in results:
        if isinstance(result, dict):
            names.update(dict.fromkeys(str(key) for key in result))
    return list(names)[:MAX_SUMMARY_COLUMNS]


def _result_row(number: int, job: dict[str, Any], columns: list[str]) -> str:
    result = job.get("result")
    if isinstance(result, dict):
        cells = "".join(f"<td>{render_value(result.get(name, ''))}</td>" for name in columns)
    else:
        shown = result if result is not None else (job.get("error") or {}).get("message", "")
        cells = f'<td colspan="{max(1, len(columns))}">{render_value(shown)}</td>'
    return f"<tr><td>{number}</td><td>{escape(job.get('state'))}</td>{cells}</tr>"


def _total(results: list[Any], name: str) -> int | float | None:
    values: list[int | float] = []
    for result in results:
        value = result.get(name) if isinstance(result, dict) else None
        if not isinstance(value, int | float) or isinstance(value, bool):
            return None
        values.append(value)
    return sum(values) if values else None


async def parallel_report(request: Request) -> RedirectResponse:
    """``GET /demo/parallel-report``: ten slow "database" queries as one group, then its page."""
    check_submit(request)
    try:
        group = await request.state.client.group("db_query", [{"table": table} for table in DEMO_TABLES])
    except UnknownTask as exc:
        raise ApiError(404, str(exc)) from None
    base = str(request.scope.get("root_path", "")).rstrip("/")
    return RedirectResponse(f"{base}/groups/{quote(group.id)}", status_code=303)


routes: Final = [
    Route("/api/groups", submit_group, methods=["POST"]),
    Route("/api/groups/{job_id}", group_status, methods=["GET"]),
    Route("/api/groups/{job_id}", cancel_group, methods=["DELETE"]),
    WebSocketRoute("/api/groups/{job_id}/events", job_events),
    Route("/groups/{job_id}", group_page, methods=["GET"]),
    Route("/demo/parallel-report", parallel_report, methods=["GET"]),
]
