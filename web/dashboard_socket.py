"""``WS /dashboard/events``: a dashboard's snapshot, then every job event and the figures.

Checks before ``accept()`` (a refusal is an HTTP response): ``Origin`` → 403, the dashboard
token (cookie or bearer) → 404 when the dashboard is off, 401 without a valid one, 429 after
too many wrong ones. Then the join: subscribe to the all-jobs topic first, then read the
snapshot (stats and job lists), so nothing falls between them; the browser drops events
whose ``seq`` it already has for that job. Each socket has its own sender and receiver,
as on the job page, so a stalled dashboard only stalls itself.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Final

from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from broker.errors import JobcastError
from web import auth
from web.dashboard_feed import DashboardHub, DashboardWatch
from web.dashboard_jobs import job_lists
from web.errors import TOO_MANY_REQUESTS, ApiError, RateLimited
from web.events import deny, receive_until_gone, send_message
from web.send_watchdog import SendWatchdog
from web.settings import Settings

logger = logging.getLogger(__name__)

QUIET_ENDINGS: Final = (WebSocketDisconnect, OSError, TimeoutError, asyncio.CancelledError)


async def snapshot(hub: DashboardHub) -> dict[str, Any]:
    """What a dashboard starts from: the figures and the running, queued and failed jobs."""
    stats = await hub.stats()
    return {"kind": "snapshot", "stats": stats, "jobs": await job_lists(hub.client)}


async def dashboard_events(websocket: WebSocket) -> None:
    """Stream the dashboard to one signed-in browser."""
    settings: Settings = websocket.state.settings
    if not settings.origin_allowed(websocket.headers.get("origin"), websocket.headers.get("host")):
        return await deny(websocket, 403, "origin not allowed")
    try:
        auth.require_dashboard(websocket)
    except ApiError as exc:
        return await deny(websocket, exc.status, exc.message)
    except RateLimited:
        return await deny(websocket, 429, TOO_MANY_REQUESTS)
    hub: DashboardHub = websocket.state.dashboard
    try:
        async with hub.join() as watch:
            first = await snapshot(hub)
            await websocket.accept()
            await _stream(websocket, hub, watch, first)
    except (TimeoutError, JobcastError) as exc:
        logger.warning("dashboard: events refused: %s", exc)
        if websocket.client_state == WebSocketState.CONNECTING:
            await deny(websocket, 503, "the broker did not answer")


async def _stream(
    websocket: WebSocket, hub: DashboardHub, watch: DashboardWatch, first: dict[str, Any]
) -> None:
    sender = asyncio.create_task(_send_all(websocket, hub, watch, first))
    receiver = asyncio.create_task(receive_until_gone(websocket))
    done, pending = await asyncio.wait({sender, receiver}, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    for task in done:
        exc = None if task.cancelled() else task.exception()
        if exc is not None and not isinstance(exc, QUIET_ENDINGS):
            logger.warning("dashboard: stream ended: %r", exc)


async def _send_all(
    websocket: WebSocket, hub: DashboardHub, watch: DashboardWatch, first: dict[str, Any]
) -> None:
    watchdog: SendWatchdog = websocket.state.watchdog
    with watchdog.guard() as guard:
        await send_message(websocket, first, guard)
        while True:
            await watch.wait()
            if watch.needs_resync:  # the browser fell too far behind: start it over
                watch.needs_resync = False
                watch.drain()
                await send_message(websocket, await snapshot(hub), guard)
                continue
            for message in watch.drain():
                await send_message(websocket, message, guard)


routes: Final = [WebSocketRoute("/dashboard/events", dashboard_events)]
