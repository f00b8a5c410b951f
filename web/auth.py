"""Who may see the dashboard, and whose cache scope a request uses.

**Dashboard token.** The dashboard lists every job, so it is closed unless a token is
configured (``JOBCAST_DASHBOARD_TOKEN`` or ``--dashboard-token``). A browser signs in once
with a form; the server answers with a cookie holding ``EXPIRES.HMAC(token, EXPIRES)``,
never the token: HttpOnly, SameSite=Strict, limited to the dashboard's path, valid for
``COOKIE_MAX_AGE_S``. Changing the token invalidates every cookie. Non-browser clients send
``Authorization: Bearer TOKEN``. Every comparison is constant-time. A wrong token spends a
token of the client's not-found bucket (``web.throttle``), so guessing runs at the same
bounded rate as guessing job ids; past it the dashboard answers 429 before checking.

**Cache scope.** When the host app authenticates requests (Starlette's
``AuthenticationMiddleware`` sets ``scope["user"]``), the result cache is partitioned by
the signed-in user: ``request_scope`` derives the scope from ``user.identity``, so user B
never gets user A's cached report. A request can never choose its scope.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Final

from starlette.requests import HTTPConnection
from starlette.responses import Response

from web.errors import ApiError, RateLimited
from web.limits import client_key
from web.settings import Settings

COOKIE_NAME: Final = "jobcast_dashboard"
COOKIE_MAX_AGE_S: Final = 12 * 3600
MAX_COOKIE_CHARS: Final = 128
MAX_SCOPE_IDENTITY: Final = 150  # longer identities are hashed (the broker caps scopes at 200)
NO_DASHBOARD: Final = (
    "the dashboard is off: start the web server with --dashboard-token "
    "(or set JOBCAST_DASHBOARD_TOKEN) to turn it on"
)


# --- pure: signing and checking ------------------------------------------------------------


def _mac(token: str, expires_s: int) -> str:
    message = f"jobcast-dashboard:{expires_s}".encode()
    return hmac.new(token.encode(), message, hashlib.sha256).hexdigest()


def cookie_value(token: str, now: float, max_age_s: int = COOKIE_MAX_AGE_S) -> str:
    """A session cookie for ``token``: its expiry and an HMAC over it (never the token)."""
    expires_s = int(now) + max_age_s
    return f"{expires_s}.{_mac(token, expires_s)}"


def cookie_valid(token: str, value: str | None, now: float, max_age_s: int = COOKIE_MAX_AGE_S) -> bool:
    """Whether ``value`` is an unexpired cookie made for ``token``."""
    if not value or len(value) > MAX_COOKIE_CHARS or "." not in value:
        return False
    expires, mac = value.split(".", 1)
    if not (expires.isascii() and expires.isdigit() and len(expires) <= 12):
        return False
    if not now < int(expires) <= now + max_age_s:
        return False
    return hmac.compare_digest(mac.encode(), _mac(token, int(expires)).encode())


def token_matches(token: str, candidate: str) -> bool:
    """Constant-time comparison of a presented token with the configured one."""
    return hmac.compare_digest(token.encode(), candidate.encode("utf-8", "replace"))


def bearer(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer TOKEN`` header, or None."""
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


# --- requests ---------------------------------------------------------------------------------


def configured_token(conn: HTTPConnection) -> str | None:
    """The dashboard token, or None when the dashboard is off."""
    settings: Settings = conn.state.settings
    return settings.dashboard_token


def signed_in(conn: HTTPConnection, token: str) -> bool | None:
    """True for a valid cookie or bearer token, False for a wrong bearer token, None for none.

    Raises:
        RateLimited: the client presented too many wrong tokens lately.
    """
    check_guess_rate(conn)
    presented = bearer(conn.headers.get("authorization"))
    if presented is not None:
        if token_matches(token, presented):
            return True
        count_wrong_guess(conn)
        return False
    return True if cookie_valid(token, conn.cookies.get(COOKIE_NAME), time.time()) else None


def require_dashboard(conn: HTTPConnection) -> str:
    """The token, if the request is signed in to the dashboard.

    Raises:
        ApiError: 404 when the dashboard is off, 401 without or with a wrong token.
        RateLimited: too many wrong tokens lately from this client.
    """
    token = configured_token(conn)
    if token is None:
        raise ApiError(404, NO_DASHBOARD)
    verdict = signed_in(conn, token)
    if verdict is None:
        raise ApiError(401, "sign in to the dashboard first (or send Authorization: Bearer TOKEN)")
    if verdict is False:
        raise ApiError(401, "wrong dashboard token")
    return token


def check_guess_rate(conn: HTTPConnection) -> None:
    """Refuse a client whose not-found bucket is empty (it guessed ids or tokens too often)."""
    limits = getattr(conn.state, "limits", None)
    if limits is not None:
        wait = limits.not_found.wait_s(_peer(conn), time.monotonic())
        if wait > 0:
            raise RateLimited(wait)


def count_wrong_guess(conn: HTTPConnection) -> None:
    """A wrong token spends one token of the client's not-found bucket."""
    limits = getattr(conn.state, "limits", None)
    if limits is not None:
        limits.not_found.take(_peer(conn), time.monotonic())


def _peer(conn: HTTPConnection) -> str:
    return client_key(conn.client.host if conn.client else None)


def set_session_cookie(response: Response, conn: HTTPConnection, token: str, path: str) -> None:
    """Sign the browser in: the HMAC cookie, HttpOnly, SameSite=Strict, limited to ``path``."""
    response.set_cookie(
        COOKIE_NAME,
        cookie_value(token, time.time()),
        max_age=COOKIE_MAX_AGE_S,
        path=path,
        secure=conn.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )


def clear_session_cookie(response: Response, path: str) -> None:
    """Sign the browser out."""
    response.delete_cookie(COOKIE_NAME, path=path, httponly=True, samesite="strict")


# --- the cache scope (issue 7, S3) -------------------------------------------------------------


def auth_in_force(conn: HTTPConnection) -> bool:
    """Whether the host app authenticates requests (``AuthenticationMiddleware`` ran)."""
    return "user" in conn.scope


def request_scope(conn: HTTPConnection) -> str:
    """The cache scope of a request: ``user:<identity>`` for a signed-in user, else ``""``.

    Without host authentication every request shares the empty scope, as before.
    """
    if not auth_in_force(conn):
        return ""
    user = conn.scope["user"]
    if not getattr(user, "is_authenticated", False):
        return ""
    try:
        identity = str(user.identity)
    except NotImplementedError:  # a BaseUser subclass without identity: its display name
        identity = str(getattr(user, "display_name", ""))
    if len(identity) > MAX_SCOPE_IDENTITY or not identity.isprintable():
        identity = "sha256:" + hashlib.sha256(identity.encode("utf-8", "replace")).hexdigest()
    return f"user:{identity}"
