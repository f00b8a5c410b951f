"""Admission control per client address: job submissions and not-found id lookups.

``check_submit(conn)`` is called by the handlers that are about to create a job
(``POST /api/jobs``, and ``GET /reports/...`` on a cache miss: a GET with a side effect,
S10), and raises ``RateLimited`` (429 + ``Retry-After``) past the client's rate. The broker's
live-job cap (``QueueFull``, 503 + ``Retry-After``) stays the global bound behind it.

``NotFoundThrottle`` is an ASGI middleware on the id routes (``GET/DELETE /api/jobs/{id}``,
``/jobs/{id}``, ``/bars``, the events WebSocket): each 404 takes a token from the client's
not-found bucket, and while that bucket is empty those routes answer 429 before the id is
looked up, so guessing ids runs at ``not_found_rate`` at most. A found id costs nothing.

The client address is the socket peer (``proxy_headers`` is off): behind a reverse proxy
every client shares the proxy's bucket, so the proxy should do its own limiting.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Final

from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from web.errors import RateLimited, too_many_requests
from web.limits import RateLimiter, client_key
from web.settings import Settings

ID_ROUTE_PREFIXES: Final = ("/api/jobs/", "/jobs/")
ID_ROUTE_METHODS: Final = frozenset({"GET", "HEAD", "DELETE"})
NOT_FOUND_STARTS: Final = frozenset({"http.response.start", "websocket.http.response.start"})


@dataclass(frozen=True, slots=True)
class Limits:
    """The web process's limiters, shared by all requests (lifespan state ``limits``)."""

    submit: RateLimiter
    not_found: RateLimiter

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        """Limiters with the rates and bursts of ``settings``."""
        return cls(
            RateLimiter(settings.submit_rate, settings.submit_burst),
            RateLimiter(settings.not_found_rate, settings.not_found_burst),
        )


def _peer(scope: Scope) -> str:
    client = scope.get("client")
    return client_key(str(client[0]) if client else None)


def check_submit(conn: HTTPConnection) -> None:
    """Take one submission token for the request's client.

    Raises:
        RateLimited: the client is over its submission rate (nothing was submitted).
    """
    limits: Limits | None = getattr(conn.state, "limits", None)
    if limits is not None:
        wait = limits.submit.take(_peer(conn.scope), time.monotonic())
        if wait > 0:
            raise RateLimited(wait)


def is_id_route(scope: Scope) -> bool:
    """Whether the request looks up a job id given by the client."""
    path = str(scope.get("path", ""))
    root = str(scope.get("root_path", ""))
    if root and path.startswith(root):  # mounted: match on the path inside the app
        path = path[len(root) :]
    if scope["type"] == "websocket":
        return path.startswith("/api/jobs/")
    if scope["type"] != "http" or scope.get("method") not in ID_ROUTE_METHODS:
        return False
    return path == "/bars" or path.startswith(ID_ROUTE_PREFIXES)


class NotFoundThrottle:
    """429 on id routes for a client that has had too many 404s lately (see module doc)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        limits: Limits | None = scope.get("state", {}).get("limits")
        if limits is None or not limits.not_found.enabled or not is_id_route(scope):
            return await self.app(scope, receive, send)
        limiter, key = limits.not_found, _peer(scope)
        wait = limiter.wait_s(key, time.monotonic())
        if wait > 0:
            return await self._refuse(scope, receive, send, wait)

        async def count_not_found(message: Message) -> None:
            if message["type"] in NOT_FOUND_STARTS and message.get("status") == 404:
                limiter.take(key, time.monotonic())
            await send(message)

        await self.app(scope, receive, count_not_found)

    @staticmethod
    async def _refuse(scope: Scope, receive: Receive, send: Send, wait_s: float) -> None:
        """Answer 429; a WebSocket server without denial responses gets a 1008 close."""
        if scope["type"] == "websocket" and "websocket.http.response" not in scope.get("extensions", {}):
            await send({"type": "websocket.close", "code": 1008, "reason": "too many requests"})
            return
        await too_many_requests(wait_s)(scope, receive, send)
