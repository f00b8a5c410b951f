"""The jobcast wire protocol: frame grammar, messages, ``encode`` and ``decode`` (pure).

Frame grammar (one ZeroMQ multipart message; the ROUTER's peer frame is stripped first)::

    direct     = "JC01" COMMAND header [payload]
    published  = topic "JC01" COMMAND header         ; topic = the job id, or "*" (below)
    COMMAND    = short ASCII word, see ``Command``
    header     = UTF-8 JSON object, at most MAX_HEADER_BYTES
    payload    = opaque bytes: task args or a result (canonical JSON), at most its bound;
                 GROUP's and SUBMITS' payload is a JSON array of args objects, a group
                 snapshot's the children rows

Who sends what::

    client → broker    SUBMIT SUBMITS GROUP STATUS CANCEL WAIT WAITS STATS LIST RETRY PAUSE
                       RESUME
    broker → client    JOB (a job or group snapshot, result as payload) ERROR
                       COUNTERS (per-task metrics JSON as payload when STATS asked for them;
                                 also the reply to PAUSE and RESUME)
                       JOBS (reply to LIST and SUBMITS: a JSON array of job views as payload)
    worker → broker    READY HEARTBEAT LOG DONE FAILED RELEASE BYE
    broker → worker    ASSIGN STOP HEARTBEAT BYE ERROR
    either way         BUNDLE: several worker-link messages as one (``broker.bundle``),
                       to a slot only if its READY said ``bundles``
    broker → client    BUNDLE of JOB replies to a WAITS that said ``bundles``
    worker PUB         PROGRESS (topic = job id)
    broker XPUB        EVENT    (topic = job id; and a copy under "*" for dashboards)

SUBMITS carries 1..``MAX_GROUP_SIZE`` (1000) args objects of one task with one set of
options (the header is GROUP's), in at most ``MAX_ARGS_BYTES`` of payload in all (so a
batch costs the broker no more memory than one large submission; a client sends an args
object that cannot share a batch as a lone SUBMIT). The broker admits every item exactly
as a lone SUBMIT (checks, cache hit, coalescing, queue_full) and answers one JOBS whose
array holds, in order, the item's job view (less its log lines and error, which
``status`` gives: 1000 views stay within the JOBS bound), or for an item refused on its own
``{"error": {"code": CODE, "message": TEXT}}`` (CODE as in ERROR; no "id", which every
job view has): one refused item never sinks the others. A payload that is not such an
array (1..1000 objects) gets ERROR and admits nothing.

WAITS is WAIT for 1..1000 ids at once (``ids`` in the header): the reply for the i-th id
is its own JOB (or ERROR), sent when that job is final, with ``req`` + i; a client reserves
that many consecutive request numbers. With ``bundles`` in the header, the JOBs of jobs
that end in one broker turn may come as one BUNDLE (``broker.bundle``).

The all-jobs topic ``ALL_JOBS_TOPIC`` (``*``, which can never start a job id: ids are
URL-safe base64) carries a copy of every job's events, published only while someone
subscribed to exactly that topic; its progress copies are thinned (``broker.alljobs``).

``decode`` checks the frame count and sizes *before* parsing anything and raises
``ProtocolError`` with the rule that was broken. Nothing is ever pickled.
"""

from __future__ import annotations

import json
import types
import typing
from dataclasses import dataclass, fields
from enum import Enum
from typing import Any, Final

from broker.errors import ProtocolError
from broker.messages import (
    Assign,
    Bye,
    Cancel,
    Counters,
    Done,
    Error,
    Event,
    Failed,
    Heartbeat,
    JobList,
    ListJobs,
    Log,
    Message,
    Pause,
    Progress,
    Ready,
    Release,
    Resume,
    Retry,
    Snapshot,
    Stats,
    Status,
    Stop,
    Submit,
    SubmitGroup,
    SubmitMany,
    Wait,
    WaitMany,
)

