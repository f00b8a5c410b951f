"""Which addresses jobcast may send a request to on a user's behalf (pure, SSRF guard).

Shared by the ``feeds`` task (``workers.feeds``) and the web's ``callback_url`` delivery
(``web.callbacks``): only globally routable addresses, never loopback, private, link-local
(cloud metadata), multicast or reserved ones, unless an explicit allowlist says otherwise.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import SplitResult, urlsplit


def is_public_address(address: str) -> bool:
    """Whether an IP address is globally routable (not loopback, private, link-local...)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def is_ip_literal(host: str) -> bool:
    """Whether ``host`` is an IP address rather than a name."""
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


def split_http_url(url: object, max_chars: int) -> SplitResult:
    """Parse an absolute http(s) URL with a host and no credentials.

    Raises:
        ValueError: the rule broken, worded to follow the caller's name for the URL.
    """
    if not isinstance(url, str) or not 0 < len(url) <= max_chars:
        raise ValueError(f"must be a string of 1..{max_chars} characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"is not a valid URL: {url[:100]!r} ({exc})") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"must be an http or https URL: only http and https are allowed (got {url[:100]!r})")
    if not parts.hostname or port == 0:
        raise ValueError(f"needs a host: it must be an http or https URL with a host (got {url[:100]!r})")
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"must not carry credentials (got {parts.hostname!r})")
    return parts
