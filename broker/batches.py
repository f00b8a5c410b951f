"""Many submissions in one message: the args arrays of GROUP and SUBMITS, and SUBMITS' reply (pure).

A group (``SubmitGroup``) and a batch (``SubmitMany``) both carry one task, one set of
options and a JSON array of args objects. The broker turns either into one ``Submit`` per
object (``child_submits``) and admits each as it would a lone submit. A batch is answered
with one ``JobList`` (``batch_reply``): per item, in order, the job's ``id`` and ``state``
(and ``cached``: true for a cache hit), or for an item refused on its own ``{"error":
{"code", "message"}}`` (no ``id``). ``map`` needs only the ids, and ``status`` or a wait
gives a whole view: 1000 full views made the reply about 20 times larger, and encoding
and decoding them cost more than admitting the jobs.

The client side: ``batch_messages`` splits ``map``'s args into batches of at most
``MAX_GROUP_SIZE`` objects and ``MAX_ARGS_BYTES`` of payload (an args object too large to
share one goes as a lone ``Submit``), and ``batch_views`` reads the replies back;
``wait_messages`` asks for many final snapshots in ``WaitMany`` messages.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from typing import Any, Final

from broker import protocol as p
from broker.errors import BadArguments, ProtocolError, error_for_code
from broker.groups import MAX_GROUP_SIZE
from broker.jobs import canonical_args, parse_args

MAP_BATCHES_IN_FLIGHT: Final = 4  # more keeps the broker no busier, only makes its turns longer
OPTIONS: Final = ("ttl_s", "force", "priority", "delay_s", "run_at", "scope", "max_attempts", "timeout_s")
_COMPACT: Final = json.JSONEncoder(separators=(",", ":"))  # made once (json.dumps builds one per call)


def child_submits(msg: p.SubmitGroup | p.SubmitMany) -> list[p.Submit]:
    """One ``Submit`` per args object of a group or batch, in order, with its options.

    Raises:
        BadArguments: the payload is not a JSON array of 1..MAX_GROUP_SIZE objects.
    """
    noun = "group" if isinstance(msg, p.SubmitGroup) else "batch"
    items = parse_args(msg.args or b"null")
    if not isinstance(items, list):
        raise BadArguments(f"{noun} args must be a JSON array of objects (got {type(items).__name__})")
    if not 1 <= len(items) <= MAX_GROUP_SIZE:
        raise BadArguments(f"a {noun} has 1..{MAX_GROUP_SIZE} jobs (got {len(items)})")
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise BadArguments(f"job {index}: args must be a JSON object (got {type(item).__name__})")
    options = {name: getattr(msg, name) for name in OPTIONS}
    return [p.Submit(req=msg.req, task=msg.task, args=_COMPACT.encode(item).encode(), **options)
            for item in items]  # fmt: skip


def batch_reply(req: int, outcomes: list[p.Snapshot | p.Error]) -> p.JobList:
    """The reply to a batch: each admitted item's id and state, each refused item's error."""
    slots = [
        {"error": {"code": o.code, "message": o.message}} if isinstance(o, p.Error) else slot_of(o.job)
        for o in outcomes
    ]
    return p.JobList(req=req, views=_COMPACT.encode(slots).encode())


def slot_of(view: dict[str, Any]) -> dict[str, Any]:
    """An admitted item's slot in a batch reply: its id and state, and whether it was cached."""
    slot = {"id": view["id"], "state": view["state"]}
    if view.get("cached"):
        slot["cached"] = True
    return slot


