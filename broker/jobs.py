"""Job records, their states and legal transitions, ids and cache keys (pure)."""

from __future__ import annotations

import hashlib
import json
import math
import re
import secrets
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final

from broker.errors import BadArguments, PayloadTooLarge
from broker.protocol import MAX_ARGS_BYTES

JOB_ID_PATTERN: Final = re.compile(r"[A-Za-z0-9_-]{22}")
MAX_SAFE_INT: Final = 2**53  # JSON numbers past this lose precision in browsers
MAX_ARGS_DEPTH: Final = 32
MAX_TASK_NAME: Final = 200
DEFAULT_TTL_S: Final = 86400.0
DEFAULT_MAX_ATTEMPTS: Final = 3
PRIORITIES: Final = ("high", "normal", "low")


class State(StrEnum):
    """A job's lifecycle state; the values are DESIGN's strings."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


FINAL_STATES: Final = frozenset({State.DONE, State.FAILED, State.CANCELLED})
TRANSITIONS: Final[dict[State, frozenset[State]]] = {
    State.QUEUED: frozenset({State.RUNNING, State.FAILED, State.CANCELLED}),
    State.RUNNING: frozenset({State.QUEUED, State.DONE, State.FAILED, State.CANCELLED}),
    State.DONE: frozenset(),
    State.FAILED: frozenset(),
    State.CANCELLED: frozenset(),
}


@dataclass(slots=True)
class Job:
    """Everything the broker knows about one job."""

    id: str
    task: str
    args: bytes
    cache_key: str
    created_at: float
    ttl_s: float | None = None  # None: the task's default
    priority: str = "normal"
    run_at: float = 0.0
    max_attempts: int | None = None  # None: the task's default
    timeout_s: float | None = None
    scope: str = ""
    state: State = State.QUEUED
    attempts: int = 0
    done: int = 0
    total: int = 0
    message: str = ""
    eta_s: float | None = None
    seq: int = 0
    started_at: float | None = None
    finished_at: float | None = None
    error: dict[str, Any] | None = None
    result: bytes | None = None
    worker: bytes | None = None
    watchers: int = 1
    cached: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    view_json: bytes | None = None  # the final view, encoded once when the job ended

    @property
    def is_final(self) -> bool:
        """Whether the job reached done, failed or cancelled."""
        return self.state in FINAL_STATES

    def move_to(self, state: State) -> None:
        """Change state, refusing transitions the lifecycle does not allow."""
        if state not in TRANSITIONS[self.state]:
            raise ValueError(f"job {self.id}: illegal transition {self.state} → {state}")
        self.state = state

    def view(self, epoch: int) -> dict[str, Any]:
        """The job as users see it (JSON-ready, result excluded)."""
        return {
            "id": self.id, "task": self.task, "state": str(self.state),
            "done": self.done, "total": self.total, "message": self.message,
            "eta_s": self.eta_s, "seq": self.seq, "epoch": epoch,
            "attempts": self.attempts, "max_attempts": self.max_attempts,
            "created_at": self.created_at, "started_at": self.started_at,
            "finished_at": self.finished_at, "error": self.error,
            "cached": self.cached, "watchers": self.watchers,
            "priority": self.priority, "ttl_s": self.ttl_s, **self.extra,
        }  # fmt: skip


def new_job_id() -> str:
    """A fresh job id: 128 random bits, URL-safe base64 (22 characters), never starting
    with ``-`` (a command line would read it as an option: ``jobcast status -x…``)."""
    while True:
        job_id = secrets.token_urlsafe(16)
        if job_id[0] != "-":
            return job_id


def is_job_id(value: str) -> bool:
    """Whether ``value`` has the shape of a job id (say nothing about existence)."""
    return JOB_ID_PATTERN.fullmatch(value) is not None


def canonical_args(args: Any) -> bytes:
    """The canonical JSON bytes of a job's arguments.

    Raises:
        BadArguments: not an object, NaN/Infinity, an int past 2**53, a lone surrogate,
            nesting deeper than MAX_ARGS_DEPTH.
        PayloadTooLarge: the encoding exceeds MAX_ARGS_BYTES.
    """
    if not isinstance(args, dict):
        raise BadArguments(f"args must be a JSON object (got {type(args).__name__})")
    _check_value(args, depth=0)
    try:
        text = _CANONICAL.encode(args)
        encoded = text.encode("utf-8")
    except (ValueError, TypeError) as exc:
        raise BadArguments(f"args have no canonical JSON form: {exc}") from None
    if len(encoded) > MAX_ARGS_BYTES:
        raise PayloadTooLarge(f"args exceed {MAX_ARGS_BYTES} bytes (got {len(encoded)})")
    return encoded


def _check_value(value: Any, depth: int) -> None:
    if depth > MAX_ARGS_DEPTH:
        raise BadArguments(f"args nest deeper than {MAX_ARGS_DEPTH} levels")
    match value:
        case bool() | None:
            pass
        case int():
            if abs(value) > MAX_SAFE_INT:
                raise BadArguments(f"integer out of range ±2**53 (got {_short(value)})")
        case float():
            if not math.isfinite(value):
                raise BadArguments(f"args must not contain NaN or Infinity (got {value})")
        case str():
            _check_text(value)
        case list():
            for item in value:
                _check_value(item, depth + 1)
        case dict():
            for key, item in value.items():
                if not isinstance(key, str):
                    raise BadArguments(f"object keys must be strings (got {key!r})")
                _check_text(key)
                _check_value(item, depth + 1)
        case _:
            raise BadArguments(f"{type(value).__name__} is not a JSON value")


def _check_text(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise BadArguments("strings must not contain lone surrogates") from None


def _short(value: int) -> str:
    digits = len(str(abs(value))) if abs(value) < 10**4300 else 4300
    return f"an integer of {digits} digits" if digits > 20 else str(value)


def parse_args(raw: bytes) -> Any:
    """Parse argument bytes from the wire, rejecting NaN/Infinity and deep nesting."""
    try:
        return _ARGS_DECODER.decode(raw.decode(json.detect_encoding(raw), "surrogatepass"))
    except (ValueError, RecursionError) as exc:
        raise BadArguments(f"args are not valid JSON: {exc}") from None


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not allowed")


# made once: json.dumps/loads with options build a new encoder or decoder per call
_CANONICAL: Final = json.JSONEncoder(sort_keys=True, separators=(",", ":"), allow_nan=False)
_ARGS_DECODER: Final = json.JSONDecoder(parse_constant=_reject_constant)


def cache_key(task: str, args_json: bytes, scope: str = "") -> str:
    """sha256 over the task name, the canonical args and the scope (hex)."""
    digest = hashlib.sha256()
    for part in (task.encode(), args_json, scope.encode()):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


def check_task_name(task: str) -> None:
    """Reject empty, overlong or non-printable task names."""
    if not task or len(task) > MAX_TASK_NAME or not task.isprintable():
        raise BadArguments(f"task name must be 1..{MAX_TASK_NAME} printable characters")


_RECORD_FIELDS: Final = (
    "id", "task", "cache_key", "created_at", "ttl_s", "priority", "run_at", "max_attempts",
    "timeout_s", "scope", "state", "attempts", "done", "total", "message", "seq",
    "started_at", "watchers", "error",
)  # fmt: skip


def job_record(job: Job) -> dict[str, Any]:
    """A live job as a JSON-ready journal record (args as text, its log if any, no result)."""
    record = {name: getattr(job, name) for name in _RECORD_FIELDS}
    record["state"] = str(job.state)
    record["args"] = job.args.decode("utf-8")
    if "log_count" in job.extra:  # a broker restart keeps the lines a running task wrote
        record["log"] = job.extra.get("log", [])
        record["log_count"] = job.extra["log_count"]
    return record


def job_from_record(record: dict[str, Any]) -> Job:
    """Rebuild a live job from its journal record."""
    values = {name: record[name] for name in _RECORD_FIELDS if name in record}
    values["state"] = State(values.get("state", "queued"))
    job = Job(args=record["args"].encode("utf-8"), **values)
    log, count = record.get("log"), record.get("log_count")
    if isinstance(log, list) and all(isinstance(line, str) for line in log) and isinstance(count, int):
        job.extra.update(log=log, log_count=max(count, len(log)))
    return job