__all__ = [
    "ALL_JOBS_TOPIC",
    "MAX_ARGS_BYTES",
    "MAX_FRAMES",
    "MAX_HEADER_BYTES",
    "MAX_RESULT_BYTES",
    "MAX_TOPIC_BYTES",
    "TAG",
    "Command",
    "decode",
    "encode",
    "Assign",
    "Bye",
    "Cancel",
    "Counters",
    "Done",
    "Error",
    "Event",
    "Failed",
    "Heartbeat",
    "JobList",
    "ListJobs",
    "Log",
    "Message",
    "Pause",
    "Progress",
    "Ready",
    "Release",
    "Resume",
    "Retry",
    "Snapshot",
    "Stats",
    "Status",
    "Stop",
    "Submit",
    "SubmitGroup",
    "SubmitMany",
    "Wait",
    "WaitMany",
]

TAG: Final = b"JC01"
MAX_FRAMES: Final = 5
MAX_HEADER_BYTES: Final = 64 * 1024
MAX_ARGS_BYTES: Final = 1024 * 1024
MAX_RESULT_BYTES: Final = 16 * 1024 * 1024
MAX_TOPIC_BYTES: Final = 64
ALL_JOBS_TOPIC: Final = b"*"  # never a job id's first character (see the module docstring)


class Command(bytes, Enum):
    """Every command word on the wire."""

    SUBMIT = b"SUBMIT"
    SUBMITS = b"SUBMITS"
    STATUS = b"STATUS"
    CANCEL = b"CANCEL"
    WAIT = b"WAIT"
    WAITS = b"WAITS"
    STATS = b"STATS"
    PAUSE = b"PAUSE"
    RESUME = b"RESUME"
    GROUP = b"GROUP"
    JOB = b"JOB"
    COUNTERS = b"COUNTERS"
    ERROR = b"ERROR"
    READY = b"READY"
    HEARTBEAT = b"HEARTBEAT"
    LOG = b"LOG"
    ASSIGN = b"ASSIGN"
    DONE = b"DONE"
    FAILED = b"FAILED"
    STOP = b"STOP"
    BYE = b"BYE"
    PROGRESS = b"PROGRESS"
    EVENT = b"EVENT"
    LIST = b"LIST"
    JOBS = b"JOBS"
    RETRY = b"RETRY"
    RELEASE = b"RELEASE"


COMMAND_OF: Final[dict[type[Any], Command]] = {
    Submit: Command.SUBMIT, Status: Command.STATUS, Cancel: Command.CANCEL,
    Wait: Command.WAIT, Stats: Command.STATS, Pause: Command.PAUSE, Resume: Command.RESUME,
    Snapshot: Command.JOB,
    Counters: Command.COUNTERS, Error: Command.ERROR, Ready: Command.READY,
    Heartbeat: Command.HEARTBEAT, Assign: Command.ASSIGN, Done: Command.DONE,
    Failed: Command.FAILED, Stop: Command.STOP, Bye: Command.BYE,
    Progress: Command.PROGRESS, Event: Command.EVENT, ListJobs: Command.LIST,
    JobList: Command.JOBS, Retry: Command.RETRY, SubmitGroup: Command.GROUP,
    Log: Command.LOG, Release: Command.RELEASE, SubmitMany: Command.SUBMITS,
    WaitMany: Command.WAITS,
}  # fmt: skip
TYPE_OF: Final = {command: cls for cls, command in COMMAND_OF.items()}
PUBLISHED: Final = frozenset({Progress, Event})
PAYLOAD_FIELD: Final[dict[type[Any], str]] = {
    Submit: "args",
    SubmitGroup: "args",
    SubmitMany: "args",
    Assign: "args",
    Done: "result",
    Snapshot: "result",
    JobList: "views",
    Counters: "metrics",
}
PAYLOAD_LIMIT: Final[dict[type[Any], int]] = {
    Submit: MAX_ARGS_BYTES, SubmitGroup: MAX_ARGS_BYTES, SubmitMany: MAX_ARGS_BYTES,
    Assign: MAX_ARGS_BYTES,
    Done: MAX_RESULT_BYTES, Snapshot: MAX_RESULT_BYTES, JobList: MAX_RESULT_BYTES,
    Counters: MAX_RESULT_BYTES,
}  # fmt: skip
_CLASS_OF_WORD: Final = {command.value: cls for command, cls in TYPE_OF.items()}
_WORD_OF: Final = {cls: command.value for cls, command in COMMAND_OF.items()}
_HEADER_FIELDS: Final = {
    cls: tuple(f.name for f in fields(cls) if f.name != PAYLOAD_FIELD.get(cls)) for cls in COMMAND_OF
}
_MAX_BYTES: Final = max(MAX_RESULT_BYTES, MAX_ARGS_BYTES) + MAX_HEADER_BYTES + 1024
# one encoder and one decoder for every header: json.dumps/loads with options build a new one per call
_HEADER_ENCODER: Final = json.JSONEncoder(separators=(",", ":"), allow_nan=False)


