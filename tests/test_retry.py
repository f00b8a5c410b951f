"""Pure tests of retries: ``broker.retry`` and the core's RETRY reply (fake clock)."""

from __future__ import annotations

import pytest
from test_core import C1, C2, W1, Harness, assert_sent, finish, run_to_assign
from test_listing import fail_job

from broker import protocol as p
from broker.jobs import State
from broker.retry import resubmission, retry_spec


@pytest.fixture
def core() -> Harness:
    return Harness()


def retry(core: Harness, job_id: str, now: float) -> p.Message:
    core.req += 1
    effects = core.client(C2, p.Retry(req=core.req, id=job_id), now)
    replies = [m for m in (p.decode(e.frames) for e in effects if getattr(e, "to", None) == C2)]
    assert len(replies) == 1
    return replies[0]


def test_retry_resubmits_the_same_work_under_a_new_id(core: Harness) -> None:
    failed_id = fail_job(core, 0.0, args={"region": "eu"}, scope="tenant-1", priority="high")
    core.worker(W1, p.Heartbeat(), 4.9)  # W1 heard lately: fit for work
    reply = retry(core, failed_id, 5.0)
    assert isinstance(reply, p.Snapshot)
    new = core.core.jobs[reply.job["id"]]
    old = core.core.jobs[failed_id]
    assert new.id != failed_id and new.state is State.RUNNING  # W1 was idle: dispatched
    assert (new.task, new.args, new.scope, new.priority) == (old.task, old.args, old.scope, old.priority)
    assert new.cache_key == old.cache_key and new.attempts == 1


def test_retry_forces_past_a_cached_result(core: Harness) -> None:
    job_id, assign = run_to_assign(core, 0.0, args={"n": 9})
    finish(core, W1, assign, 1.0)
    cancelled = core.submit_id(C1, 2.0, args={"n": 9}, force=True, delay_s=60.0)
    core.client(C1, p.Cancel(req=99, id=cancelled), 3.0)
    reply = retry(core, cancelled, 4.0)
    assert isinstance(reply, p.Snapshot) and not reply.job.get("cached")
    assert reply.job["id"] not in (job_id, cancelled)


@pytest.mark.parametrize("state", ["queued", "running", "done"])
def test_retry_refuses_a_job_that_is_not_failed_or_cancelled(core: Harness, state: str) -> None:
    job_id, assign = run_to_assign(core, 0.0)
    if state == "done":
        finish(core, W1, assign, 1.0)
    if state == "queued":
        job_id = core.submit_id(C1, 1.0, args={"other": 1}, delay_s=50.0)
    reply = retry(core, job_id, 2.0)
    assert isinstance(reply, p.Error) and reply.code == "not_retryable"
    assert f"is {state}" in reply.message
    assert core.status(job_id, 3.0).job["state"] == state  # nothing changed


def test_retry_of_an_unknown_or_forged_id(core: Harness) -> None:
    for job_id in ("A" * 22, "../../etc", ""):
        reply = retry(core, job_id, 1.0)
        assert isinstance(reply, p.Error) and reply.code == "unknown_job"


def test_retry_reads_the_stored_spec_once_the_job_left_memory(core: Harness) -> None:
    failed_id = fail_job(core, 0.0, args={"region": "us"})
    stored = [e for e in core.history if getattr(e, "job_id", None) == failed_id]
    assert stored and stored[-1].spec["args"] == '{"region":"us"}'  # type: ignore[attr-defined]
    core.results.specs = {failed_id: stored[-1].spec}  # type: ignore[attr-defined]
    del core.core.jobs[failed_id]
    reply = retry(core, failed_id, 5.0)
    assert isinstance(reply, p.Snapshot) and reply.job["task"] == "echo"


def test_spec_has_args_only_when_retryable() -> None:
    assert resubmission(1, "x", {"state": "done"}) == p.Error(
        req=1, code="not_retryable", message="job x is done: only failed or cancelled jobs can be retried"
    )
    broken = resubmission(2, "x", {"state": "failed"})
    assert isinstance(broken, p.Error) and "unreadable" in broken.message


def test_retry_spec_of_a_live_job_is_its_state_only(core: Harness) -> None:
    job_id = core.submit_id(C1, 0.0)
    assert retry_spec(core.core.jobs[job_id]) == {"state": "queued"}
    assert_sent(core.client(C2, p.Retry(req=50, id=job_id), 1.0), C2, p.Error, code="not_retryable")
