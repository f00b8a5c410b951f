"""Pure tests of job listings: ``broker.listing`` and the core's LIST reply (fake clock)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from test_core import C1, C2, W1, Harness, assert_sent, finish, run_to_assign

from broker import protocol as p
from broker.errors import BadArguments
from broker.jobs import Job, State
from broker.listing import MAX_LIST_LIMIT, check_filters, list_view, select_jobs


@pytest.fixture
def core() -> Harness:
    return Harness()


def job(n: int, state: State = State.QUEUED, task: str = "echo", finished_at: float | None = None) -> Job:
    return Job(id=f"j{n}", task=task, args=b"{}", cache_key=f"k{n}", created_at=float(n),
               state=state, finished_at=finished_at)  # fmt: skip


def listing(broker: Harness, now: float, **filters: Any) -> list[dict[str, Any]]:
    broker.req += 1
    effects = broker.client(C2, p.ListJobs(req=broker.req, **filters), now)
    return list(json.loads(assert_sent(effects, C2, p.JobList).views))


def fail_job(broker: Harness, now: float, **submit: Any) -> str:
    job_id, assign = run_to_assign(broker, now, max_attempts=1, **submit)
    error = {"type": "ValueError", "message": "boom", "traceback": "Traceback ..."}
    broker.worker(W1, p.Failed(id=job_id, attempt=assign.attempt, error=error), now + 1)
    return job_id


@pytest.mark.parametrize(
    ("state", "task", "limit", "phrase"),
    [
        ("lost", None, 10, "state must be one of"),
        (None, "", 10, "task must be a name"),
        (None, "x" * 201, 10, "task must be a name"),
        (None, 3, 10, "task must be a name"),
        (None, None, 0, "limit must be"),
        (None, None, MAX_LIST_LIMIT + 1, "limit must be"),
        (None, None, True, "limit must be"),
        (None, None, "5", "limit must be"),
    ],
)
def test_bad_filters_are_refused(state: Any, task: Any, limit: Any, phrase: str) -> None:
    with pytest.raises(BadArguments, match=phrase):
        check_filters(state, task, limit)
    check_filters("failed", "echo", MAX_LIST_LIMIT)  # a good one still passes


def test_select_orders_finished_by_end_and_live_by_submission() -> None:
    old_fail = job(1, State.FAILED, finished_at=50.0)
    new_done = job(2, State.DONE, finished_at=60.0)
    queued = job(55)
    running = job(40, State.RUNNING)
    everything = [old_fail, new_done, queued, running]
    chosen = select_jobs(everything, [new_done, old_fail])
    assert [j.id for j in chosen] == ["j2", "j55", "j1", "j40"]


def test_select_filters_state_task_and_limit() -> None:
    finished = [job(n, State.FAILED, task="a" if n % 2 else "b", finished_at=100.0 - n) for n in range(10)]
    live = [job(20), job(21, task="a")]
    chosen = select_jobs([*finished, *live], finished, state="failed", task="a", limit=3)
    assert [j.id for j in chosen] == ["j1", "j3", "j5"]
    assert [j.id for j in select_jobs([*finished, *live], finished, state="queued", task="a")] == ["j21"]


def test_list_view_drops_the_traceback_only() -> None:
    failed = job(1, State.FAILED, finished_at=2.0)
    failed.error = {"type": "KeyError", "message": "'x'", "traceback": "long"}
    view = list_view(failed, epoch=3)
    assert view["error"] == {"type": "KeyError", "message": "'x'"}
    assert view["task"] == "echo" and view["state"] == "failed" and view["epoch"] == 3


def test_core_lists_newest_first_with_filters(core: Harness) -> None:
    first = fail_job(core, 0.0, args={"n": 1})
    done_id, assign = run_to_assign(core, 10.0, args={"n": 2})
    finish(core, W1, assign, 11.0)
    second = fail_job(core, 20.0, args={"n": 3})
    queued = core.submit_id(C1, 30.0, args={"n": 4}, task="report", delay_s=100.0)
    views = listing(core, 31.0)
    assert [v["id"] for v in views] == [queued, second, done_id, first]
    failed = listing(core, 31.0, state="failed")
    assert [v["id"] for v in failed] == [second, first]
    assert failed[0]["error"] == {"type": "ValueError", "message": "boom"}
    assert failed[0]["attempts"] == 1 and failed[0]["finished_at"] is not None
    assert [v["id"] for v in listing(core, 31.0, task="report")] == [queued]
    assert [v["id"] for v in listing(core, 31.0, state="failed", limit=1)] == [second]


def test_core_refuses_bad_filters_and_keeps_serving(core: Harness) -> None:
    fail_job(core, 0.0)
    effects = core.client(C2, p.ListJobs(req=7, state="lost"), 1.0)
    error = assert_sent(effects, C2, p.Error, req=7, code="bad_args")
    assert "state must be one of" in error.message
    effects = core.client(C2, p.ListJobs(req=8, limit=5000), 1.0)
    assert_sent(effects, C2, p.Error, req=8, code="bad_args")
    assert len(listing(core, 2.0, state="failed")) == 1