def encode(msg: Message) -> list[bytes]:
    """Encode a message into its frames (published ones start with the topic)."""
    cls = type(msg)
    header = {name: getattr(msg, name) for name in _HEADER_FIELDS[cls]}
    frames = [TAG, _WORD_OF[cls], _dump_header(header)]
    payload_field = PAYLOAD_FIELD.get(cls)
    if payload_field is not None:
        payload = getattr(msg, payload_field)
        if payload is not None:
            frames.append(payload)
    if cls in PUBLISHED:
        frames.insert(0, msg.id.encode())  # type: ignore[union-attr]
    return frames


def _dump_header(header: dict[str, Any]) -> bytes:
    return _HEADER_ENCODER.encode(header).encode()


def encode_view(view: dict[str, Any]) -> bytes:
    """A job view encoded as a ``Snapshot`` header holds it (for ``encode_snapshot``)."""
    return _dump_header(view)


def encode_snapshot(req: int, view_json: bytes, result: bytes | None) -> list[bytes]:
    """The frames of ``Snapshot(req=req, job=view, result=result)`` for a view encoded by
    ``encode_view``: a final job's view is encoded once for its stored row and every reply."""
    frames = [TAG, _WORD_OF[Snapshot], b'{"req":%d,"job":%s}' % (req, view_json)]
    return frames if result is None else [*frames, result]


def decode(frames: list[bytes]) -> Message:
    """Decode frames into a message.

    Raises:
        ProtocolError: the frames break the grammar, a bound, or a field's type.
    """
    _check_bounds(frames)
    topic, frames = _split_topic(frames)
    cls = _message_class(frames[1])
    _check_payload(cls, frames)
    values = _parse_header(frames[2])
    payload_field = PAYLOAD_FIELD.get(cls)
    if payload_field is not None:
        values[payload_field] = frames[3] if len(frames) > 3 else None
    msg = _build(cls, values)
    if (topic is not None) != (cls in PUBLISHED):
        raise ProtocolError(f"{cls.__name__} must {'' if topic is None else 'not '}be published")
    copy = topic == ALL_JOBS_TOPIC and cls is Event  # the dashboards' copy of any job's event
    if topic is not None and topic != msg.id.encode() and not copy:  # type: ignore[union-attr]
        raise ProtocolError("topic does not match the event's job id")
    return msg


def _check_bounds(frames: list[bytes]) -> None:
    if not frames:
        raise ProtocolError("empty message")
    if len(frames) > MAX_FRAMES:
        raise ProtocolError(f"too many frames: at most {MAX_FRAMES} (got {len(frames)})")
    total = sum(map(len, frames))
    if total > _MAX_BYTES:
        raise ProtocolError(f"message exceeds {_MAX_BYTES} bytes (got {total})")


def _split_topic(frames: list[bytes]) -> tuple[bytes | None, list[bytes]]:
    if frames[0] == TAG:
        topic = None
    elif len(frames) > 1 and frames[1] == TAG:
        topic, frames = frames[0], frames[1:]
        if len(topic) > MAX_TOPIC_BYTES:
            raise ProtocolError(f"topic exceeds {MAX_TOPIC_BYTES} bytes (got {len(topic)})")
    else:
        raise ProtocolError(f"wrong protocol tag: expected {TAG!r}")
    if len(frames) < 3:
        raise ProtocolError(f"truncated: need tag, command and header (got {len(frames)} frames)")
    return topic, frames


