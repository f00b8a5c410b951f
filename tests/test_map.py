"""Fan-out and fan-in on a real broker and worker pool: batched ``map`` and ``results``."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from helpers import ReadyProcess, waited_across_a_restart

from broker.client import AsyncClient, Client
from broker.errors import BadArguments, JobCancelled, JobFailed, QueueFull, UnknownJob


def test_map_over_2500_args_crosses_batches_and_keeps_order(
    client: Client, start_workers: Callable[..., ReadyProcess]
) -> None:
    start_workers(2)
    args = [{"i": i} for i in range(2500)]
    assert client.map("echo", args, timeout=120) == args
    assert client.stats()["submitted"] == 2500
    again = client.map("echo", args[:1200], timeout=60)  # every one a fresh cached result now
    assert again == args[:1200]
    stats = client.stats()
    assert stats["submitted"] == 2500 and stats["cache_hits"] == 1200


def test_map_shares_one_job_between_identical_args(
    client: Client, start_workers: Callable[..., ReadyProcess]
) -> None:
    start_workers(1)
    args = [{"n": 1}, {"n": 2}, {"n": 1}, {"n": 2}, {"n": 3}]
    assert client.map("echo", args, timeout=30, ttl=0) == args
    assert client.stats()["submitted"] == 3


def test_map_refuses_bad_args_before_sending_anything(client: Client) -> None:
    with pytest.raises(BadArguments, match="job 2: args must be a JSON object"):
        client.map("echo", [{"n": 1}, {"n": 2}, ["no"]])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="unknown submit option"):
        client.map("echo", [{"n": 1}], colour="red")
    assert client.stats()["submitted"] == 0
    assert client.map("echo", []) == []


def test_a_refused_item_raises_like_a_lone_submit_and_the_others_are_queued(
    start_broker: Callable[..., ReadyProcess], part_env: dict[str, str], base_url: str
) -> None:
    part_env["JOBCAST_MAX_LIVE_JOBS"] = "5"
    start_broker()
    with Client(base_url, timeout_s=10) as client:
        with pytest.raises(QueueFull, match="job 5: the queue is full"):
            client.map("echo", [{"i": i} for i in range(8)], timeout=5)
        stats = client.stats()
        assert stats["submitted"] == 5 and stats["queued"] == 5
        with pytest.raises(QueueFull):
            client.submit("echo", {"i": 99})
        assert client.submit("echo", {"i": 0}).status()["state"] == "queued"  # joins: still served


def test_results_in_order_and_the_first_failure_in_order_raises(
    client: Client, start_workers: Callable[..., ReadyProcess]
) -> None:
    start_workers(2)
    done = [client.submit("echo", {"k": k}).id for k in range(3)]
    failed = client.submit("fail").id
    cancelled = client.submit("echo", {"later": 1}, delay=3600).id
    client.cancel(cancelled)
    assert client.results(done, timeout=30) == [{"k": 0}, {"k": 1}, {"k": 2}]
    with pytest.raises(JobFailed, match="boom") as failure:
        client.results([done[0], failed, cancelled], timeout=30)
    assert failure.value.job_id == failed
    with pytest.raises(JobCancelled) as cancel:
        client.results([done[1], cancelled, failed], timeout=30)
    assert cancel.value.job_id == cancelled
    with pytest.raises(UnknownJob):
        client.results([done[0], "A" * 22], timeout=30)
    assert client.results([], timeout=1) == []


def test_results_time_out_on_a_job_that_does_not_end(
    client: Client, start_workers: Callable[..., ReadyProcess]
) -> None:
    start_workers(1)
    waiting = client.submit("echo", {"later": 2}, delay=3600).id
    quick = client.submit("echo", {"now": 1}).id
    with pytest.raises(TimeoutError):
        client.results([quick, waiting], timeout=0.5)
    assert client.results([quick], timeout=30) == [{"now": 1}]  # the client still works


def test_async_map_and_results(
    base_url: str, broker: ReadyProcess, start_workers: Callable[..., ReadyProcess]
) -> None:
    start_workers(2)

    async def scenario() -> tuple[list[Any], list[Any], str, str]:
        client = AsyncClient(base_url, timeout_s=10)
        try:
            args = [{"a": i} for i in range(1500)]
            mapped = await client.map("echo", args, timeout=120)
            jobs = [await client.submit("echo", {"b": i}) for i in range(3)]
            fetched = await client.results([job.id for job in jobs], timeout=30)
            failed = await client.submit("fail")
            with pytest.raises(JobFailed) as failure:
                await client.results([jobs[0].id, failed.id], timeout=30)
            later = await client.submit("echo", {"later": 3}, delay=3600)
            await client.cancel(later.id)
            with pytest.raises(JobCancelled) as cancel:
                await client.results([later.id, jobs[1].id], timeout=30)
            with pytest.raises(BadArguments, match="job 1: args must not contain NaN"):
                await client.map("echo", [{"n": 1}, {"bad": float("nan")}])
            assert failure.value.job_id == failed.id and cancel.value.job_id == later.id
            return mapped, fetched, failed.id, later.id
        finally:
            await client.aclose()

    mapped, fetched, failed_id, cancelled_id = asyncio.run(scenario())
    assert mapped == [{"a": i} for i in range(1500)]
    assert fetched == [{"b": 0}, {"b": 1}, {"b": 2}]
    assert failed_id and cancelled_id and failed_id != cancelled_id


def test_results_survive_a_broker_restart(
    start_broker: Callable[..., ReadyProcess], start_workers: Callable[..., ReadyProcess], base_url: str
) -> None:
    first = start_broker()
    with Client(base_url, timeout_s=10) as client:
        ids = [client.submit("echo", {"across": i}).id for i in range(3)]

    def restart() -> None:
        start_broker()
        start_workers(1)

    results = waited_across_a_restart(
        base_url, first, restart, 3, lambda waiter: waiter.results(ids, timeout=40)
    )
    assert results == [[{"across": 0}, {"across": 1}, {"across": 2}]]  # one WAITS for the three


def test_run_submits_and_waits_in_one_request(
    client: Client, start_workers: Callable[..., ReadyProcess], base_url: str
) -> None:
    start_workers(1)
    assert client.run("echo", {"once": 1}, timeout=30) == {"once": 1}
    assert client.run("echo", {"once": 1}, timeout=30) == {"once": 1}  # a cache hit: final at once
    with pytest.raises(JobFailed, match="boom"):
        client.run("fail", timeout=30)
    with pytest.raises(TimeoutError):
        client.run("echo", {"later": 4}, delay=3600, timeout=0.5)
    with pytest.raises(TypeError, match="unknown submit option"):
        client.run("echo", {}, on_done=print)
    stats = client.stats()
    assert stats["submitted"] == 3 and stats["cache_hits"] == 1 and stats["waiting_clients"] == 1

    async def scenario() -> tuple[Any, str]:
        aclient = AsyncClient(base_url, timeout_s=10)
        try:
            result = await aclient.run("echo", {"async": 1}, timeout=30)
            with pytest.raises(JobFailed) as failure:
                await aclient.run("fail", force=True, timeout=30)
            return result, failure.value.job_id
        finally:
            await aclient.aclose()

    result, failed_id = asyncio.run(scenario())
    assert result == {"async": 1} and client.status(failed_id)["state"] == "failed"


def test_run_survives_a_broker_restart(
    start_broker: Callable[..., ReadyProcess], start_workers: Callable[..., ReadyProcess], base_url: str
) -> None:
    first = start_broker()  # no workers: the job waits queued

    def restart() -> None:
        start_broker()
        start_workers(1)

    results = waited_across_a_restart(
        base_url, first, restart, 1, lambda runner: runner.run("echo", {"across": "restart"}, timeout=40)
    )
    assert results == [{"across": "restart"}]
