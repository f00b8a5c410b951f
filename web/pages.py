"""HTML pages: ``/`` (demo), ``/jobs/{id}`` (progress), ``/bars?id=…`` (several progress bars)
and ``/reports/{task}`` (seed flow).

``/reports/{task}?k=v`` renders a fresh cached result at once; otherwise it submits the job
(coalesced with an identical running one) and sends the browser (303) to the progress page,
which returns to ``next`` — now a cache hit — when the job is done. ``next`` is only ever a
same-origin relative path (no open redirect).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sqlite3
import time
from typing import Any, Final
from urllib.parse import quote, urlencode

from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from broker.errors import UnknownTask, UnsafeStoredData
from broker.jobs import cache_key, canonical_args, check_task_name, is_job_id
from broker.results import ResultReader
from web.api import job_id_param
from web.auth import auth_in_force, request_scope
from web.errors import NO_SUCH_JOB, ApiError
from web.hot_reports import HotReports
from web.render import Markup, RenderedResults, escape, render
from web.settings import Settings
from web.throttle import check_submit

logger = logging.getLogger(__name__)
RENDERED: Final = RenderedResults()  # per web process: a finished job's report never changes
HOT: Final = HotReports()  # per web process: a popular report's page, for about a second

INT_PATTERN: Final = re.compile(r"0|-?[1-9][0-9]{0,14}")
DECIMAL_PATTERN: Final = re.compile(r"-?(0|[1-9][0-9]{0,14})\.[0-9]{1,15}")
MAX_NEXT_CHARS: Final = 2048
MAX_BARS: Final = 20
DEMO_FEEDS: Final = ("python.xml", "jobcast-atom.xml", "tricky.xml")
ROBOTS: Final = "User-agent: *\nDisallow: /jobs/\nDisallow: /bars\nDisallow: /api/\nDisallow: /reports/\n"


def safe_next(value: str | None) -> str:
    """``value`` if it is a same-origin relative path (``/x``, not ``//x`` or ``/\\x``), else ""."""
    if not value or len(value) > MAX_NEXT_CHARS or not value.startswith("/"):
        return ""
    if value.startswith(("//", "/\\")) or "\\" in value:
        return ""
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in value):
        return ""
    return value


def query_args(request: Request) -> dict[str, Any]:
    """Report filters from the query string: repeated keys become lists, plain numbers numbers."""
    args: dict[str, Any] = {}
    for key in request.query_params:
        values = [_coerce(value) for value in request.query_params.getlist(key)]
        args[key] = values if len(values) > 1 else values[0]
    return args


def _coerce(value: str) -> int | float | str:
    if INT_PATTERN.fullmatch(value):
        return int(value)
    return float(value) if DECIMAL_PATTERN.fullmatch(value) else value


def _base(request: Request) -> str:
    return str(request.scope.get("root_path", "")).rstrip("/")


