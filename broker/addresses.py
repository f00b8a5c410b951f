"""Derive the broker's four endpoints from the one base URL users configure.

tcp://HOST:PORT  → clients PORT, workers PORT+1, events-in PORT+2, events-out PORT+3
ipc://PATH       → PATH.clients, PATH.workers, PATH.events-in, PATH.events-out
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

DEFAULT_BROKER_URL: Final = "tcp://127.0.0.1:5555"
MAX_IPC_PATH_BYTES: Final = 100  # sun_path is ~107 bytes; leave room for the suffixes


@dataclass(frozen=True, slots=True)
class Endpoints:
    """The four sockets of one broker."""

    clients: str
    workers: str
    events_in: str
    events_out: str


def broker_url(value: str | None = None) -> str:
    """The base URL: the given one, else ``$JOBCAST_BROKER``, else the default."""
    return value or os.environ.get("JOBCAST_BROKER") or DEFAULT_BROKER_URL


def endpoints(base_url: str) -> Endpoints:
    """Split a base URL into the broker's four endpoints.

    Raises:
        ValueError: the URL is not ``tcp://host:port`` or ``ipc://path``.
    """
    if base_url.startswith("ipc://"):
        return _ipc_endpoints(base_url)
    if base_url.startswith("tcp://"):
        return _tcp_endpoints(base_url)
    raise ValueError(f"broker URL must start with tcp:// or ipc:// (got {base_url!r})")


def _ipc_endpoints(base_url: str) -> Endpoints:
    path = base_url.removeprefix("ipc://")
    if not path:
        raise ValueError("ipc broker URL needs a path (got 'ipc://')")
    if len(path.encode()) + len(".events-out") > MAX_IPC_PATH_BYTES:
        raise ValueError(f"ipc path too long for a unix socket (got {len(path)} bytes)")
    return Endpoints(
        clients=f"{base_url}.clients",
        workers=f"{base_url}.workers",
        events_in=f"{base_url}.events-in",
        events_out=f"{base_url}.events-out",
    )


def _tcp_endpoints(base_url: str) -> Endpoints:
    parts = urlsplit(base_url)
    if parts.port is None or not parts.hostname:
        raise ValueError(f"tcp broker URL needs host and port (got {base_url!r})")
    if parts.port > 65535 - 3:
        raise ValueError(f"tcp base port leaves no room for port+3 (got {parts.port})")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    port = parts.port
    return Endpoints(
        clients=f"tcp://{host}:{port}",
        workers=f"tcp://{host}:{port + 1}",
        events_in=f"tcp://{host}:{port + 2}",
        events_out=f"tcp://{host}:{port + 3}",
    )


def ipc_directory(base_url: str) -> str | None:
    """The directory holding an ipc broker's socket files, or None for tcp."""
    if not base_url.startswith("ipc://"):
        return None
    return os.path.dirname(os.path.abspath(base_url.removeprefix("ipc://")))
