"""The report cache and coalescing, on a real broker and real worker processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable

import pytest
from helpers import ReadyProcess, wait_for

from broker.client import Client
from broker.errors import BadArguments, PayloadTooLarge

HERD_CLIENT = """
import json, os, sys, time
from broker.client import Client
url, ledger, go = sys.argv[1:4]
with Client(url, timeout_s=30) as client:
    print("ready", flush=True)
    while not os.path.exists(go):
        time.sleep(0.005)
    job = client.submit("ledger", {"path": ledger, "seconds": 1.5})
    print(json.dumps({"id": job.id, "result": job.result(timeout=30)}), flush=True)
"""


def ledger_lines(path: str) -> list[list[str]]:
    if not os.path.exists(path):
        return []
    with open(path) as ledger:
        return [line.split() for line in ledger if line.strip()]


def ends(path: str) -> list[list[str]]:
    return [line for line in ledger_lines(path) if line[3] == "end"]


def test_herd_of_50_processes_shares_one_run_then_hits_the_cache(
    client: Client,
    start_workers: Callable[..., ReadyProcess],
    base_url: str,
    tmpdir_short: str,
    part_env: dict[str, str],
) -> None:
    start_workers(2)
    ledger, go = os.path.join(tmpdir_short, "ledger"), os.path.join(tmpdir_short, "go")
    env = {**os.environ, **part_env}
    herd = [
        subprocess.Popen(
            [sys.executable, "-c", HERD_CLIENT, base_url, ledger, go],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(50)
    ]
    try:
        assert all(proc.stdout and proc.stdout.readline() == "ready\n" for proc in herd)
        open(go, "w").close()
        outputs = [json.loads(proc.communicate(timeout=60)[0]) for proc in herd]
    finally:
        for proc in herd:
            proc.kill()
            proc.wait()
    assert len({out["id"] for out in outputs}) == 1, "all 50 share one job"
    assert len({json.dumps(out["result"]) for out in outputs}) == 1
    assert len(ends(ledger)) == 1, "exactly one execution"
    stats = client.stats()
    assert stats["submitted"] == 1 and stats["coalesced"] + stats["cache_hits"] == 49
    assert client.status(outputs[0]["id"])["watchers"] == 1 + stats["coalesced"]

    again = client.submit("ledger", {"path": ledger, "seconds": 1.5})
    assert again.cached and again.view["state"] == "done"
    assert again.view["result"] == outputs[0]["result"]
    assert len(ledger_lines(ledger)) == 2, "a cache hit runs nothing"


def test_force_scope_and_ttl(
    client: Client, start_workers: Callable[..., ReadyProcess], tmpdir_short: str
) -> None:
    start_workers(1)
    ledger = os.path.join(tmpdir_short, "ledger")
    args = {"path": ledger}
    first = client.submit("ledger", args)
    first.result(timeout=10)
    assert client.submit("ledger", args).cached
    forced = client.submit("ledger", args, force=True)
    assert not forced.cached and forced.id != first.id
    forced.result(timeout=10)
    other_scope = client.submit("ledger", args, scope="tenant-b")
    assert not other_scope.cached
    other_scope.result(timeout=10)
    assert len(ends(ledger)) == 3

    short = client.submit("ledger", {"path": ledger, "seconds": 0.01}, ttl=0.5)
    short.result(timeout=10)
    wait_for(
        lambda: not client.submit("ledger", {"path": ledger, "seconds": 0.01}, ttl=0.5).cached,
        timeout_s=5,
        interval_s=0.1,
    )


def test_ttl_zero_and_failures_are_never_cached(
    client: Client, start_workers: Callable[..., ReadyProcess], tmpdir_short: str
) -> None:
    start_workers(1)
    ledger = os.path.join(tmpdir_short, "ledger")
    client.submit("ledger", {"path": ledger}, ttl=0).result(timeout=10)
    second = client.submit("ledger", {"path": ledger}, ttl=0)
    assert not second.cached
    second.result(timeout=10)
    failed = client.submit("fail", {})
    with pytest.raises(Exception, match="boom"):
        failed.result(timeout=10)
    assert not client.submit("fail", {}).cached


def test_coalesced_job_survives_a_worker_crash(
    client: Client, start_workers: Callable[..., ReadyProcess], base_url: str, tmpdir_short: str
) -> None:
    start_workers(2)
    ledger = os.path.join(tmpdir_short, "ledger")
    args = {"path": ledger, "seconds": 1.0}
    first = client.submit("ledger", args)
    pid = int(wait_for(lambda: ledger_lines(ledger), timeout_s=10)[0][2])
    with Client(base_url, timeout_s=10) as other:
        second = other.submit("ledger", args)
        assert second.id == first.id
        os.kill(pid, signal.SIGKILL)
        assert other.result(second.id, timeout=20) == first.result(timeout=20)
    assert len(ends(ledger)) == 1
    assert client.status(first.id)["attempts"] == 2


@pytest.mark.parametrize(
    "args, error",
    [
        ({"x": float("nan")}, "NaN"),
        ({"x": float("inf")}, "NaN or Infinity"),
        ({"x": 2**64}, "out of range"),
        ({"x": "\ud800"}, "surrogate"),
        (["not", "an", "object"], "JSON object"),
    ],
)
def test_args_without_canonical_form_are_refused(client: Client, args: object, error: str) -> None:
    with pytest.raises(BadArguments, match=error):
        client.submit("echo", args)  # type: ignore[arg-type]
    assert client.stats()["submitted"] == 0


def test_oversized_args_are_refused_before_sending(client: Client) -> None:
    with pytest.raises(PayloadTooLarge, match="args exceed"):
        client.submit("echo", {"blob": "x" * (2 * 1024 * 1024)})
    assert client.stats()["submitted"] == 0
    assert client.submit("echo", {"small": 1}).view["state"] == "queued"
