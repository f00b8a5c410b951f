"""Several worker-link messages in one ZeroMQ message: a bundle (pure).

Grammar (on the broker's workers socket, either way)::

    bundle  = "JC01" "BUNDLE" header lengths body
    header  = {"frames": [n1, n2, ...]}   ; 2..MAX_BUNDLED counts, each 3 or 4
    lengths = one little-endian uint32 per bundled frame: its length in bytes
    body    = the bundled frames, one after the other (at most MAX_BUNDLE_BYTES)

The bundled messages are each exactly as ``protocol.encode`` gives them (never a bundle):
the first ``n1`` frames are the first message, and so on. They travel in one body frame
because every ZeroMQ frame costs a Python call to send and another to receive (about
1.4 µs each here: a bundle of 16 results as frames took 88 µs to send, as one body 6 µs).
The receiver handles each message as if it had come alone, in order; a bundle that breaks
the grammar is refused whole, before any of its messages is looked at.

A slot under load sends several messages per loop turn (a done job and the next job's
log, or outcomes that the runner wrote together); the broker sends it several (a
prefetching slot topped up after several outcomes), and a client waiting for many jobs
gets several final snapshots in one turn. One ZeroMQ message for them costs each side
one send, one receive and one wake-up instead of one per message. The broker bundles only
to a slot whose ``Ready`` said ``bundles``, and only the replies to a ``WaitMany`` that
said ``bundles``; a broker that took such a ``Ready`` reads bundles.
"""

from __future__ import annotations

import itertools
import json
import struct
from collections.abc import Callable
from typing import Final

from broker import protocol as p
from broker.effects import Effect, SendClient, SendWorker
from broker.errors import ProtocolError

WORD: Final = b"BUNDLE"
MAX_BUNDLED: Final = 64
MAX_BUNDLE_BYTES: Final = 1024 * 1024  # what one bundle may carry; a larger message goes alone
_INNER_FRAMES: Final = frozenset({3, 4})  # tag, command, header[, payload]: never a topic


def is_bundle(frames: list[bytes]) -> bool:
    """Whether a worker-link message is a bundle (its tag and command say so)."""
    return len(frames) > 1 and frames[1] == WORD and frames[0] == p.TAG


def messages_in(frames: list[bytes]) -> list[list[bytes]]:
    """The messages one ZeroMQ message carries: a bundle's, or itself.

    Raises:
        ProtocolError: a bundle that breaks the grammar (``unbundle``).
    """
    return unbundle(frames) if is_bundle(frames) else [frames]


def bundle(messages: list[list[bytes]]) -> list[bytes]:
    """The frames of one bundle of 2..MAX_BUNDLED encoded messages."""
    counts = b",".join(b"%d" % len(frames) for frames in messages)
    flat = list(itertools.chain.from_iterable(messages))
    lengths = struct.pack(f"<{len(flat)}I", *map(len, flat))
    return [p.TAG, WORD, b'{"frames":[%s]}' % counts, lengths, b"".join(flat)]


def unbundle(frames: list[bytes]) -> list[list[bytes]]:
    """The messages of a bundle, each as its own frames, in order.

    Raises:
        ProtocolError: the header, the lengths or the body break the grammar, or the body
            is larger than MAX_BUNDLE_BYTES.
    """
    if len(frames) != 5:
        raise ProtocolError(f"bundle: takes 5 frames (got {len(frames)})")
    _tag, _word, header, lengths, body = frames
    if len(body) > MAX_BUNDLE_BYTES:
        raise ProtocolError(f"bundle exceeds {MAX_BUNDLE_BYTES} bytes (got {len(body)})")
    counts = _counts(header)
    total = sum(counts)
    if len(lengths) != 4 * total:
        raise ProtocolError(f"bundle: the header counts {total} frames, the lengths {len(lengths) / 4:g}")
    sizes = struct.unpack(f"<{total}I", lengths)
    if sum(sizes) != len(body):
        raise ProtocolError(f"bundle: the lengths add up to {sum(sizes)} bytes, the body has {len(body)}")
    flat = []
    start = 0
    for size in sizes:
        flat.append(body[start : start + size])
        start += size
    messages = []
    start = 0
    for count in counts:
        inner = flat[start : start + count]
        if inner[1] == WORD:
            raise ProtocolError("bundle: a bundle inside a bundle")
        messages.append(inner)
        start += count
    return messages


def _counts(header: bytes) -> list[int]:
    if len(header) > p.MAX_HEADER_BYTES:
        raise ProtocolError(f"bundle header exceeds {p.MAX_HEADER_BYTES} bytes")
    try:
        value = json.loads(header)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(f"bundle header is not JSON: {exc}") from None
    counts = value.get("frames") if isinstance(value, dict) and len(value) == 1 else None
    if not isinstance(counts, list) or not 2 <= len(counts) <= MAX_BUNDLED:
        raise ProtocolError(f'bundle header must be {{"frames": [2..{MAX_BUNDLED} counts]}}')
    if any(type(count) is not int or count not in _INNER_FRAMES for count in counts):
        raise ProtocolError("bundle: each message has 3 or 4 frames")
    return counts


def pack(frame_lists: list[list[bytes]]) -> list[list[bytes]]:
    """Messages for one peer, in order, as few sends as the bounds allow: bundles of up to
    MAX_BUNDLED messages and MAX_BUNDLE_BYTES, a larger message alone."""
    sends: list[list[bytes]] = []
    run: list[list[bytes]] = []
    size = 0
    for frames in frame_lists:
        length = sum(map(len, frames))
        if run and (len(run) == MAX_BUNDLED or size + length > MAX_BUNDLE_BYTES):
            sends.append(run[0] if len(run) == 1 else bundle(run))
            run, size = [], 0
        run.append(frames)
        size += length
    if run:
        sends.append(run[0] if len(run) == 1 else bundle(run))
    return sends


def bundle_sends(effects: list[Effect], takes_bundles: Callable[[bytes], bool]) -> list[Effect]:
    """A turn's effects with several messages to one peer packed (``pack``) where the first
    of them was: a slot's that reads bundles (``takes_bundles``), and a client's replies
    marked ``bundles``. Every other effect keeps its place."""
    found_all = [_bundleable(effect) for effect in effects]
    grouped: dict[tuple[type, bytes], list[list[bytes]]] = {}
    for found in found_all:
        if found is not None:
            grouped.setdefault(found[0], []).append(found[1])
    packed = {
        key: pack(msgs)
        for key, msgs in grouped.items()
        if len(msgs) > 1 and (key[0] is SendClient or takes_bundles(key[1]))
    }
    if not packed:
        return effects
    emitted: set[tuple[type, bytes]] = set()
    out: list[Effect] = []
    for effect, found in zip(effects, found_all, strict=True):
        if found is None or found[0] not in packed:
            out.append(effect)
        elif found[0] not in emitted:
            kind, peer = found[0]
            emitted.add(found[0])
            out.extend(SendClient(peer, frames) if kind is SendClient else SendWorker(peer, frames)
                       for frames in packed[found[0]])  # fmt: skip
    return out


def _bundleable(effect: Effect) -> tuple[tuple[type, bytes], list[bytes]] | None:
    """(kind and peer, frames) of a send that may travel in a bundle, else None."""
    if isinstance(effect, SendWorker) or (isinstance(effect, SendClient) and effect.bundles):
        return (type(effect), effect.to), effect.frames
    return None
