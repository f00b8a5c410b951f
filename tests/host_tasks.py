"""Tasks for the multi-host tests (``--tasks host_tasks``): each says which host ran it.

The host's name comes from ``$JOBCAST_TEST_HOST``, set per worker process by the test.
"""

from __future__ import annotations

import os
import time
from typing import Any

from workers import Job, task


def _host() -> str:
    return os.environ.get("JOBCAST_TEST_HOST", "?")


@task("where", ttl=0)
def where(job: Job, **args: Any) -> dict[str, Any]:
    """Return the host that ran this job."""
    return {"host": _host()}


@task("where_slow", ttl=0, max_attempts=3)
def where_slow(job: Job, seconds: float = 2.0, steps: int = 20, **args: Any) -> dict[str, Any]:
    """Take ``seconds`` in ``steps`` steps; every progress message names the host."""
    host = _host()
    for step in range(1, steps + 1):
        time.sleep(seconds / steps)
        job.progress(step, steps, f"on {host}")
    return {"host": host, "steps": steps}


@task("report_on", ttl=3600)
def report_on(job: Job, region: str = "eu") -> dict[str, Any]:
    """A cacheable report: the same args give the cached result for an hour."""
    job.progress(1, 1, "summed")
    return {"region": region, "host": _host()}


@task("gated", ttl=0)
def gated(job: Job, gate: str, steps: int = 3, step_s: float = 0.15) -> dict[str, Any]:
    """``steps`` progress steps, then wait (bounded) for the file ``gate``, then ``steps`` more.

    Steps are ``step_s`` apart (longer than the progress throttle), so each one is sent.
    """
    total = 2 * steps
    for step in range(1, total + 1):
        if step == steps + 1:
            _wait_for_file(gate)
        time.sleep(step_s)
        job.progress(step, total, f"on {_host()}")
    return {"host": _host(), "steps": total}


def _wait_for_file(path: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"gate {path} never opened")
        time.sleep(0.02)
