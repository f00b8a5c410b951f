"""The web server's settings: one frozen dataclass, built from arguments or the environment."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import Final

from broker.addresses import broker_url
from broker.security import ClientKeys, client_keys

DEFAULT_HOST: Final = "127.0.0.1"
DEFAULT_PORT: Final = 8000
DEFAULT_DATA_DIR: Final = "./.jobcast"
MAX_BODY_BYTES: Final = 1024 * 1024
WS_MAX_MESSAGE_BYTES: Final = 4096  # the browser never needs to send us anything
LOOPBACK_HOSTS: Final = ("127.0.0.1", "localhost", "::1")
MAX_RATE: Final = 1_000_000.0
MIN_DASHBOARD_TOKEN_CHARS: Final = 16


def _env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    if not value:
        return default
    number = float(value)
    if not 0.01 <= number <= 3600:
        raise ValueError(f"{name} must be within 0.01..3600 (got {number})")
    return number


def _env_rate(name: str, default: float) -> float:
    """A rate or burst from the environment: 0 (off) up to ``MAX_RATE``."""
    value = os.environ.get(name)
    if not value:
        return default
    number = float(value)
    if not 0 <= number <= MAX_RATE:  # also refuses nan
        raise ValueError(f"{name} must be within 0..{MAX_RATE:.0f} (got {number})")
    return number


def check_dashboard_token(token: str | None, what: str = "dashboard") -> str | None:
    """A token (dashboard, metrics), or None when unset; refuses one too short or odd.

    Raises:
        ValueError: fewer than ``MIN_DASHBOARD_TOKEN_CHARS`` characters, or not printable ASCII.
    """
    if not token:
        return None
    if (
        len(token) < MIN_DASHBOARD_TOKEN_CHARS
        or not (token.isascii() and token.isprintable())
        or " " in token
    ):
        raise ValueError(
            f"the {what} token must be at least {MIN_DASHBOARD_TOKEN_CHARS} printable ASCII "
            f"characters without spaces (got {len(token)} characters)"
        )
    return token


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """Everything the web app needs to know; immutable once the app starts.

    ``allowed_origins`` are extra origins (``https://example.org``) trusted for WebSocket
    upgrades and state-changing requests besides the server's own. ``allowed_hosts`` is the
    ``Host`` allowlist (DNS rebinding); empty means: derived from ``host``. ``curve`` holds
    the CURVE keys for a broker off loopback (default: from ``$JOBCAST_CURVE_*``).

    Per client address: ``submit_rate``/``submit_burst`` bound job-creating requests
    (``POST /api/jobs``, a ``/reports/...`` that submits); ``not_found_rate``/``_burst`` bound
    404s on id routes, after which those routes answer 429 (id guessing). 0 turns one off.

    ``dashboard_token`` turns on ``/dashboard`` (default ``$JOBCAST_DASHBOARD_TOKEN``; None:
    the dashboard is off). It is left out of ``repr``.
    """

    broker_url: str = field(default_factory=broker_url)
    data_dir: str = field(default_factory=lambda: os.environ.get("JOBCAST_DATA", DEFAULT_DATA_DIR))
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    allowed_origins: tuple[str, ...] = ()
    allowed_hosts: tuple[str, ...] = ()
    queue_size: int = 16
    send_timeout_s: float = field(default_factory=lambda: _env_float("JOBCAST_WS_SEND_S", 10.0))
    resync_s: float = field(default_factory=lambda: _env_float("JOBCAST_WS_RESYNC_S", 5.0))
    ws_ping_s: float = field(default_factory=lambda: _env_float("JOBCAST_WS_PING_S", 20.0))
    max_body_bytes: int = MAX_BODY_BYTES
    submit_rate: float = field(default_factory=lambda: _env_rate("JOBCAST_SUBMIT_RATE", 20.0))
    submit_burst: float = field(default_factory=lambda: _env_rate("JOBCAST_SUBMIT_BURST", 40.0))
    not_found_rate: float = field(default_factory=lambda: _env_rate("JOBCAST_NOT_FOUND_RATE", 10.0))
    not_found_burst: float = field(default_factory=lambda: _env_rate("JOBCAST_NOT_FOUND_BURST", 20.0))
    curve: ClientKeys | None = field(default_factory=client_keys)  # for an off-loopback broker
    dashboard_token: str | None = field(
        default_factory=lambda: os.environ.get("JOBCAST_DASHBOARD_TOKEN") or None, repr=False
    )

    metrics_token: str | None = field(
        default_factory=lambda: os.environ.get("JOBCAST_METRICS_TOKEN") or None, repr=False
    )

    def __post_init__(self) -> None:
        check_dashboard_token(self.dashboard_token)
        check_dashboard_token(self.metrics_token, "metrics")

    def with_port(self, port: int) -> Settings:
        """A copy with the real port (after binding port 0)."""
        return replace(self, port=port)

    @property
    def public_host(self) -> str:
        """The host part of the server's own URL (a wildcard bind is reached on loopback)."""
        if self.host in ("0.0.0.0", "", "::"):
            return "127.0.0.1"
        return f"[{self.host}]" if ":" in self.host else self.host

    @property
    def own_url(self) -> str:
        """The server's own base URL, e.g. ``http://127.0.0.1:8000``."""
        return f"http://{self.public_host}:{self.port}"

    def trusted_hosts(self) -> list[str]:
        """Host names accepted in the ``Host`` header."""
        if self.allowed_hosts:
            return list(self.allowed_hosts)
        if self.host in ("0.0.0.0", "", "::"):
            return ["*"]
        if self.host in LOOPBACK_HOSTS:
            return ["127.0.0.1", "localhost", "[::1]", "::1"]
        return [self.host]

    def origin_allowed(self, origin: str | None, host_header: str | None) -> bool:
        """Whether a request's ``Origin`` may open a WebSocket or change state.

        No ``Origin`` at all is a non-browser client (no ambient credentials to abuse);
        ``null`` and every foreign origin are refused.
        """
        if origin is None:
            return True
        if origin in self.allowed_origins or origin == self.own_url:
            return True
        return host_header is not None and origin in (
            f"http://{host_header}",
            f"https://{host_header}",
        )
