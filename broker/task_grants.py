"""Which tasks a worker key may register (RELIABILITY S17): a per-key task allowlist.

A CURVE key in the broker's allowlist is trusted for the tasks its worker registers: its
results become cached reports. To narrow that trust, put ``NAME.tasks`` beside ``NAME.key``
in the allowlist directory (``jobcast keys DIR --name NAME --tasks report,feeds`` writes
both): one task name per line or comma-separated. A key with a grant file registers only
those tasks; the others it advertises are refused and logged. A key without one may
register any task.

ZAP names a CURVE peer by the Z85 text of its public key (its ``User-Id``); grants are
keyed the same way.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from typing import Final

from broker.security import load_public_key

GRANT_SUFFIX: Final = ".tasks"
MAX_GRANT_BYTES: Final = 64 * 1024
_SEPARATORS: Final = re.compile(r"[,\s]+")

TaskGrants = Mapping[str, frozenset[str]]  # Z85 public key → tasks it may register


def grant_file(public_file: str) -> str:
    """The grant file that goes beside a ``NAME.key`` file."""
    base = public_file[: -len(".key")] if public_file.endswith(".key") else public_file
    return base + GRANT_SUFFIX


def write_task_grant(public_file: str, tasks: Iterable[str]) -> str:
    """Write the grant file for ``public_file`` (one task per line); return its path.

    Raises:
        ValueError: no task named, or the grant file already exists.
    """
    names = parse_task_list(",".join(tasks))
    if not names:
        raise ValueError("a task grant needs at least one task name")
    path = grant_file(public_file)
    if os.path.exists(path):
        raise ValueError(f"refusing to overwrite {path}")
    with open(path, "x", encoding="utf-8") as out:
        out.write("".join(f"{name}\n" for name in sorted(names)))
    return path


def parse_task_list(text: str) -> frozenset[str]:
    """Task names from comma- or whitespace-separated text; ``#`` starts a comment line."""
    lines = (line for line in text.splitlines() if not line.lstrip().startswith("#"))
    return frozenset(name for name in _SEPARATORS.split(" ".join(lines)) if name)


def load_task_grants(allow_dir: str) -> dict[str, frozenset[str]]:
    """The grants found in the allowlist directory, keyed by the Z85 public key.

    Raises:
        ValueError: a grant file has no ``.key`` beside it, is too big or unreadable.
    """
    grants: dict[str, frozenset[str]] = {}
    for name in sorted(os.listdir(allow_dir)):
        if name.endswith(GRANT_SUFFIX):
            path = os.path.join(allow_dir, name)
            public_file = path[: -len(GRANT_SUFFIX)] + ".key"
            if not os.path.exists(public_file):
                raise ValueError(f"{path} grants tasks to a key that is not there ({public_file})")
            grants[load_public_key(public_file).decode("ascii")] = _read_grant(path)
    return grants


def _read_grant(path: str) -> frozenset[str]:
    try:
        with open(path, "rb") as grant:
            raw = grant.read(MAX_GRANT_BYTES + 1)
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from None
    if len(raw) > MAX_GRANT_BYTES:
        raise ValueError(f"{path} is larger than {MAX_GRANT_BYTES} bytes")
    return parse_task_list(raw.decode("utf-8", errors="replace"))
