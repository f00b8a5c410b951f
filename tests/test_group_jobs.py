"""Real broker + real workers + Client: job.log lines and groups of jobs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from helpers import ReadyProcess, wait_for

from broker.client import Client
from broker.errors import BadArguments, JobFailed

LOG_MARK = "line {} <b>&amp;</b>"


def test_log_lines_arrive_in_order_and_stay_in_the_final_view(
    client: Client, start_workers: Callable[..., ReadyProcess]
) -> None:
    start_workers(1)
    job = client.submit("chatty", {"lines": 30, "seconds": 0.6})
    seen: list[str] = []
    count = 0
    for event in job.events():
        if "log" in event:
            first = event["log_count"] - len(event["log"])
            seen.extend(event["log"][max(0, count - first) :])  # append unseen indexes only
            count = event["log_count"]
    assert job.result(timeout=30) == {"lines": 30}
    expected = [LOG_MARK.format(i) for i in range(1, 31)]
    assert seen == expected
    final = client.status(job.id)
    assert final["state"] == "done"
    assert final["log"] == expected and final["log_count"] == 30


def test_last_log_lines_arrive_with_a_failure(
    client: Client, start_workers: Callable[..., ReadyProcess]
) -> None:
    start_workers(1)
    job = client.submit("chatty", {"lines": 3, "fail": True})
    with pytest.raises(JobFailed, match="on purpose"):
        job.result(timeout=30)
    view = client.status(job.id)
    assert view["log"][-1] == "about to fail"
    assert view["log_count"] == 4


def test_a_task_logging_in_a_loop_is_rate_limited(
    client: Client, start_workers: Callable[..., ReadyProcess]
) -> None:
    start_workers(1)
    job = client.submit("chatty", {"lines": 2000})
    assert job.result(timeout=60) == {"lines": 2000}
    view = client.status(job.id)
    assert view["log_count"] < 200  # the burst, then a marker: not 2000 lines
    assert any("lines dropped" in line for line in view["log"])


def test_group_of_ten_on_two_slots_reaches_its_total(
    client: Client, start_workers: Callable[..., ReadyProcess]
) -> None:
    start_workers(2)
    group = client.group("step", [{"n": i} for i in range(10)])
    assert len(group.job_ids) == 10 and len(set(group.job_ids)) == 10
    assert group.id not in group.job_ids
    events = list(group.events())
    last = events[-1]
    assert last["state"] == "done" and last["kind"] == "group"
    assert last["done"] == last["total"] == 40  # 10 children x 4 steps
    assert last["counts"]["done"] == 10
    assert any(event.get("child") for event in events)  # per-child drill-down in the stream
    assert group.results(timeout=30) == [{"n": i, "rows": i * 10} for i in range(10)]
    view = group.status()
    assert view["state"] == "done"
    assert [row["id"] for row in view["children"]] == group.job_ids
    assert all(row["state"] == "done" and row["done"] == row["total"] == 4 for row in view["children"])


def test_a_failing_child_fails_the_group_after_all_finish(
    client: Client, start_workers: Callable[..., ReadyProcess]
) -> None:
    start_workers(2)
    args = [{"n": i, "fail": i == 1} for i in range(4)]
    group = client.group("step", args)
    last = list(group.events())[-1]
    assert last["state"] == "failed"
    assert last["counts"] == {"queued": 0, "running": 0, "done": 3, "failed": 1, "cancelled": 0}
    assert last["error"]["type"] == "ChildFailed"
    with pytest.raises(JobFailed, match="step 1 failed"):
        group.results(timeout=30)
    assert client.status(group.job_ids[3])["state"] == "done"


def test_a_group_survives_a_broker_restart(
    start_broker: Callable[..., ReadyProcess],
    base_url: str,
    start_workers: Callable[..., ReadyProcess],
) -> None:
    broker = start_broker()
    with Client(base_url, timeout_s=10) as client:
        group = client.group("step", [{"n": i} for i in range(3)])
    broker.stop()
    start_broker()
    start_workers(2)
    with Client(base_url, timeout_s=10) as client:
        view = wait_for(lambda: _final(client.status(group.id)), timeout_s=30)
        assert view["state"] == "done" and view["done"] == view["total"] == 12
        assert [row["id"] for row in view["children"]] == group.job_ids


def _final(view: dict[str, Any]) -> dict[str, Any] | None:
    return view if view["state"] in ("done", "failed", "cancelled") else None


def test_bad_group_args_submit_nothing(client: Client, start_workers: Callable[..., ReadyProcess]) -> None:
    start_workers(1)
    with pytest.raises(BadArguments, match="job 1: args must be a JSON object"):
        client.group("echo", [{"a": 1}, ["not", "an", "object"]])  # type: ignore[list-item]
    with pytest.raises(BadArguments, match="1..1000"):
        client.group("echo", [])
    assert client.stats()["submitted"] == 0
    group = client.group("echo", [{"a": 1}])
    assert group.results(timeout=30) == [{"a": 1}]


def test_cached_children_finish_a_group_at_once(
    client: Client, start_workers: Callable[..., ReadyProcess]
) -> None:
    start_workers(2)
    first = client.group("step", [{"n": 1}, {"n": 2}])
    first.results(timeout=30)
    second = client.group("step", [{"n": 1}, {"n": 2}])
    assert second.view["state"] == "done" and second.job_ids == first.job_ids
