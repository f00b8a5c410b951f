"""Groups: many jobs submitted together, watched as one bar (pure).

A group has its own unguessable id (the same shape as a job id), the task, and its
children's job ids in submission order. A child may be shared: it can coalesce with an
identical job already running, or be answered from the result cache (then it is final at
once); two args objects of one group that are identical share one job.

State: ``queued`` while no child has left the queue, ``running`` until every child is
final, then ``done`` if every child is done, ``failed`` if any failed, else ``cancelled``.
The group's ``done``/``total`` are the sums of its children's ``done``/``total``; a child
that has not reported a total yet counts as the mean total of those that have (1 when
none has), and a finished child that never reported progress counts 1 of 1. So the bar
reaches ``total`` exactly when every child is done.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final

MAX_GROUP_SIZE: Final = 1000
MAX_FINISHED_GROUPS: Final = 1000  # kept in memory; older ones are read from the store
STATES: Final = ("queued", "running", "done", "failed", "cancelled")
FINAL: Final = frozenset({"done", "failed", "cancelled"})


@dataclass(slots=True)
class Child:
    """What a group knows of one child job."""

    state: str
    done: int = 0
    total: int = 0

    def row(self, job_id: str) -> dict[str, Any]:
        """The child as watchers see it."""
        return {"id": job_id, "state": self.state, "done": self.done, "total": self.total}


@dataclass(slots=True)
class Group:
    """One group: its children's latest figures and its own event sequence."""

    id: str
    task: str
    children: list[str]
    created_at: float
    status: dict[str, Child] = field(default_factory=dict)
    seq: int = 0
    finished_at: float | None = None
    final_children: int = 0  # distinct children in a final state, kept up to date by observe

    @classmethod
    def new(cls, group_id: str, task: str, children: list[tuple[str, Child]], now_wall: float) -> Group:
        """A group of ``(job id, its figures)`` in submission order."""
        group = cls(group_id, task, [job_id for job_id, _ in children], now_wall)
        for job_id, child in children:
            group.status.setdefault(job_id, Child("queued"))
            group.observe(job_id, child.state, child.done, child.total)
        return group

    @property
    def state(self) -> str:
        """The group's state, from its children's (see the module docstring)."""
        return group_state(child.state for child in self.status.values())

    @property
    def is_final(self) -> bool:
        """Whether every child reached a final state (cheap: no scan)."""
        return self.final_children == len(self.status)

    def observe(self, job_id: str, state: str, done: int, total: int) -> bool:
        """Record a child's latest figures; whether anything changed."""
        old = self.status.get(job_id)
        new = Child(state, done, total)
        if old is None or old == new:
            return False
        self.final_children += (state in FINAL) - (old.state in FINAL)
        self.status[job_id] = new
        return True

    def figures(self) -> tuple[int, int]:
        """The aggregate ``(done, total)``."""
        return aggregate(self.status[job_id] for job_id in self.children)

    def counts(self) -> dict[str, int]:
        """How many children are in each state (a shared child counts once per place)."""
        counts = dict.fromkeys(STATES, 0)
        for job_id in self.children:
            counts[self.status[job_id].state] = counts.get(self.status[job_id].state, 0) + 1
        return counts

    def rows(self) -> list[dict[str, Any]]:
        """Every child, in submission order."""
        return [self.status[job_id].row(job_id) for job_id in self.children]

    def view(self, epoch: int) -> dict[str, Any]:
        """The group as users see it (without its children rows)."""
        done, total = self.figures()
        counts = self.counts()
        finished = sum(counts[state] for state in FINAL)
        return {
            "id": self.id, "kind": "group", "task": self.task, "state": self.state,
            "done": done, "total": total, "size": len(self.children), "counts": counts,
            "message": f"{finished} of {len(self.children)} jobs finished",
            "eta_s": None, "seq": self.seq, "epoch": epoch, "attempts": 0,
            "created_at": self.created_at, "finished_at": self.finished_at,
            "error": self.error(counts),
        }  # fmt: skip

    def error(self, counts: dict[str, int]) -> dict[str, str] | None:
        """Why a finished group did not succeed, or None."""
        if not self.is_final or self.state == "done":
            return None
        failed, cancelled = counts["failed"], counts["cancelled"]
        kind = "ChildFailed" if failed else "ChildCancelled"
        message = f"{failed} failed, {cancelled} cancelled of {len(self.children)} jobs"
        return {"type": kind, "message": message, "traceback": ""}

    def record(self) -> dict[str, Any]:
        """The live group as a journal record (children ids only: their jobs are journaled)."""
        return {"kind": "group", "id": self.id, "task": self.task, "children": self.children,
                "created_at": self.created_at, "seq": self.seq}  # fmt: skip


def group_state(states: Iterable[str]) -> str:
    """``queued``/``running`` until all are final; then ``done``, ``failed`` or ``cancelled``."""
    seen = set(states)
    if not seen or seen == {"queued"}:
        return "queued"
    if not seen <= FINAL:
        return "running"
    if seen == {"done"}:
        return "done"
    return "failed" if "failed" in seen else "cancelled"


def aggregate(children: Iterable[Child]) -> tuple[int, int]:
    """Summed ``(done, total)``; unknown totals count as the mean known one (see above)."""
    items = list(children)
    known = [child.total for child in items if child.total > 0]
    mean = round(sum(known) / len(known)) if known else 1
    done = total = 0
    for child in items:
        if child.total > 0:
            done, total = done + min(child.done, child.total), total + child.total
        elif child.state == "done":
            done, total = done + mean, total + mean
        else:
            total += mean
    return done, total


class GroupIndex:
    """Live groups by id and by child, plus a bounded memory of finished ones."""

    def __init__(self) -> None:
        self.live: dict[str, Group] = {}
        self.finished: OrderedDict[str, Group] = OrderedDict()
        self.by_child: dict[str, set[str]] = {}

    def get(self, group_id: str) -> Group | None:
        """A live or recently finished group."""
        return self.live.get(group_id) or self.finished.get(group_id)

    def add(self, group: Group) -> None:
        """Track a new (or restored) live group."""
        self.live[group.id] = group
        for job_id in group.children:
            self.by_child.setdefault(job_id, set()).add(group.id)

    def of_child(self, job_id: str) -> list[Group]:
        """The live groups that have ``job_id`` as a child."""
        ids = self.by_child.get(job_id)
        return [self.live[group_id] for group_id in ids] if ids else []

    def finish(self, group: Group) -> None:
        """The group is final: stop tracking its children; keep it for status reads."""
        self.live.pop(group.id, None)
        for job_id in group.children:
            ids = self.by_child.get(job_id)
            if ids is not None:
                ids.discard(group.id)
                if not ids:
                    del self.by_child[job_id]
        self.finished[group.id] = group
        while len(self.finished) > MAX_FINISHED_GROUPS:
            self.finished.popitem(last=False)
