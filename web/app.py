"""``create_app(settings)``: the Starlette app, its lifespan and its security headers.

The lifespan owns the zmq context, the broker client, the rate limiters and the relay
(whose reader runs in an ``asyncio.TaskGroup``) and yields them as request state. To mount
jobcast inside your own Starlette/FastAPI app, give your app
``lifespan=jobcast_lifespan(settings)`` (mounted apps' lifespans do not run) and
``Mount("/jobcast", create_app(settings))``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, Final

import zmq
import zmq.asyncio
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from broker.addresses import endpoints
from broker.client import AsyncClient
from web import api, dashboard, events, groups, metrics, pages
from web.callbacks import CallbackPolicy, CallbackSender, open_callback_store
from web.dashboard_feed import DashboardHub
from web.errors import exception_handlers
from web.fast_path import LocalResults
from web.relay import Relay
from web.send_watchdog import SendWatchdog
from web.settings import Settings
from web.throttle import Limits, NotFoundThrottle

logger = logging.getLogger(__name__)

PACKAGE_DIR: Final = Path(__file__).parent
SECURITY_HEADERS: Final = [
    (b"content-security-policy", b"default-src 'self'; frame-ancestors 'none'; base-uri 'none'"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-content-type-options", b"nosniff"),
]
CACHEABLE_PREFIXES: Final = ("/static/", "/demo/")
CONTEXT_TERM_TIMEOUT_S: Final = 5.0


class SecurityHeaders:
    """Adds CSP, Referrer-Policy and nosniff to every response; ``no-store`` to dynamic ones.

    Job ids are capabilities: pages and API answers that carry one must not be cached or
    leak through the Referer header.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        cacheable = str(scope.get("path", "")).startswith(CACHEABLE_PREFIXES)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {name.lower() for name, _ in headers}
                headers.extend(h for h in SECURITY_HEADERS if h[0] not in names)
                if not cacheable and b"cache-control" not in names:
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def jobcast_lifespan(
    settings: Settings,
) -> Callable[[Any], contextlib.AbstractAsyncContextManager[dict[str, Any]]]:
    """A lifespan that owns the zmq context, the broker client and the relay task."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[dict[str, Any]]:
        context = zmq.asyncio.Context()
        events_url = endpoints(settings.broker_url).events_out
        relay = Relay(context, events_url, settings.queue_size, curve=settings.curve)
        client = AsyncClient(settings.broker_url, context=context, curve=settings.curve)
        results = LocalResults(settings.data_dir)  # read-only: the cache-hit fast path, if here
        policy = CallbackPolicy.from_env()
        callbacks = CallbackSender(client, policy, open_callback_store(settings.data_dir, policy.lease_s))
        watchdog = SendWatchdog(settings.send_timeout_s)
        try:
            async with asyncio.TaskGroup() as group:
                reader = group.create_task(relay.run(), name="jobcast-relay")
                stalls = group.create_task(watchdog.run(), name="jobcast-send-watchdog")
                quiet = group.create_task(relay.sweep_quiet(settings.resync_s), name="jobcast-quiet-sweep")
                hub = DashboardHub(relay, client)  # shared by this process's dashboard sockets
                callbacks.start()
                try:
                    limits = Limits.from_settings(settings)
                    yield {"settings": settings, "client": client, "relay": relay, "results": results,
                           "limits": limits, "callbacks": callbacks, "dashboard": hub,
                           "metrics": metrics.MetricsExporter(), "watchdog": watchdog}  # fmt: skip
                finally:
                    reader.cancel()
                    stalls.cancel()
                    quiet.cancel()
                    await hub.close()
        finally:
            await callbacks.aclose()
            await client.aclose()
            results.close()
            relay.close()
            await _term(context)

    return lifespan


async def _term(context: zmq.asyncio.Context) -> None:
    """Terminate the context in a thread, bounded (a leaked socket must not hang shutdown)."""
    try:
        await asyncio.wait_for(asyncio.to_thread(context.term), CONTEXT_TERM_TIMEOUT_S)
    except TimeoutError:
        logger.error("zmq context did not terminate within %s s", CONTEXT_TERM_TIMEOUT_S)


def create_app(settings: Settings | None = None) -> Starlette:
    """The jobcast web app: API, WebSocket events, pages, static files and demo feeds."""
    settings = settings or Settings()
    routes = [
        *pages.routes,  # first: a popular cached report is the hottest request (routes match in order)
        *api.routes,
        *events.routes,
        *groups.routes,
        *metrics.routes,
        *dashboard.routes,
        Mount("/static", StaticFiles(directory=PACKAGE_DIR / "static"), name="static"),
        Mount("/demo/feeds", StaticFiles(directory=PACKAGE_DIR / "demo_feeds"), name="feeds"),
    ]
    middleware = [
        Middleware(SecurityHeaders),
        Middleware(TrustedHostMiddleware, allowed_hosts=settings.trusted_hosts()),
        Middleware(NotFoundThrottle),
    ]
    return Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers=exception_handlers(),
        lifespan=jobcast_lifespan(settings),
    )
