"""Operations against a real broker and workers: list jobs, retry, ``jobcast failed/retry``."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable

import pytest
from helpers import ReadyProcess, raw_dealer
from test_cli import run_cli

from broker import protocol as p
from broker.addresses import endpoints
from broker.client import Client
from broker.errors import BadArguments, BrokerError, JobFailed, UnknownJob


def failed_job(client: Client, args: dict[str, object] | None = None) -> str:
    job = client.submit("fail", args or {})
    with pytest.raises(JobFailed):
        job.result(timeout=20)
    return job.id


def test_jobs_lists_newest_first_with_filters(
    client: Client, start_workers: Callable[..., ReadyProcess]
) -> None:
    start_workers(1)
    first = failed_job(client)
    done = client.submit("echo", {"a": 1})
    assert done.result(timeout=20) == {"a": 1}
    second = failed_job(client, {"x": 1})  # fail() takes no x: a TypeError
    failed = client.jobs(state="failed")
    assert [view["id"] for view in failed] == [second, first]
    assert failed[0]["error"]["type"] == "TypeError" and "traceback" not in failed[0]["error"]
    assert failed[1]["error"] == {"type": "ValueError", "message": "boom"}
    assert all(v["task"] == "fail" and v["attempts"] == 1 and v["finished_at"] for v in failed)
    assert [view["id"] for view in client.jobs()] == [second, done.id, first]
    assert [view["id"] for view in client.jobs(task="echo", state="done")] == [done.id]
    assert client.jobs(state="running") == []
    assert [view["id"] for view in client.jobs(limit=1)] == [second]


def test_bad_filters_are_refused_and_the_broker_keeps_serving(client: Client, base_url: str) -> None:
    with pytest.raises(BadArguments, match="state must be one of"):
        client.jobs(state="lost")
    with pytest.raises(BadArguments, match="limit must be"):
        client.jobs(limit=1001)
    with raw_dealer(endpoints(base_url).clients) as dealer:  # past the client's own check
        dealer.send_multipart(p.encode(p.ListJobs(req=5, limit=10**6)))
        assert dealer.poll(10_000)
        reply = p.decode(dealer.recv_multipart())
    assert isinstance(reply, p.Error) and reply.code == "bad_args" and "limit" in reply.message
    queued = client.submit("echo", {"q": 1})
    assert [view["id"] for view in client.jobs(state="queued")] == [queued.id]


def test_retry_resubmits_a_failed_job(client: Client, start_workers: Callable[..., ReadyProcess]) -> None:
    start_workers(1)
    failed_id = failed_job(client, {"x": 2})
    again = client.retry(failed_id)
    assert again.id != failed_id
    with pytest.raises(JobFailed, match="unexpected keyword argument 'x'"):
        again.result(timeout=20)
    assert [view["id"] for view in client.jobs(state="failed")] == [again.id, failed_id]
    done = client.submit("echo", {"b": 2})
    done.result(timeout=20)
    with pytest.raises(BrokerError, match="is done: only failed or cancelled"):
        client.retry(done.id)
    with pytest.raises(UnknownJob):
        client.retry("Z" * 22)


def test_retry_of_a_cancelled_job_runs_it(client: Client, start_workers: Callable[..., ReadyProcess]) -> None:
    cancelled = client.submit("echo", {"c": 3})
    assert client.cancel(cancelled.id)["state"] == "cancelled"
    start_workers(1)
    assert client.retry(cancelled.id).result(timeout=20) == {"c": 3}


def test_retry_after_a_broker_restart_reads_the_stored_args(
    start_broker: Callable[..., ReadyProcess], start_workers: Callable[..., ReadyProcess], base_url: str
) -> None:
    first = start_broker()
    with Client(base_url, timeout_s=10) as client:
        cancelled = client.submit("echo", {"kept": "on disk"}, scope="t1", priority="low")
        client.cancel(cancelled.id)
    first.signal(signal.SIGTERM)
    first.wait(timeout_s=10)
    start_broker()
    start_workers(1)
    with Client(base_url, timeout_s=10) as client:
        again = client.retry(cancelled.id)
        assert again.view["priority"] == "low"
        assert again.result(timeout=20) == {"kept": "on disk"}


def test_cli_failed_and_retry(
    broker: ReadyProcess, base_url: str, part_env: dict[str, str], client: Client,
    start_workers: Callable[..., ReadyProcess],
) -> None:  # fmt: skip
    start_workers(1)
    failed_id = failed_job(client)
    listed = run_cli(base_url, part_env, "failed")
    assert listed.returncode == 0, listed.stderr
    line = listed.stdout.strip()
    assert line.startswith(f"{failed_id}  fail  ") and "attempts 1  ValueError: boom" in line
    as_json = json.loads(run_cli(base_url, part_env, "failed", "--task", "fail", "--json").stdout)
    assert [view["id"] for view in as_json] == [failed_id]
    assert json.loads(run_cli(base_url, part_env, "failed", "--task", "echo", "--json").stdout) == []
    retried = run_cli(base_url, part_env, "retry", failed_id)
    assert retried.returncode == 0, retried.stderr
    new_id = retried.stdout.strip()
    assert len(new_id) == 22 and new_id != failed_id
    unknown = run_cli(base_url, part_env, "retry", "Q" * 22)
    assert unknown.returncode == 1 and "no such job" in unknown.stderr
    bad = run_cli(base_url, part_env, "failed", "--limit", "0")
    assert bad.returncode == 2 and "limit must be" in bad.stderr


def test_async_client_lists_and_retries(
    client: Client, base_url: str, start_workers: Callable[..., ReadyProcess]
) -> None:
    import asyncio

    from broker.client import AsyncClient

    start_workers(1)
    failed_id = failed_job(client)

    async def scenario() -> tuple[list[dict[str, object]], dict[str, object]]:
        async_client = AsyncClient(base_url, timeout_s=10)
        try:
            listed = await async_client.jobs(state="failed", task="fail", limit=10)
            with pytest.raises(BadArguments):
                await async_client.jobs(state="nope")
            again = await async_client.retry(failed_id)
            return listed, await async_client.wait(again.id, timeout=20)
        finally:
            await async_client.aclose()

    listed, final = asyncio.run(scenario())
    assert [view["id"] for view in listed] == [failed_id]
    assert final["state"] == "failed" and final["id"] != failed_id
