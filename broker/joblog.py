"""A job's log: the bounded lines a task wrote with ``job.log(text)`` (pure).

Bounds, enforced by the broker whatever a worker sends: at most ``MAX_LOG_LINES`` lines
kept per job, each at most ``MAX_LINE_CHARS`` characters (a longer one is cut and ends
with ``TRUNCATED_MARK``), and at most ``MAX_LOG_BYTES`` of JSON for all of them; the
oldest lines go first. ``log_count`` counts every line ever received, so line ``i`` keeps
its index: the lines kept are those numbered ``log_count - len(log)`` to ``log_count - 1``.

The log lives in the job's ``extra`` (``log`` and ``log_count``), so it is part of the
job's view, of its snapshot, of the journal record of the running job (so that a broker
restart keeps it: ``broker.jobs.job_record``) and of the view stored with the finished
job. An event that
adds lines carries only those (``log``) and the new ``log_count``; a watcher appends the
lines whose index it has not seen, and a gap (a dropped event) is repaired from a
snapshot, which carries every line kept.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Final

MAX_LOG_LINES: Final = 200
MAX_LINE_CHARS: Final = 1000
MAX_LOG_BYTES: Final = 32 * 1024  # the whole log fits in a snapshot's 64 KiB header
MAX_LINES_PER_MESSAGE: Final = 200
TRUNCATED_MARK: Final = "… [truncated]"


def clip_line(text: str) -> str:
    """``text`` cut to ``MAX_LINE_CHARS`` characters, marked when cut."""
    if len(text) <= MAX_LINE_CHARS:
        return text
    return text[: MAX_LINE_CHARS - len(TRUNCATED_MARK)] + TRUNCATED_MARK


def line_bytes(line: str) -> int:
    """What one line costs in a JSON header (escaped as ``json.dumps`` does)."""
    return len(json.dumps(line)) + 1


def append(extra: dict[str, Any], lines: Sequence[str]) -> list[str]:
    """Add ``lines`` to the log kept in a job's ``extra``; return the new lines as kept.

    Lines past ``MAX_LINES_PER_MESSAGE`` in one call are ignored; the returned lines are
    the newest ``len(returned)`` lines of the log (fewer than given if the bounds cut them).
    """
    new = [clip_line(line) for line in lines[:MAX_LINES_PER_MESSAGE]]
    kept = [*extra.get("log", ()), *new]
    del kept[: max(0, len(kept) - MAX_LOG_LINES)]
    size = sum(line_bytes(line) for line in kept)
    drop = 0
    while size > MAX_LOG_BYTES:
        size -= line_bytes(kept[drop])
        drop += 1
    del kept[:drop]
    extra["log"] = kept
    extra["log_count"] = int(extra.get("log_count", 0)) + len(new)
    return kept[len(kept) - min(len(new), len(kept)) :]


def lines_event(extra: dict[str, Any], new: list[str]) -> dict[str, Any]:
    """The event fields for lines just added: those lines and the new count."""
    return {"log": new, "log_count": extra.get("log_count", 0)}


def full_log(extra: dict[str, Any]) -> dict[str, Any] | None:
    """Every line kept and the count (for snapshots and repeated events), or None if none."""
    if "log_count" not in extra:
        return None
    return {"log": list(extra.get("log", ())), "log_count": extra["log_count"]}
