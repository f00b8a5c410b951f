"""A Jepsen-style history checker for jobcast runs (after Jepsen's ``total-queue``).

A test records every *acknowledged* submit (the client got an id back), every submit whose
outcome it cannot know (the broker died before answering: *indeterminate*), and every
watcher's stream of events. After quiescence it reads each acknowledged job's final
status and the side-effect ledger written by ``tasks.record`` and asks ``check()`` for
the list of violations (empty when the run was clean):

- lost: an acknowledged id that is not in exactly one terminal state;
- unexpected: a ledger entry (a run) for an id never acknowledged, unless it carries the
  tag of an indeterminate submit;
- duplicated: two acknowledged submits of different tags got the same id, or a stored
  result that is not the one of the job's final attempt (one stored result per id);
- attempts above ``max_attempts``;
- a watcher whose ``seq`` is not strictly increasing, whose stream does not end with the
  job's final state, or (``gapless``) that skipped a ``seq``;
- with ``exactly_once``: a done job without exactly one ledger ``end`` for its final
  attempt, or with an earlier attempt that ran in a PID the test did not kill.
"""

from __future__ import annotations

import os
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

FINAL = frozenset({"done", "failed", "cancelled"})


@dataclass(frozen=True, slots=True)
class Entry:
    """One ledger line: ``job_id attempt pid phase [tag]``."""

    job_id: str
    attempt: int
    pid: int
    phase: str
    tag: str = ""


def read_ledger(path: str) -> list[Entry]:
    """Every complete line of the ledger at ``path`` (none if it does not exist)."""
    if not os.path.exists(path):
        return []
    with open(path) as ledger:
        lines = [line.split() for line in ledger if line.endswith("\n")]
    return [Entry(f[0], int(f[1]), int(f[2]), f[3], f[4] if len(f) > 4 else "") for f in lines if len(f) >= 4]


@dataclass
class History:
    """What the clients saw: acknowledged and indeterminate submits, watcher streams."""

    acked: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> submit reply view
    tags: dict[str, list[str]] = field(default_factory=dict)  # id -> tags submitted under it
    indeterminate: set[str] = field(default_factory=set)  # tags whose submit got no answer
    streams: list[tuple[str, list[dict[str, Any]]]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def acknowledged(self, view: dict[str, Any], tag: str) -> None:
        """A submit answered with a job id."""
        with self._lock:
            self.acked.setdefault(view["id"], view)
            self.tags.setdefault(view["id"], []).append(tag)

    def unanswered(self, tag: str) -> None:
        """A submit whose reply never came (the job may or may not exist)."""
        with self._lock:
            self.indeterminate.add(tag)

    def watched(self, job_id: str, events: list[dict[str, Any]]) -> None:
        """One watcher's complete stream of events for ``job_id``."""
        with self._lock:
            self.streams.append((job_id, events))

    def check(
        self,
        finals: dict[str, dict[str, Any]],
        ledger: list[Entry],
        *,
        exactly_once: bool = False,
        killed: set[int] | frozenset[int] = frozenset(),
        gapless: bool = False,
    ) -> list[str]:
        """Every violation of the properties in the module docstring (empty: clean)."""
        problems: list[str] = []
        problems += self._lost(finals)
        problems += self._unexpected(ledger)
        problems += self._duplicated(finals, ledger)
        problems += self._attempts(finals)
        problems += self._streams(finals, gapless)
        if exactly_once:
            problems += self._exactly_once(finals, ledger, killed)
        return problems

    def _lost(self, finals: dict[str, dict[str, Any]]) -> list[str]:
        problems = []
        for job_id in self.acked:
            view = finals.get(job_id)
            if view is None:
                problems.append(f"lost: {job_id} has no status")
            elif view["state"] not in FINAL:
                problems.append(f"lost: {job_id} is still {view['state']}")
        return problems

    def _unexpected(self, ledger: list[Entry]) -> list[str]:
        return [
            f"unexpected: {entry.job_id} ran (tag {entry.tag!r}) but was never acknowledged"
            for entry in ledger
            if entry.job_id not in self.acked and entry.tag not in self.indeterminate
        ]

    def _duplicated(self, finals: dict[str, dict[str, Any]], ledger: list[Entry]) -> list[str]:
        problems = [
            f"duplicated: {job_id} answers distinct submits {sorted(set(tags))}"
            for job_id, tags in self.tags.items()
            if len(set(tags)) > 1
        ]
        ends = {(e.job_id, e.attempt, e.pid) for e in ledger if e.phase == "end"}
        for job_id, view in finals.items():
            result = view.get("result")
            if view.get("state") != "done" or not isinstance(result, dict) or "attempt" not in result:
                continue
            if result.get("id") != job_id or result["attempt"] != view["attempts"]:
                problems.append(f"duplicated: {job_id} stored the result of attempt {result['attempt']}"
                                f" but ended on attempt {view['attempts']}")  # fmt: skip
            elif ledger and (job_id, result["attempt"], result["pid"]) not in ends:
                problems.append(f"duplicated: {job_id} stored a result with no ledger end")
        return problems

    def _attempts(self, finals: dict[str, dict[str, Any]]) -> list[str]:
        return [
            f"attempts: {job_id} made {view['attempts']} of at most {view['max_attempts']}"
            for job_id, view in finals.items()
            if view.get("max_attempts") is not None and view["attempts"] > view["max_attempts"]
        ]

    def _streams(self, finals: dict[str, dict[str, Any]], gapless: bool) -> list[str]:
        problems = []
        for job_id, events in self.streams:
            seqs = [event["seq"] for event in events]
            if any(b <= a for a, b in zip(seqs, seqs[1:], strict=False)):
                problems.append(f"seq: watcher of {job_id} saw {seqs}")
            elif gapless and any(b != a + 1 for a, b in zip(seqs, seqs[1:], strict=False)):
                problems.append(f"gap: watcher of {job_id} saw {seqs}")
            if not events or events[-1]["state"] not in FINAL:
                problems.append(f"stream: watcher of {job_id} did not end with a final state")
            elif job_id in finals and events[-1]["state"] != finals[job_id]["state"]:
                problems.append(f"stream: watcher of {job_id} ended {events[-1]['state']}, "
                                f"the job ended {finals[job_id]['state']}")  # fmt: skip
            if any(event["state"] in FINAL for event in events[:-1]):
                problems.append(f"stream: watcher of {job_id} saw events after a final state")
        return problems

    def _exactly_once(
        self, finals: dict[str, dict[str, Any]], ledger: list[Entry], killed: set[int] | frozenset[int]
    ) -> list[str]:
        problems = []
        for job_id, view in finals.items():
            if view.get("state") != "done":
                continue
            mine = [e for e in ledger if e.job_id == job_id]
            winning = [e for e in mine if e.phase == "end" and e.attempt == view["attempts"]]
            if len(winning) != 1:
                problems.append(f"once: {job_id} has {len(winning)} ends for its final attempt "
                                f"{view['attempts']}")  # fmt: skip
            earlier = [e for e in mine if e.attempt < view["attempts"] and e.pid not in killed]
            if earlier:
                problems.append(f"once: {job_id} ran an earlier attempt in a pid never killed: {earlier}")
        return problems


def summary(finals: dict[str, dict[str, Any]]) -> Counter[str]:
    """How many jobs ended in each state."""
    return Counter(view["state"] for view in finals.values())