def batch_messages(
    reqs: Iterator[int], task: str, args_list: list[dict[str, Any]], options: dict[str, Any]
) -> list[p.SubmitMany | p.Submit]:
    """``args_list`` as batches of at most MAX_GROUP_SIZE objects and MAX_ARGS_BYTES each.

    ``options`` are the ``Submit`` fields (``OPTIONS``). An args object that cannot share
    a batch's payload bound goes alone, as a ``Submit``.

    Raises:
        BadArguments: an args object has no canonical JSON form (its index is named).
    """
    msgs: list[p.SubmitMany | p.Submit] = []
    chunk: list[bytes] = []
    size = 2  # the brackets
    for index, args in enumerate(args_list):
        encoded = _canonical(args, index)
        if chunk and (len(chunk) == MAX_GROUP_SIZE or size + len(encoded) + 1 > p.MAX_ARGS_BYTES):
            msgs.append(_batch(next(reqs), task, chunk, options))
            chunk, size = [], 2
        if size + len(encoded) > p.MAX_ARGS_BYTES:
            msgs.append(p.Submit(req=next(reqs), task=task, args=encoded, **options))
            continue
        chunk.append(encoded)
        size += len(encoded) + 1
    if chunk:
        msgs.append(_batch(next(reqs), task, chunk, options))
    return msgs


def reserve(reqs: Iterator[int], count: int) -> tuple[int, itertools.count[int]]:
    """The first of ``count`` consecutive request numbers from ``reqs`` (a ``WaitMany``'s
    replies use them all), and the counter to take the next ones from."""
    first = next(reqs)
    return first, itertools.count(first + max(count, 1))


def wait_messages(first_req: int, job_ids: list[str]) -> tuple[list[p.Wait], list[p.Wait | p.WaitMany]]:
    """One ``Wait`` per id (request numbers from ``first_req`` on, consecutive) and the
    messages that send them: a ``WaitMany`` per MAX_GROUP_SIZE ids (a lone id: its ``Wait``)."""
    waits = [p.Wait(req=first_req + index, id=job_id) for index, job_id in enumerate(job_ids)]
    msgs: list[p.Wait | p.WaitMany] = []
    for start in range(0, len(waits), MAX_GROUP_SIZE):
        chunk = waits[start : start + MAX_GROUP_SIZE]
        msgs.append(
            chunk[0]
            if len(chunk) == 1
            else p.WaitMany(req=chunk[0].req, ids=[w.id for w in chunk], bundles=True)
        )
    return waits, msgs


def _canonical(args: Any, index: int) -> bytes:
    try:
        return canonical_args({} if args is None else args)
    except BadArguments as exc:
        raise type(exc)(f"job {index}: {exc}") from None


def _batch(req: int, task: str, chunk: list[bytes], options: dict[str, Any]) -> p.SubmitMany:
    return p.SubmitMany(req=req, task=task, args=b"[" + b",".join(chunk) + b"]", **options)


def batch_views(
    replies: list[p.Message], msgs: list[p.SubmitMany | p.Submit], count: int
) -> list[dict[str, Any]]:
    """The job views of all ``count`` items, in order, from the replies to ``batch_messages``.

    Raises:
        JobcastError: the first refused item's error, as a lone submit raises it (its
            index named), or the broker's error for a whole message.
    """
    views: list[dict[str, Any]] = []
    for reply, msg in zip(replies, msgs, strict=True):
        slots = _slots(reply) if isinstance(msg, p.SubmitMany) else [_single(reply)]
        for slot in slots:
            error = None if "id" in slot else slot.get("error")
            if isinstance(error, dict):
                message = f"job {len(views)}: {error.get('message', '')}"
                raise error_for_code(str(error.get("code", "")), message)
            views.append(slot)
    if len(views) != count:
        raise ProtocolError(f"the broker answered {len(views)} of {count} submissions")
    return views


def _slots(reply: p.Message) -> list[dict[str, Any]]:
    if isinstance(reply, p.Error):
        raise error_for_code(reply.code, reply.message)
    if not isinstance(reply, p.JobList):
        raise ProtocolError(f"expected a job list, got {type(reply).__name__}")
    slots = json.loads(reply.views)
    if not isinstance(slots, list) or not all(isinstance(slot, dict) for slot in slots):
        raise ProtocolError("a batch reply must be a JSON array of objects")
    return slots


def _single(reply: p.Message) -> dict[str, Any]:
    if isinstance(reply, p.Error):
        return {"error": {"code": reply.code, "message": reply.message}}
    if not isinstance(reply, p.Snapshot):
        raise ProtocolError(f"expected a job snapshot, got {type(reply).__name__}")
    return dict(reply.job)