def _message_class(command: bytes) -> type[Any]:
    cls = _CLASS_OF_WORD.get(command)
    if cls is None:
        raise ProtocolError(f"unknown command {command[:32]!r}")
    return cls


def _check_payload(cls: type[Any], frames: list[bytes]) -> None:
    if len(frames[2]) > MAX_HEADER_BYTES:
        raise ProtocolError(f"header exceeds {MAX_HEADER_BYTES} bytes (got {len(frames[2])})")
    allowed = 4 if cls in PAYLOAD_FIELD else 3
    if len(frames) > allowed:
        raise ProtocolError(f"{cls.__name__} takes at most {allowed} frames (got {len(frames)})")
    if len(frames) == 4:
        limit = PAYLOAD_LIMIT[cls]
        if len(frames[3]) > limit:
            raise ProtocolError(f"payload exceeds {limit} bytes (got {len(frames[3])})")


def _parse_header(raw: bytes) -> dict[str, Any]:
    # what json.loads(raw, parse_constant=...) does, with a decoder made once; a header
    # that starts "{" and then a non-zero byte is UTF-8 to json.detect_encoding too
    utf8 = raw[:1] == b"{" and raw[1:2] != b"\x00"
    try:
        text = raw.decode("utf-8" if utf8 else json.detect_encoding(raw), "surrogatepass")
        value = _HEADER_DECODER.decode(text)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(f"header is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ProtocolError(f"header must be a JSON object (got {type(value).__name__})")
    return value


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not allowed")


_HEADER_DECODER: Final = json.JSONDecoder(parse_constant=_reject_constant)


def _build(cls: type[Any], values: dict[str, Any]) -> Message:
    checks = _FIELD_CHECKS[cls]
    for name, value in values.items():
        check = checks.get(name)
        if check is None:
            raise ProtocolError(f"{cls.__name__}: unknown field {name!r}")
        kind = type(value)
        if kind not in check.types or (kind is list and not check.items_ok(value)):
            raise ProtocolError(f"{cls.__name__}.{name}: wrong type {kind.__name__}")
        if ((kind is str and not value.isascii()) or kind is list) and _has_lone_surrogate(value):
            raise ProtocolError(f"{cls.__name__}.{name}: lone surrogate in a string")
    try:
        return cls(**values)  # type: ignore[no-any-return]
    except TypeError as exc:
        raise ProtocolError(f"{cls.__name__}: {exc}") from None


@dataclass(frozen=True, slots=True)
class FieldCheck:
    """The exact types a field takes (a header is parsed JSON, a payload bytes: no
    subclasses), and for a ``list[...]`` field the types of its items."""

    types: frozenset[type]
    items: frozenset[type] = frozenset()

    def items_ok(self, value: list[Any]) -> bool:
        """Whether every item of a list value has one of the item types."""
        return all(type(item) in self.items for item in value)


def _field_check(hint: Any) -> FieldCheck:
    """The check of one annotation: a class, ``X | None``, ``float`` (an int too, never a
    bool: JSON's 1 is a valid 1.0), ``dict[...]`` (the keys are JSON's), ``list[X]``."""
    types_ok: set[type] = set()
    items: frozenset[type] = frozenset()
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    for option in options:
        origin = typing.get_origin(option) or option
        if not isinstance(origin, type):
            raise TypeError(f"no wire check for the annotation {hint!r}")
        if origin is list:
            items = _field_check(typing.get_args(option)[0]).types
        types_ok.update((int, float) if origin is float else (origin,))
    return FieldCheck(frozenset(types_ok), items)


_FIELD_CHECKS: Final[dict[type[Any], dict[str, FieldCheck]]] = {
    cls: {name: _field_check(hint) for name, hint in typing.get_type_hints(cls).items()} for cls in COMMAND_OF
}


def _has_lone_surrogate(value: Any) -> bool:
    # JSON's "\ud800" escape yields a str that cannot be encoded again (ids become topics,
    # scopes feed the cache key), so refuse it here rather than crash later.
    if isinstance(value, str):
        return not value.isascii() and _unencodable(value)
    if isinstance(value, list):
        return any(_has_lone_surrogate(item) for item in value)
    return False


def _unencodable(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return True
    return False
