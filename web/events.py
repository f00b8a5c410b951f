"""``WS /api/jobs/{id}/events?after=SEQ``: a job's snapshot, then its events, then close.

Order of checks, all before ``accept()`` (a refusal is an HTTP response, not a socket):
``Origin`` (CORS does not cover WebSockets) → 403; ``after`` → 400; the id's shape and its
existence → 404. Only then does the relay subscribe (ZeroMQ subscriptions are prefix
matches, so an unchecked id could watch other jobs). The join is the Clone pattern:
subscribe, fetch the snapshot, drop buffered events it already covers.

Each connection's handler sends (queue → socket, its sends bounded by the process's
``SendWatchdog``) while one task reads, only to notice the browser leaving, which ends the
watch; a stalled browser only stalls itself. An idle connection keeps no more than that:
its watch, its cursor and the one task (the snapshot it joined with is let go).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any, Final

from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from broker.errors import JobcastError, UnknownJob
from broker.jobs import is_job_id
from web.errors import NO_SUCH_JOB, error_response
from web.relay import Cursor, Message, Watch, WatchEnded, clone_join, is_final, snapshot_message
from web.send_watchdog import SendGuard, SendWatchdog
from web.settings import Settings

logger = logging.getLogger(__name__)

MAX_AFTER: Final = 2**53


def parse_after(raw: str | None) -> int | None:
    """The ``after`` query value: a non-negative integer, or None when absent.

    Raises:
        ValueError: anything else (``-1``, ``1e309``, ``abc``, 20 digits).
    """
    if raw is None:
        return None
    if not raw.isascii() or not raw.isdigit() or len(raw) > 16 or int(raw) > MAX_AFTER:
        raise ValueError(f"after must be a non-negative integer (got {raw[:32]!r})")
    return int(raw)


async def deny(websocket: WebSocket, status: int, message: str) -> None:
    """Refuse the upgrade with an HTTP error (403 when the server cannot send a body)."""
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(error_response(status, message))
    else:
        await websocket.close(code=1008)


async def job_events(websocket: WebSocket) -> None:
    """Stream one job's progress to a browser."""
    settings: Settings = websocket.state.settings
    client = websocket.state.client
    if not settings.origin_allowed(websocket.headers.get("origin"), websocket.headers.get("host")):
        return await deny(websocket, 403, "origin not allowed")
    job_id = str(websocket.path_params["job_id"])
    try:
        after = parse_after(websocket.query_params.get("after"))
    except ValueError as exc:
        return await deny(websocket, 400, str(exc))
    try:
        if not is_job_id(job_id):
            raise UnknownJob(job_id)
        await client.status(job_id)  # exists: only now may the relay subscribe
        async with websocket.state.relay.watch(job_id) as watch:
            snapshot = snapshot_message(await client.status(job_id))
            await websocket.accept()
            joined = clone_join(snapshot, watch.drain(), after)
            cursor = Cursor.after_join(snapshot, joined, after)
            del snapshot  # a watcher that then waits for hours keeps only its cursor
            await _stream(websocket, watch, joined, cursor)
    except UnknownJob:
        if websocket.client_state == WebSocketState.CONNECTING:
            await deny(websocket, 404, NO_SUCH_JOB)
    except (TimeoutError, JobcastError) as exc:
        logger.warning("job %s: events refused: %s", job_id[:32], exc)
        if websocket.client_state == WebSocketState.CONNECTING:
            await deny(websocket, 503, "the broker did not answer")


async def _stream(websocket: WebSocket, watch: Watch, joined: list[dict[str, Any]], cursor: Cursor) -> None:
    """Send the join messages, then the live stream, until the job ends or the browser goes."""
    receiver = asyncio.create_task(_receive_then_end(websocket, watch))
    try:
        await _send_all(websocket, watch, joined, cursor)
    except (WatchEnded, WebSocketDisconnect, OSError, TimeoutError):
        pass  # the browser went, or its sends stalled past the watchdog's bound
    except Exception as exc:  # one connection's failure is logged, not raised
        logger.warning("job %s: stream ended: %r", watch.job_id, exc)
    finally:
        receiver.cancel()
        (outcome,) = await asyncio.gather(receiver, return_exceptions=True)
        if isinstance(outcome, Exception) and not isinstance(outcome, WebSocketDisconnect | OSError):
            logger.warning("job %s: reading the socket failed: %r", watch.job_id, outcome)


async def _receive_then_end(websocket: WebSocket, watch: Watch) -> None:
    try:
        await receive_until_gone(websocket)
    finally:
        watch.end()  # the sender stops at its next wait


async def _send_all(websocket: WebSocket, watch: Watch, joined: list[dict[str, Any]], cursor: Cursor) -> None:
    watchdog: SendWatchdog = websocket.state.watchdog
    with watchdog.guard() as guard:
        ended = any(is_final(message) for message in joined)
        while joined:  # each one let go once sent: an idle watcher keeps none of them
            await send_message(websocket, joined.pop(0), guard)
        if ended:
            return await websocket.close(code=1000)
        while True:
            update = await _next_message(websocket, watch)
            if not cursor.admit(update):
                continue
            await send_message(websocket, update, guard)
            if is_final(update):
                return await websocket.close(code=1000)


async def _next_message(websocket: WebSocket, watch: Watch) -> dict[str, Any]:
    """The next queued event; a fresh snapshot after a seq gap or a quiet spell.

    PUB drops under load, so a final state must never depend on a PUB message arriving:
    the relay wakes a watch that has been quiet for ``resync_s`` (``Relay.sweep_quiet``).
    """
    if not watch.needs_resync:
        queued = await watch.get()
        if queued is not None:
            return queued
    watch.needs_resync = False
    try:
        return snapshot_message(await websocket.state.client.status(watch.job_id))
    except UnknownJob:
        await websocket.close(code=1008, reason="job expired")
        raise


async def send_message(websocket: WebSocket, message: dict[str, Any], guard: SendGuard) -> None:
    """Send one message as JSON text (encoded once for a relay ``Message``), watched by ``guard``."""
    text = message.text() if isinstance(message, Message) else json.dumps(message, separators=(",", ":"))
    guard.began = time.monotonic()
    try:
        await websocket.send_text(text)
    finally:
        guard.began = 0.0


async def receive_until_gone(websocket: WebSocket) -> None:
    """Read (and ignore) what the browser sends, until it disconnects."""
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return


routes: Final = [WebSocketRoute("/api/jobs/{job_id}/events", job_events)]
