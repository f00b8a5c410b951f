"""The ``feeds`` demo task: fetch RSS/Atom feeds safely and list their items.

feedparser given a string may read local files or fetch URLs itself, so this task fetches
with its own small HTTP client and hands feedparser the *bytes*. The client:

- allows only ``http`` and ``https``, with at most ``MAX_REDIRECTS`` redirects, each one
  checked again like the first URL;
- resolves the host once, refuses loopback, private, link-local (cloud metadata) and other
  non-global addresses, and connects to the address it checked (no DNS rebinding);
- bounds the connect time, the total time and the size of the body.

URLs under a prefix listed in ``$JOBCAST_FEEDS_ALLOW`` (space- or comma-separated, such as
the demo server's ``http://127.0.0.1:8000/demo/feeds/``) may use any address.
"""

from __future__ import annotations

import http.client
import io
import os
import posixpath
import socket
import ssl
import time
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import SplitResult, unquote, urljoin, urlsplit

import feedparser  # type: ignore[import-untyped]

from broker.errors import BadArguments
from broker.outbound import is_public_address, split_http_url
from workers import Job, task

ALLOW_ENV: Final = "JOBCAST_FEEDS_ALLOW"
MAX_FEEDS: Final = 20
MAX_URL_CHARS: Final = 2048
MAX_ITEMS_PER_FEED: Final = 200
MAX_TEXT_CHARS: Final = 1000
REDIRECT_STATUSES: Final = frozenset({301, 302, 303, 307, 308})
CHUNK_BYTES: Final = 64 * 1024
REQUEST_HEADERS: Final = {
    "User-Agent": "jobcast-feeds/0.1",
    "Accept": "application/rss+xml, application/atom+xml, application/xml;q=0.9, */*;q=0.1",
    "Accept-Encoding": "identity",
}


class FeedRefused(BadArguments):
    """A URL this task will not fetch (scheme, address, size or redirect rule); no retry."""


class FeedFetchError(Exception):
    """A feed could not be fetched or parsed (network trouble: worth a retry)."""


@dataclass(frozen=True, slots=True)
class Limits:
    """How much one fetch may cost."""

    connect_timeout_s: float = 5.0
    total_timeout_s: float = 30.0
    max_bytes: int = 5 * 1024 * 1024
    max_redirects: int = 3


def allowlist_from_env() -> tuple[str, ...]:
    """The URL prefixes from ``$JOBCAST_FEEDS_ALLOW`` that may reach any address."""
    raw = os.environ.get(ALLOW_ENV, "")
    return tuple(item for item in raw.replace(",", " ").split() if item)


def check_url(url: object) -> SplitResult:
    """Parse a feed URL, refusing anything but an absolute http(s) URL with a host.

    Raises:
        FeedRefused: the rule broken, with the value.
    """
    try:
        parts = split_http_url(url, MAX_URL_CHARS)
    except ValueError as exc:
        raise FeedRefused(f"a feed URL {exc}") from None
    return parts


def is_allowlisted(parts: SplitResult, allowlist: tuple[str, ...]) -> bool:
    """Whether a URL lies under one of the prefixes (same scheme, host, port; path below)."""
    path = posixpath.normpath(unquote(parts.path) or "/")  # the server decodes %2e%2e too
    for prefix in allowlist:
        allowed = urlsplit(prefix)
        same_origin = (allowed.scheme, allowed.hostname, _port(allowed)) == (
            parts.scheme, parts.hostname, _port(parts))  # fmt: skip
        base = allowed.path or "/"
        if same_origin and (path + "/").startswith(base if base.endswith("/") else base + "/"):
            return True
    return False


def _port(parts: SplitResult) -> int:
    return parts.port or (443 if parts.scheme == "https" else 80)


