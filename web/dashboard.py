"""``/dashboard``: queues, workers, running jobs with live bars and recent failures, pushed.

Routes (all behind the dashboard token, see ``web.auth``; with no token configured every one
answers 404 with a message saying how to turn the dashboard on)::

    GET  /dashboard                    the page, or the sign-in form (401)
    POST /dashboard/login              form field ``token`` → cookie, 303 to /dashboard
    POST /dashboard/logout             drops the cookie, 303 to /dashboard
    GET  /dashboard/api/session        200 when signed in, else 401 (the page's check)
    GET  /dashboard/api/jobs?state=&task=&limit=   jobs, newest first (LIST)
    POST /dashboard/api/jobs/{id}/retry            re-submit a failed job (RETRY)
    WS   /dashboard/events             a snapshot (stats, jobs), then pushed events and stats

Starting and cancelling use the public ``POST /api/jobs`` and ``DELETE /api/jobs/{id}``.
The cookie's path is the dashboard's, so it never travels with other requests.
"""

from __future__ import annotations

import logging
from typing import Final
from urllib.parse import parse_qs

from starlette.requests import HTTPConnection, Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from web import auth, dashboard_socket
from web.api import check_origin, job_id_param, read_json
from web.dashboard_jobs import list_jobs, retry_job
from web.errors import ApiError
from web.render import Markup, escape, render

logger = logging.getLogger(__name__)

MAX_FORM_BYTES: Final = 4096
FORM_TYPE: Final = "application/x-www-form-urlencoded"
# Chromium sends "Origin: null" with a form POST from a no-referrer page, which the CSRF
# check refuses; same-origin keeps the real Origin and still sends nothing to other sites.
REFERRER_POLICY: Final = "same-origin"
SIGN_IN_FORM: Final = (
    '<form method="post" action="{action}" class="dashboard-login">'
    '<label>Dashboard token <input type="password" name="token" autocomplete="current-password" '
    'required autofocus></label> <button type="submit">Sign in</button></form>'
)


def _base(conn: HTTPConnection) -> str:
    return str(conn.scope.get("root_path", "")).rstrip("/")


def cookie_path(conn: HTTPConnection) -> str:
    """The dashboard's path: the session cookie is sent nowhere else."""
    return f"{_base(conn)}/dashboard"


def _sign_in_page(conn: HTTPConnection, message: str, status: int, form: bool = True) -> HTMLResponse:
    action = escape(f"{_base(conn)}/dashboard/login")
    body = Markup(SIGN_IN_FORM.format(action=action)) if form else Markup("")
    page = render("dashboard_login.html", base=_base(conn), message=message, form=body)
    response = HTMLResponse(page, status_code=status, headers={"Referrer-Policy": REFERRER_POLICY})
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="jobcast dashboard"'
    return response


async def dashboard_page(request: Request) -> Response:
    """``GET /dashboard``: the live dashboard, or the sign-in form."""
    token = auth.configured_token(request)
    if token is None:
        return _sign_in_page(request, auth.NO_DASHBOARD, 404, form=False)
    verdict = auth.signed_in(request, token)
    if verdict is None:
        return _sign_in_page(request, "Sign in with the dashboard token.", 401)
    if verdict is False:
        return _sign_in_page(request, "Wrong dashboard token.", 401)
    page = render("dashboard.html", base=_base(request))
    return HTMLResponse(page, headers={"Referrer-Policy": REFERRER_POLICY})


async def login(request: Request) -> Response:
    """``POST /dashboard/login``: check the form's token; set the session cookie."""
    token = auth.configured_token(request)
    if token is None:
        return _sign_in_page(request, auth.NO_DASHBOARD, 404, form=False)
    check_origin(request)  # a cross-site form is refused (the cookie is SameSite=Strict too)
    auth.check_guess_rate(request)
    presented = await _form_token(request)
    if not auth.token_matches(token, presented):
        auth.count_wrong_guess(request)
        return _sign_in_page(request, "Wrong dashboard token.", 401)
    response = RedirectResponse(f"{_base(request)}/dashboard", status_code=303)
    auth.set_session_cookie(response, request, token, cookie_path(request))
    logger.info("dashboard: signed in from %s", request.client.host if request.client else "?")
    return response


async def _form_token(request: Request) -> str:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != FORM_TYPE:
        raise ApiError(415, f"content type must be {FORM_TYPE}")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise ApiError(413, f"form exceeds {MAX_FORM_BYTES} bytes")
    values = parse_qs(body.decode("utf-8", "replace"), max_num_fields=4).get("token", [""])
    return values[0]


async def logout(request: Request) -> Response:
    """``POST /dashboard/logout``: drop the session cookie."""
    check_origin(request)
    response = RedirectResponse(f"{_base(request)}/dashboard", status_code=303)
    auth.clear_session_cookie(response, cookie_path(request))
    return response


async def session(request: Request) -> JSONResponse:
    """``GET /dashboard/api/session``: 200 when signed in (else 401/404 from the check)."""
    auth.require_dashboard(request)
    return JSONResponse({"ok": True})


async def jobs(request: Request) -> JSONResponse:
    """``GET /dashboard/api/jobs?state=&task=&limit=``: jobs, newest first."""
    auth.require_dashboard(request)
    return JSONResponse(await list_jobs(request.state.client, request.query_params))


async def retry(request: Request) -> JSONResponse:
    """``POST /dashboard/api/jobs/{id}/retry``: re-submit a failed or cancelled job."""
    auth.require_dashboard(request)
    check_origin(request)
    await read_json(request)  # JSON only: a cross-site form cannot send it (CSRF)
    job = await retry_job(request.state.client, job_id_param(request))
    return JSONResponse(job, status_code=202)


routes: Final = [
    Route("/dashboard", dashboard_page, methods=["GET"]),
    Route("/dashboard/login", login, methods=["POST"]),
    Route("/dashboard/logout", logout, methods=["POST"]),
    Route("/dashboard/api/session", session, methods=["GET"]),
    Route("/dashboard/api/jobs", jobs, methods=["GET"]),
    Route("/dashboard/api/jobs/{job_id}/retry", retry, methods=["POST"]),
    *dashboard_socket.routes,
]
