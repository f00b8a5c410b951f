"""Length-prefixed messages over the pipes between an agent and its runner child.

Grammar (no pickle: the header is JSON, the payload opaque bytes)::

    message = frame(header) frame(payload)     ; payload may be empty
    frame   = 4-byte big-endian length, then that many bytes

The runner reads its control pipe blocking; the agent reads the result pipe without
blocking through ``MessageReader``, which reassembles messages from any chunking.
"""

from __future__ import annotations

import json
import os
from typing import Any, Final, TypeAlias

from broker.protocol import MAX_HEADER_BYTES, MAX_RESULT_BYTES

LENGTH_BYTES: Final = 4
MAX_FRAME_BYTES: Final = MAX_RESULT_BYTES + MAX_HEADER_BYTES
READ_CHUNK_BYTES: Final = 1024 * 1024

PipeMessage: TypeAlias = tuple[dict[str, Any], bytes]


def pack(header: dict[str, Any], payload: bytes = b"") -> bytes:
    """The bytes of one message: the header frame, then the payload frame."""
    head = json.dumps(header, separators=(",", ":"), allow_nan=False).encode()
    return b"".join(_frame(part) for part in (head, payload))


def _frame(data: bytes) -> bytes:
    if len(data) > MAX_FRAME_BYTES:
        raise ValueError(f"pipe frame exceeds {MAX_FRAME_BYTES} bytes (got {len(data)})")
    return len(data).to_bytes(LENGTH_BYTES, "big") + data


def write_message(fd: int, header: dict[str, Any], payload: bytes = b"") -> None:
    """Write one whole message to a blocking pipe (raises OSError if the peer is gone)."""
    view = memoryview(pack(header, payload))
    while view:
        written = os.write(fd, view)
        view = view[written:]


def read_message(fd: int) -> PipeMessage | None:
    """Read one message from a blocking pipe; None at end of file."""
    head = _read_frame(fd)
    if head is None:
        return None
    payload = _read_frame(fd)
    if payload is None:
        return None
    return _parse_header(head), payload


def _read_frame(fd: int) -> bytes | None:
    prefix = _read_exact(fd, LENGTH_BYTES)
    if prefix is None:
        return None
    length = int.from_bytes(prefix, "big")
    if length > MAX_FRAME_BYTES:
        raise ValueError(f"pipe frame exceeds {MAX_FRAME_BYTES} bytes (got {length})")
    return _read_exact(fd, length)


def _read_exact(fd: int, size: int) -> bytes | None:
    chunks: list[bytes] = []
    remaining = size
    while remaining:
        chunk = os.read(fd, min(remaining, READ_CHUNK_BYTES))
        if not chunk:
            return None
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def _parse_header(raw: bytes) -> dict[str, Any]:
    value = json.loads(raw)
    if not isinstance(value, dict):
        raise ValueError(f"pipe header must be a JSON object (got {type(value).__name__})")
    return value


class MessageReader:
    """Reassembles messages from a non-blocking pipe read in arbitrary chunks."""

    def __init__(self) -> None:
        self._rest = bytearray()  # the start of a frame not complete yet
        self._needed = 0  # how long ``_rest`` must grow before that frame is whole
        self._frames: list[bytes] = []

    def feed(self, data: bytes) -> list[PipeMessage]:
        """Add bytes just read; return every message they complete."""
        if self._rest:
            self._rest += data  # a large frame comes in many reads: no copy per read
            if len(self._rest) < self._needed:
                return []
            data, self._rest = bytes(self._rest), bytearray()
        messages: list[PipeMessage] = []
        pos, size = 0, len(data)
        while size - pos >= LENGTH_BYTES:
            length = int.from_bytes(data[pos : pos + LENGTH_BYTES], "big")
            if length > MAX_FRAME_BYTES:
                raise ValueError(f"pipe frame exceeds {MAX_FRAME_BYTES} bytes (got {length})")
            end = pos + LENGTH_BYTES + length
            if end > size:
                break
            self._frames.append(data[pos + LENGTH_BYTES : end])
            pos = end
            if len(self._frames) == 2:
                head, payload = self._frames
                self._frames = []
                messages.append((_parse_header(head), payload))
        if pos < size:
            self._rest = bytearray(data[pos:])
            has_length = size - pos >= LENGTH_BYTES
            self._needed = LENGTH_BYTES + (
                int.from_bytes(self._rest[:LENGTH_BYTES], "big") if has_length else 0
            )
        return messages
