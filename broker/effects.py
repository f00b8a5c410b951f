"""Effects the broker core asks its I/O shell to carry out, in order (pure)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeAlias


@dataclass(frozen=True, slots=True)
class SendClient:
    """Send frames to a client peer on the clients ROUTER (``bundles``: it may travel with
    the turn's other such replies to that peer, in one bundle: ``broker.bundle``)."""

    to: bytes
    frames: list[bytes]
    bundles: bool = False


@dataclass(frozen=True, slots=True)
class SendWorker:
    """Send frames to a worker peer on the workers ROUTER."""

    to: bytes
    frames: list[bytes]


@dataclass(frozen=True, slots=True)
class Publish:
    """Publish an event on the events XPUB (the first frame is the topic)."""

    frames: list[bytes]


@dataclass(frozen=True, slots=True)
class StoreResult:
    """Keep a final job: its view and result under its id, its cache key if cacheable.

    ``spec`` is what a retry needs (``broker.retry``), kept as long as the view.
    ``view_json`` is the view already encoded (``protocol.encode_view``), if the core has it.
    """

    job_id: str
    view: dict[str, Any]
    result: bytes | None
    retention_s: float
    cache_key: str | None
    ttl_s: float
    spec: dict[str, Any] | None = None
    view_json: bytes | None = None


@dataclass(frozen=True, slots=True)
class Journal:
    """Append a record to the job journal (durable before any reply that follows)."""

    record: dict[str, Any]


Effect: TypeAlias = SendClient | SendWorker | Publish | StoreResult | Journal
