"""Terminal output: the live progress bar of ``jobcast submit --wait`` (only drawn on a
terminal) and the lines of ``jobcast failed``."""

from __future__ import annotations

import sys
import time
from typing import Any, Protocol

BAR_WIDTH = 30


class _Client(Protocol):
    def events(self, job_id: str, after: int = 0) -> Any: ...


def render_bar(event: dict[str, Any]) -> str:
    """One line: state, a bar, done/total, ETA and message."""
    done, total = event.get("done", 0), event.get("total", 0)
    filled = int(BAR_WIDTH * done / total) if total else 0
    bar = "#" * filled + "-" * (BAR_WIDTH - filled)
    eta = f" eta {event['eta_s']:.0f}s" if event.get("eta_s") else ""
    return f"{event['state']:<9} [{bar}] {done}/{total}{eta} {event.get('message', '')[:40]}"


def follow(client: _Client, job_id: str, show_bar: bool) -> None:
    """Draw the job's pushed events until it ends (does nothing when not on a TTY)."""
    if not show_bar:
        return
    for event in client.events(job_id):
        sys.stderr.write("\r\x1b[K" + render_bar(event))
        sys.stderr.flush()
    sys.stderr.write("\n")


def failure_line(view: dict[str, Any]) -> str:
    """One line per failed job: id, task, when it ended, attempts, error type: message."""
    ended = view.get("finished_at")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ended)) if ended else "-"
    error = view.get("error") or {}
    message = str(error.get("message", "")).splitlines()[0] if error.get("message") else ""
    return (
        f"{view['id']}  {view['task']}  {when}  attempts {view.get('attempts', 0)}"
        f"  {error.get('type', '')}: {message[:200]}"
    )
