"""The broker's side of groups: submissions, aggregate events, journal and store (pure).

``BrokerProtocol`` hooks this in thinly: it turns a ``SubmitGroup`` into child ``Submit``
messages (``broker.batches.child_submits``) and admits each as it would a single job, then calls
``create``; every job event it publishes passes through ``on_job``; status reads and
subscriptions for an id that is not a job go to ``snapshot`` and ``republish``.

Events: a group's event has the group id as topic, its own ``seq``, the aggregate state,
``done`` and ``total``, plus ``kind: "group"``, ``size``, ``counts`` (children per state)
and ``child`` (the row of the child whose change caused it). A group snapshot (``JOB``
reply) carries the view in its header and every child row as its payload, so a group of
``MAX_GROUP_SIZE`` children stays within the header bound.

Durability: a live group's record (its children ids) is journaled in the same turn as
its children, so a restarted broker keeps it; a finished group's view and rows are stored
with the results (for a day) and its record leaves the journal.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Final

from broker import protocol as p
from broker.batches import child_submits
from broker.effects import Journal, Publish, StoreResult
from broker.errors import BadArguments
from broker.groups import Child, Group, GroupIndex
from broker.jobs import DEFAULT_TTL_S, Job
from broker.lifecycle import retention_s
from broker.outbox import Outbox
from broker.submission import Submission

GROUP_RETENTION_S: Final = retention_s(DEFAULT_TTL_S)
SEQ_EPOCH_SHIFT: Final = 32

StoredView = Callable[[str], "tuple[dict[str, Any], bytes | None] | None"]


def check_group(
    msg: p.SubmitGroup, check: Callable[[p.Submit], Submission | p.Error], room: int
) -> list[Submission] | p.Error:
    """Every child checked (``check``) before any is admitted: one bad child refuses the group.

    ``room`` is how many more jobs may be queued; a group that does not fit is refused whole.
    """
    try:
        children = child_submits(msg)
    except BadArguments as exc:
        return p.Error(req=msg.req, code="bad_args", message=str(exc))
    checked = []
    for index, child in enumerate(children):
        sub = check(child)
        if isinstance(sub, p.Error):
            return p.Error(req=msg.req, code=sub.code, message=f"job {index}: {sub.message}")
        checked.append(sub)
    if len(checked) > room:
        message = f"the queue has room for {max(room, 0)} more jobs, not {len(checked)}; retry later"
        return p.Error(req=msg.req, code="queue_full", message=message)
    return checked


class GroupDesk:
    """Live groups, their aggregate events and their durable records."""

    def __init__(self, out: Outbox, stored: StoredView) -> None:
        self.out = out
        self.stored = stored
        self.index = GroupIndex()

    def create(
        self, req: int, group_id: str, task: str, views: list[dict[str, Any]], now: float
    ) -> p.Snapshot:
        """Start a group over admitted children (their snapshot views); the reply to ``req``."""
        children = [(view["id"], _child_of(view)) for view in views]
        group = Group.new(group_id, task, children, now + self.out.wall_offset_s)
        self.index.add(group)
        self.out.effects.append(Journal({"op": "put", "job": group.record()}))
        self._changed(group, None, now)
        return self.reply(req, group)

    def reply(self, req: int, group: Group) -> p.Snapshot:
        """A group snapshot: the view as header, the children rows as payload."""
        rows = json.dumps(group.rows(), separators=(",", ":")).encode()
        return p.Snapshot(req=req, job=group.view(self.out.epoch), result=rows)

    def snapshot(self, req: int, group_id: str) -> p.Snapshot | None:
        """The reply to a status read of ``group_id`` if it is a group held in memory."""
        group = self.index.get(group_id)
        return None if group is None else self.reply(req, group)

    def on_job(self, job: Job, now: float) -> None:
        """A job event was published: update the groups it belongs to."""
        for group in self.index.of_child(job.id):
            if group.observe(job.id, str(job.state), job.done, job.total):
                self._changed(group, job.id, now)

    def republish(self, group_id: str, now: float) -> bool:
        """A watcher subscribed to a group: publish its latest event again (same seq)."""
        group = self.index.get(group_id)
        if group is not None:
            self._publish(group, None, now)
        return group is not None

    def restore(self, records: list[dict[str, Any]], jobs: dict[str, Job], now: float) -> None:
        """Rebuild live groups from the journal, after their live children were restored."""
        for record in records:
            children = [(job_id, self._restored_child(job_id, jobs)) for job_id in record["children"]]
            group = Group.new(record["id"], record["task"], children, float(record["created_at"]))
            group.seq = max(int(record.get("seq", 0)), self.out.epoch << SEQ_EPOCH_SHIFT) + 1
            self.index.add(group)
            if group.is_final:
                self._changed(group, None, now)

    def _restored_child(self, job_id: str, jobs: dict[str, Job]) -> Child:
        job = jobs.get(job_id)
        if job is not None:
            return Child(str(job.state), job.done, job.total)
        stored = self.stored(job_id)
        return _child_of(stored[0]) if stored else Child("failed")  # past its retention: lost

    def _changed(self, group: Group, child_id: str | None, now: float) -> None:
        group.seq += 1
        if group.is_final:
            group.finished_at = now + self.out.wall_offset_s
            self._finish(group)
        self._publish(group, child_id, now)

    def _finish(self, group: Group) -> None:
        snapshot = self.reply(0, group)
        self.out.effects.append(StoreResult(group.id, snapshot.job, snapshot.result, GROUP_RETENTION_S,
                                            None, 0.0))  # fmt: skip
        self.out.effects.append(Journal({"op": "end", "id": group.id}))
        self.index.finish(group)

    def _publish(self, group: Group, child_id: str | None, now: float) -> None:
        if not self.out.subscriptions.wanted(group.id.encode()):
            return  # nobody watching: nothing to build
        view = group.view(self.out.epoch)
        extra = {"kind": "group", "size": view["size"], "counts": view["counts"]}
        if child_id is not None:
            extra["child"] = group.status[child_id].row(child_id)
        event = p.Event(
            id=group.id, seq=group.seq, epoch=self.out.epoch, state=view["state"], done=view["done"],
            total=view["total"], message=view["message"], ts=round(now + self.out.wall_offset_s, 3),
            error=view["error"], extra=extra,
        )  # fmt: skip
        self.out.effects.append(Publish(p.encode(event)))


def _child_of(view: dict[str, Any]) -> Child:
    return Child(str(view.get("state", "queued")), _count(view.get("done")), _count(view.get("total")))


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0
