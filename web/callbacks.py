"""``callback_url``: POST a job's final view to a URL the submitter gave, from the web process.

Who delivers: the web process that took ``POST /api/jobs {"callback_url": ...}``. It waits
for the job's end over its broker connection (``AsyncClient.wait``, which survives broker
restarts) and POSTs the final view as JSON, retrying a failed delivery (network error or a
non-2xx answer) ``attempts`` times with doubling back-off. The callback is kept on disk
(``web.callback_store``) before the submission is answered, so if that web process stops or
dies first, the next one that shares the data directory delivers it (at least once).

Not an SSRF gadget: only ``http``/``https`` URLs with a host and no credentials; the host is
resolved at delivery, every address it has must be public (``broker.outbound``) and the
request goes to the address that was checked (no DNS rebinding); no redirects are followed.
Hosts listed in ``$JOBCAST_CALLBACK_ALLOW_HOSTS`` (space- or comma-separated host names or
addresses) may resolve anywhere, e.g. an internal receiver. Bounded: a per-request timeout,
a body of at most ``max_body_bytes`` (a larger result is left out, ``result_omitted``), and
at most ``max_pending`` undelivered callbacks (past that, submissions with a callback get 503).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import sqlite3
import ssl
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import SplitResult

from broker.client import AsyncClient
from broker.errors import BadArguments
from broker.outbound import is_ip_literal, is_public_address, split_http_url
from web.callback_store import LEASE_S, CallbackStore, StoredCallback
from web.errors import ApiError

logger = logging.getLogger(__name__)

ALLOW_ENV: Final = "JOBCAST_CALLBACK_ALLOW_HOSTS"
MAX_URL_CHARS: Final = 2048
MAX_STATUS_LINE_BYTES: Final = 8192
USER_AGENT: Final = "jobcast-callback/0.1"


class CallbackRefused(Exception):
    """A callback target this process will not send to (no retry)."""


@dataclass(frozen=True, slots=True)
class CallbackPolicy:
    """Where callbacks may go and what they may cost."""

    allow_hosts: frozenset[str] = frozenset()
    max_pending: int = 1000
    attempts: int = 4
    backoff_s: float = 1.0
    timeout_s: float = 10.0
    max_body_bytes: int = 1024 * 1024
    lease_s: float = LEASE_S  # a dead process's stored callbacks are taken over after this

    @classmethod
    def from_env(cls) -> CallbackPolicy:
        """The policy from ``$JOBCAST_CALLBACK_*`` (ALLOW_HOSTS, MAX_PENDING, BACKOFF_S, LEASE_S)."""
        hosts = os.environ.get(ALLOW_ENV, "").replace(",", " ").split()
        return cls(
            allow_hosts=frozenset(host.lower().strip("[]") for host in hosts),
            max_pending=int(os.environ.get("JOBCAST_CALLBACK_MAX_PENDING", "1000")),
            backoff_s=float(os.environ.get("JOBCAST_CALLBACK_BACKOFF_S", "1.0")),
            lease_s=float(os.environ.get("JOBCAST_CALLBACK_LEASE_S", str(LEASE_S))),
        )

    def allowlisted(self, host: str) -> bool:
        """Whether ``host`` may resolve to any address."""
        return host.lower() in self.allow_hosts


def check_callback_url(url: Any, policy: CallbackPolicy) -> SplitResult:
    """Parse a callback URL; refuse what can never be sent to (checked again at delivery).

    Raises:
        BadArguments: not an absolute http(s) URL with a host, credentials in it, or a
            literal address that is not public (and not allowlisted).
    """
    try:
        parts = split_http_url(url, MAX_URL_CHARS)
    except ValueError as exc:
        raise BadArguments(f"callback_url {exc}") from None
    host = parts.hostname or ""  # split_http_url refused a URL without one
    if is_ip_literal(host) and not policy.allowlisted(host) and not is_public_address(host):
        raise BadArguments(f"callback_url must not point at a non-public address (got {host})")
    return parts


def callback_body(view: dict[str, Any], max_bytes: int) -> bytes:
    """The JSON body for a final view; the result is left out if the body would be too big."""
    body = json.dumps(view, separators=(",", ":")).encode()
    if len(body) <= max_bytes:
        return body
    trimmed = {key: value for key, value in view.items() if key != "result"}
    return json.dumps({**trimmed, "result_omitted": True}, separators=(",", ":")).encode()


async def resolve_checked(parts: SplitResult, policy: CallbackPolicy) -> str:
    """The address to connect to, after checking every address the host resolves to."""
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise OSError(f"cannot resolve {host!r}: {exc}") from None
    addresses = [str(info[4][0]) for info in infos]
    if not policy.allowlisted(host):
        for address in addresses:
            if not is_public_address(address):
                raise CallbackRefused(f"{host!r} resolves to {address}, which is not a public address")
    return addresses[0]


async def post_json(parts: SplitResult, address: str, body: bytes, timeout_s: float) -> int:
    """POST ``body`` to the checked address (TLS checked for the host); the status code."""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    tls = ssl.create_default_context() if parts.scheme == "https" else None
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    head = (
        f"POST {target} HTTP/1.1\r\nHost: {parts.netloc}\r\nUser-Agent: {USER_AGENT}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    async with asyncio.timeout(timeout_s):
        reader, writer = await asyncio.open_connection(
            address, port, ssl=tls, server_hostname=parts.hostname if tls else None,
            limit=MAX_STATUS_LINE_BYTES,
        )  # fmt: skip
        try:
            writer.write(head.encode("latin-1") + body)
            await writer.drain()
            status_line = await reader.readline()
        finally:
            writer.close()
    fields = status_line.split()
    if len(fields) < 2 or not fields[0].startswith(b"HTTP/") or not fields[1].isdigit():
        raise OSError(f"not an HTTP answer: {status_line[:80]!r}")
    return int(fields[1])


class CallbackSender:
    """The callbacks this web process delivers: waits, POSTs, retries; bounded.

    With a ``CallbackStore`` each callback is on disk before the submission is answered,
    and the ones a stopped or dead web process left are taken over (``start``).
    """

    def __init__(
        self, client: AsyncClient, policy: CallbackPolicy, store: CallbackStore | None = None
    ) -> None:
        self.client = client
        self.policy = policy
        self.store = store
        self.pending: set[asyncio.Task[None]] = set()
        self._rows: set[int] = set()  # stored rows this process delivers now
        self._leases: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Take over the stored callbacks nobody holds, now and every third of a lease."""
        if self.store is not None:
            self._leases = asyncio.get_running_loop().create_task(self._keep_leases(self.store))

    def check_capacity(self) -> None:
        """Refuse (503) a new callback while ``max_pending`` wait for delivery."""
        if len(self.pending) >= self.policy.max_pending:
            raise ApiError(503, f"too many pending callbacks ({self.policy.max_pending}); retry later")

    def schedule(self, job_id: str, parts: SplitResult) -> None:
        """Deliver the job's final view to ``parts`` once it ends (kept on disk meanwhile)."""
        row = None
        if self.store is not None:
            try:
                row = self.store.add(job_id, parts.geturl()).row
            except sqlite3.Error as exc:
                logger.error("job %s: callback kept in this process only (%s)", job_id, exc)
        self._start_delivery(job_id, parts, row)

    def _start_delivery(self, job_id: str, parts: SplitResult, row: int | None) -> None:
        task = asyncio.get_running_loop().create_task(self._deliver(job_id, parts, row))
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)
        if row is not None:
            self._rows.add(row)

    async def _keep_leases(self, store: CallbackStore) -> None:
        while True:
            try:
                store.renew()
                for stored in store.claim(self.policy.max_pending - len(self.pending)):
                    self._take_over(stored)
            except sqlite3.Error as exc:
                logger.warning("callbacks file %s: %s", store.path, exc)
            await asyncio.sleep(store.lease_s / 3)

    def _take_over(self, stored: StoredCallback) -> None:
        if stored.row in self._rows:
            return  # this process delivers it already (its lease had run out meanwhile)
        try:
            parts = check_callback_url(stored.url, self.policy)
        except BadArguments as exc:
            logger.warning("job %s: stored callback dropped: %s", stored.job_id, exc)
            self._forget(stored.row)
            return
        logger.info("job %s: callback to %s taken over", stored.job_id, parts.hostname)
        self._start_delivery(stored.job_id, parts, stored.row)

    async def _deliver(self, job_id: str, parts: SplitResult, row: int | None) -> None:
        await self._send(job_id, parts)
        self._forget(row)  # delivered or given up; a cancelled delivery stays for the next process

    async def _send(self, job_id: str, parts: SplitResult) -> None:
        try:
            view = await self.client.wait(job_id)
        except Exception:
            logger.exception("job %s: callback dropped: its end could not be awaited", job_id)
            return
        body = callback_body(view, self.policy.max_body_bytes)
        for attempt in range(1, self.policy.attempts + 1):
            if await self._attempt(job_id, parts, body, attempt):
                return
            if attempt < self.policy.attempts:
                await asyncio.sleep(self.policy.backoff_s * 2 ** (attempt - 1))
        logger.warning("job %s: callback to %s given up after %s attempts",
                       job_id, parts.hostname, self.policy.attempts)  # fmt: skip

    def _forget(self, row: int | None) -> None:
        if row is None or self.store is None:
            return
        self._rows.discard(row)
        try:
            self.store.remove(row)
        except sqlite3.Error as exc:  # it may be sent again by the next process: at least once
            logger.warning("callbacks file %s: row %s not removed (%s)", self.store.path, row, exc)

    async def _attempt(self, job_id: str, parts: SplitResult, body: bytes, attempt: int) -> bool:
        """One delivery attempt; True when done (delivered, or refused for good)."""
        try:
            address = await resolve_checked(parts, self.policy)
            status = await post_json(parts, address, body, self.policy.timeout_s)
        except CallbackRefused as exc:
            logger.warning("job %s: callback refused: %s", job_id, exc)
            return True
        except (OSError, TimeoutError, ValueError) as exc:
            logger.info("job %s: callback attempt %s to %s failed: %s", job_id, attempt, parts.hostname, exc)
            return False
        if 200 <= status < 300:
            logger.info("job %s: callback delivered to %s (HTTP %s)", job_id, parts.hostname, status)
            return True
        logger.info("job %s: callback attempt %s to %s got HTTP %s", job_id, attempt, parts.hostname, status)
        return False

    async def aclose(self) -> None:
        """Stop delivering: the stored callbacks are released to the next web process, the
        others (no store) are dropped."""
        undelivered = len(self.pending)
        tasks = [*self.pending, *([self._leases] if self._leases is not None else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.store is None:
            if undelivered:
                logger.warning("dropping %s undelivered callbacks at shutdown", undelivered)
            return
        try:
            self.store.release()
        except sqlite3.Error as exc:
            logger.warning("callbacks file %s: leases not released (%s)", self.store.path, exc)
        if self._rows:
            logger.warning("%s undelivered callbacks left to the next web process", len(self._rows))
        self.store.close()


def open_callback_store(data_dir: str, lease_s: float) -> CallbackStore | None:
    """The data directory's callback file, or None (callbacks then live in this process only)."""
    try:
        return CallbackStore(data_dir, lease_s=lease_s)
    except (sqlite3.Error, OSError) as exc:
        logger.warning("no callbacks file in %s (%s): a callback is lost if this process stops first",
                       data_dir, exc)  # fmt: skip
        return None
