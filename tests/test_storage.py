"""A full data dir: submits get a clear StorageFull error, reads keep working, nothing is lost."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable

import pytest
from helpers import ReadyProcess, jobcast, wait_for

from broker.client import Client
from broker.errors import StorageFull, UnknownJob


def test_low_free_space_pauses_submits_but_not_reads(
    start_broker: Callable[..., ReadyProcess],
    base_url: str,
    part_env: dict[str, str],
    tmpdir_short: str,
    processes: list[ReadyProcess],
) -> None:
    part_env["JOBCAST_MIN_FREE_MB"] = str(10**12)  # more than any disk has: always "full"
    start_broker()
    with Client(base_url, timeout_s=10) as client:
        with pytest.raises(StorageFull, match="MiB free"):
            client.submit("echo", {"x": 1})
        with pytest.raises(UnknownJob):
            client.status("A" * 22)
        assert client.stats()["submitted"] == 0


@pytest.mark.skipif(shutil.which("prlimit") is None, reason="prlimit (util-linux) is not installed")
def test_write_failures_pause_submits_until_space_returns(
    base_url: str,
    part_env: dict[str, str],
    tmpdir_short: str,
    processes: list[ReadyProcess],
    start_workers: Callable[..., ReadyProcess],
) -> None:
    data = os.path.join(tmpdir_short, "data")
    broker = ReadyProcess(
        ["prlimit", "--fsize=3000000:unlimited", *jobcast("broker", "--broker", base_url, "--data", data)],
        env=part_env,
    )
    processes.append(broker)
    blob = "x" * 200_000
    acknowledged: list[str] = []
    with Client(base_url, timeout_s=10) as client:
        with pytest.raises(StorageFull, match="cannot be written"):
            for i in range(100):  # 20 MB of args against a 3 MB file size limit
                acknowledged.append(client.submit("echo", {"i": i, "blob": blob}).id)
        assert acknowledged, "some submits fit before the limit"
        assert client.status(acknowledged[0])["state"] == "queued", "reads keep working"
        subprocess.run(["prlimit", "--pid", str(broker.pid), "--fsize=unlimited"], check=True)
        late = wait_for(lambda: _try_submit(client, {"after": "space"}), timeout_s=10)
        start_workers(2)
        for job_id in [*acknowledged, late]:
            assert client.result(job_id, timeout=30) is not None
    assert broker.proc.poll() is None, "the broker never crashed"


def _try_submit(client: Client, args: dict[str, str]) -> str | None:
    try:
        return client.submit("echo", args).id
    except StorageFull:
        return None
