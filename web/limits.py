"""Token buckets per client address (pure: the caller passes ``now``; no I/O, no clock).

A ``TokenBucket`` holds up to ``burst`` tokens and gains ``rate`` per second. A
``RateLimiter`` keeps one bucket per client key, at most ``max_clients`` of them: the least
recently seen client is forgotten first, which only ever hands it a full bucket again, so
memory is bounded whatever the number of addresses. IPv6 clients are keyed by their /64
(one host usually owns the whole prefix and could otherwise rotate addresses for free).
"""

from __future__ import annotations

import ipaddress
import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Final

DEFAULT_MAX_CLIENTS: Final = 10_000
IPV6_PREFIX: Final = 64


@dataclass(slots=True)
class TokenBucket:
    """``tokens`` out of ``burst``, refilled at ``rate`` per second since ``stamp``."""

    rate: float
    burst: float
    tokens: float
    stamp: float

    def refill(self, now: float) -> None:
        """Add the tokens earned since the last call (a clock going backwards earns none)."""
        if now > self.stamp:
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now

    def wait_s(self, now: float) -> float:
        """Seconds until one whole token is available (0.0: one is available now)."""
        self.refill(now)
        return 0.0 if self.tokens >= 1.0 else (1.0 - self.tokens) / self.rate

    def take(self, now: float) -> float:
        """Take one token: 0.0 when taken, else the seconds to wait (nothing is taken)."""
        wait = self.wait_s(now)
        if wait == 0.0:
            self.tokens -= 1.0
        return wait


class RateLimiter:
    """One ``TokenBucket`` per client key; ``rate`` or ``burst`` 0 disables the limiter.

    Raises:
        ValueError: a negative or non-finite rate or burst, or fewer than one tracked client.
    """

    def __init__(self, rate: float, burst: float, max_clients: int = DEFAULT_MAX_CLIENTS) -> None:
        for name, value in (("rate", rate), ("burst", burst)):
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0 (got {value})")
        if max_clients < 1:
            raise ValueError(f"max_clients must be at least 1 (got {max_clients})")
        self.rate = rate
        self.burst = max(burst, 1.0) if rate > 0 and burst > 0 else 0.0
        self.max_clients = max_clients
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    @property
    def enabled(self) -> bool:
        """Whether the limiter limits anything."""
        return self.rate > 0 and self.burst > 0

    def __len__(self) -> int:
        return len(self._buckets)

    def __contains__(self, key: object) -> bool:
        return key in self._buckets

    def _bucket(self, key: str, now: float) -> TokenBucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = TokenBucket(self.rate, self.burst, self.burst, now)
            self._buckets[key] = bucket
            while len(self._buckets) > self.max_clients:
                self._buckets.popitem(last=False)  # least recently seen
        else:
            self._buckets.move_to_end(key)
        return bucket

    def wait_s(self, key: str, now: float) -> float:
        """Seconds until ``key`` may act again, without taking a token (0.0: it may now)."""
        if not self.enabled:
            return 0.0
        bucket = self._buckets.get(key)
        return 0.0 if bucket is None else bucket.wait_s(now)

    def take(self, key: str, now: float) -> float:
        """Take a token for ``key``: 0.0 when allowed, else the seconds until a token."""
        if not self.enabled:
            return 0.0
        return self._bucket(key, now).take(now)


def client_key(host: str | None) -> str:
    """The key for a client address: the address itself, an IPv6 address's /64 network."""
    if not host:
        return "unknown"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host  # a unix socket path or a test client's name
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, IPV6_PREFIX), strict=False))
    return str(address)