def _html(text: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(text, status_code=status)


async def index(request: Request) -> HTMLResponse:
    """``GET /``: the demo page, with links that start the demo reports."""
    settings: Settings = request.state.settings
    base = _base(request)
    feeds = f"{settings.own_url}{base}/demo/feeds/"
    links = [
        ("Sales report, EU 2026", f"{base}/reports/report?region=eu&year=2026"),
        ("Sales report, US 2025", f"{base}/reports/report?region=us&year=2025"),
        (
            "Sample feeds (served by this server)",
            f"{base}/reports/feeds?" + urlencode([("urls", feeds + name) for name in DEMO_FEEDS]),
        ),
        ("Parallel report: ten slow database queries, one bar", f"{base}/demo/parallel-report"),
    ]
    demos = Markup("".join(f'<li><a href="{escape(url)}">{escape(text)}</a></li>' for text, url in links))
    return _html(render("index.html", base=base, demos=demos))


async def job_page(request: Request) -> HTMLResponse:
    """``GET /jobs/{id}?next=…``: the live progress page (404 for unknown ids)."""
    job = await request.state.client.status(job_id_param(request))
    next_url = safe_next(request.query_params.get("next"))
    return _html(
        render(
            "job.html",
            base=_base(request),
            task=job.get("task", "job"),
            job_id=job["id"],
            next=next_url,
        )
    )


async def bars(request: Request) -> HTMLResponse:
    """``GET /bars?id=A&id=B…``: one live progress bar per job (progress.js attaches to each).

    Ids are validated (shape, then existence: an unknown one is a 404, like ``/jobs/{id}``);
    repeats are shown once. No ``next``: several jobs have no single place to go back to.
    """
    ids = list(dict.fromkeys(request.query_params.getlist("id")))
    if not ids:
        raise ApiError(400, "give at least one job: /bars?id=JOB_ID&id=…")
    if len(ids) > MAX_BARS:
        raise ApiError(400, f"at most {MAX_BARS} jobs per page (got {len(ids)})")
    if not all(is_job_id(job_id) for job_id in ids):
        raise ApiError(404, NO_SUCH_JOB)
    jobs = await asyncio.gather(*(request.state.client.status(job_id) for job_id in ids))
    items = Markup(
        "".join(
            f'<section class="jobcast-item"><h2>{escape(number)}. {escape(job.get("task", "job"))}</h2>'
            f'<div class="jobcast-job" data-jobcast-job="{escape(job["id"])}" '
            'data-jobcast-cancel="true"></div></section>'
            for number, job in enumerate(jobs, start=1)
        )
    )
    return _html(render("bars.html", base=_base(request), count=len(jobs), bars=items))


async def report(request: Request) -> Response:
    """``GET /reports/{task}?k=v…``: the cached result at once, else 303 to its progress page."""
    task = str(request.path_params["task"])
    scope = request_scope(request)  # "" without host authentication
    hot_key = (_base(request), task, request.scope["query_string"], scope)
    if not (auth_in_force(request) and b"scope" in hot_key[2]):  # that query must get its 400
        hot = HOT.get(hot_key, time.time())
        if hot is not None:  # the popular-report path: nothing parsed, read or rendered
            return Response(hot, media_type="text/html")
    args = query_args(request)
    check_task_name(task)
    if "scope" in args and auth_in_force(request):
        raise ApiError(400, "scope is set by the server (the signed-in user), never by the request")
    page = _cached_page(request, task, canonical_args(args), scope)
    if page is not None:  # the fast path: no broker round trip, no re-rendering
        HOT.put(hot_key, page[0], page[1], time.time())
        return Response(page[0], media_type="text/html")
    check_submit(request)  # a GET that creates a job is rate-limited like a POST (S10)
    try:
        job = await request.state.client.submit(task, args, scope=scope)
    except UnknownTask as exc:
        raise ApiError(404, str(exc)) from None
    view = dict(job.view)
    if view.get("state") == "done" and "result" in view:
        meta = "Cached result." if view.get("cached") else "Fresh result."
        body = RENDERED.render(view["id"], view["result"])
        return _html(render("report.html", base=_base(request), task=task, meta=meta, body=body))
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    target = f"{_base(request)}/jobs/{quote(view['id'])}?next={quote(here, safe='')}"
    return RedirectResponse(target, status_code=303)


def _cached_page(
    request: Request, task: str, args_json: bytes, scope: str
) -> tuple[bytes, dict[str, Any]] | None:
    """A fresh cached report's page (encoded) and job view, read from the result cache."""
    stored = cached_report(request.state.results, task, args_json, scope)
    if stored is None:
        return None
    body = RENDERED.render(stored[0]["id"], lambda: json.loads(stored[1]))
    page = render("report.html", base=_base(request), task=task, meta="Cached result.", body=body)
    return page.encode(), stored[0]


def cached_report(
    results: ResultReader, task: str, args_json: bytes, scope: str = ""
) -> tuple[dict[str, Any], bytes] | None:
    """A fresh cached job view and result bytes, read straight from the broker's result cache."""
    try:
        job_id = results.job_for_key(cache_key(task, args_json, scope))
        stored = results.job(job_id) if job_id else None
    except (UnsafeStoredData, sqlite3.Error) as exc:
        logger.warning("result cache unreadable, asking the broker: %s", exc)
        return None
    if stored is None or stored[1] is None:
        return None
    return stored[0], stored[1]


async def robots(request: Request) -> PlainTextResponse:
    """``GET /robots.txt``: keep crawlers off capability URLs."""
    return PlainTextResponse(ROBOTS)


routes: Final = [
    Route("/", index, methods=["GET"]),
    Route("/jobs/{job_id:path}", job_page, methods=["GET"]),
    Route("/bars", bars, methods=["GET"]),
    Route("/reports/{task}", report, methods=["GET"]),
    Route("/robots.txt", robots, methods=["GET"]),
]