def resolve(parts: SplitResult, allowlisted: bool) -> str:
    """The address to connect to: the first one, after checking every one the host has.

    Raises:
        FeedRefused: the host resolves to a non-public address and is not allowlisted.
        FeedFetchError: the host does not resolve.
    """
    host = parts.hostname or ""
    try:
        infos = socket.getaddrinfo(host, _port(parts), type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise FeedFetchError(f"cannot resolve {host!r}: {exc}") from None
    addresses = [str(info[4][0]) for info in infos]
    if not allowlisted:
        for address in addresses:
            if not is_public_address(address):
                raise FeedRefused(f"refusing to fetch {host!r}: it resolves to {address}, "
                                  "which is not a public address")  # fmt: skip
    return addresses[0]


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """An HTTP connection to an address checked beforehand, not re-resolved."""

    def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self.address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self.address, self.port), self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """An HTTPS connection to a checked address; the certificate is checked for the host."""

    def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self.address = address

    def connect(self) -> None:
        sock = socket.create_connection((self.address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)  # type: ignore[attr-defined]


def fetch(url: str, allowlist: tuple[str, ...] = (), limits: Limits = Limits()) -> bytes:
    """GET a feed's bytes, following at most ``limits.max_redirects`` checked redirects.

    Raises:
        FeedRefused: a URL, an address, a redirect count or a size this task refuses.
        FeedFetchError: a network error, a timeout or an HTTP error status.
    """
    deadline = time.monotonic() + limits.total_timeout_s
    current = url
    for _ in range(limits.max_redirects + 1):
        parts = check_url(current)
        address = resolve(parts, is_allowlisted(parts, allowlist))
        status, location, body = _get(parts, address, deadline, limits)
        if status not in REDIRECT_STATUSES:
            return body
        current = urljoin(current, location)
    raise FeedRefused(f"more than {limits.max_redirects} redirects from {url[:100]!r}")


def _get(parts: SplitResult, address: str, deadline: float,
         limits: Limits) -> tuple[int, str, bytes]:  # fmt: skip
    kind = _PinnedHTTPSConnection if parts.scheme == "https" else _PinnedHTTPConnection
    timeout_s = min(limits.connect_timeout_s, _remaining(deadline, parts))
    conn = kind(parts.hostname or "", _port(parts), address, timeout_s)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        conn.request("GET", target, headers=REQUEST_HEADERS)
        sock = conn.sock  # kept: getresponse() may drop conn.sock while the body is unread
        _set_timeout(sock, deadline, parts)
        response = conn.getresponse()
        if response.status in REDIRECT_STATUSES:
            return response.status, response.getheader("Location") or "", b""
        if response.status != 200:
            raise FeedFetchError(f"HTTP {response.status} from {parts.geturl()[:100]}")
        return 200, "", _read_bounded(sock, response, deadline, parts, limits.max_bytes)
    except (OSError, http.client.HTTPException) as exc:
        raise FeedFetchError(f"cannot fetch {parts.geturl()[:100]}: {exc or type(exc).__name__}") from None
    finally:
        conn.close()


def _read_bounded(sock: socket.socket | None, response: http.client.HTTPResponse,
                  deadline: float, parts: SplitResult, max_bytes: int) -> bytes:  # fmt: skip
    declared = response.getheader("Content-Length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise FeedRefused(f"feed larger than {max_bytes} bytes (declared {declared})")
    body = io.BytesIO()
    while chunk := response.read1(CHUNK_BYTES):
        if body.tell() + len(chunk) > max_bytes:
            raise FeedRefused(f"feed larger than {max_bytes} bytes: {parts.geturl()[:100]}")
        body.write(chunk)
        _set_timeout(sock, deadline, parts)
    return body.getvalue()


def _remaining(deadline: float, parts: SplitResult) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise FeedFetchError(f"timed out fetching {parts.geturl()[:100]}")
    return left


def _set_timeout(sock: socket.socket | None, deadline: float, parts: SplitResult) -> None:
    left = _remaining(deadline, parts)  # raises once the total time is spent
    if sock is not None:
        sock.settimeout(left)


def parse_items(url: str, body: bytes) -> list[dict[str, str]]:
    """The items of one feed document (given as bytes, never as a URL or a path)."""
    parsed = feedparser.parse(io.BytesIO(body))
    if not parsed.get("version"):  # feedparser names every format it recognised
        raise FeedFetchError(f"not an RSS or Atom feed: {url[:100]}")
    name = _text(parsed.feed.get("title")) or url
    return [
        {"feed": name, "title": _text(entry.get("title")), "link": _text(entry.get("link"))}
        for entry in parsed.entries[:MAX_ITEMS_PER_FEED]
    ]


def _text(value: Any) -> str:
    return value[:MAX_TEXT_CHARS] if isinstance(value, str) else ""


def feed_urls(urls: object) -> list[str]:
    """The task's ``urls`` argument as a checked list (a single string is one URL)."""
    items = [urls] if isinstance(urls, str) else urls
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_FEEDS:
        raise FeedRefused(f"urls must be a list of 1..{MAX_FEEDS} feed URLs")
    for item in items:
        check_url(item)
    return [str(item) for item in items]


@task("feeds", ttl=3600, timeout=120, max_attempts=2)
def feeds(job: Job, urls: list[str] | str) -> list[dict[str, str]]:
    """Fetch each feed (one progress step per feed) and list its items' titles and links."""
    checked = feed_urls(urls)
    allowlist = allowlist_from_env()
    items: list[dict[str, str]] = []
    job.progress(0, len(checked), f"Fetching {len(checked)} feeds")
    for number, url in enumerate(checked, 1):
        items.extend(parse_items(url, fetch(url, allowlist)))
        job.progress(number, len(checked), f"Fetched {url[:200]}")
    return items
