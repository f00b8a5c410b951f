"""Test tasks (``--tasks tasks`` with tests/ on PYTHONPATH). Each is tiny on purpose."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from workers import Job, task


@task("echo")
def echo(job: Job, **args: Any) -> dict[str, Any]:
    """Return the args unchanged."""
    return args


@task("slow")
def slow(job: Job, seconds: float = 1.0, steps: int = 10) -> dict[str, Any]:
    """Take ``seconds`` in ``steps`` steps, reporting progress after each."""
    for step in range(1, steps + 1):
        time.sleep(seconds / steps)
        job.progress(step, steps, f"step {step}")
    return {"steps": steps}


@task("fail", max_attempts=1)
def fail(job: Job) -> None:
    """Always raise ValueError("boom")."""
    raise ValueError("boom")


@task("crash")
def crash(job: Job, how: str = "exit", code: int = 3) -> None:
    """Kill the runner process: ``os._exit(code)`` or SIGKILL itself (``how="sigkill"``)."""
    if how == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    os._exit(code)


@task("hang")
def hang(job: Job) -> None:
    """Sleep forever without progress (the submitter sets a timeout)."""
    while True:
        time.sleep(60)


@task("progress_n")
def progress_n(job: Job, n: int = 10_000) -> int:
    """Call progress ``n`` times in a tight loop; return ``n``."""
    for i in range(1, n + 1):
        job.progress(i, n)
    return n


@task("noop")
def noop(job: Job) -> dict[str, Any]:
    """Report progress once; return {}."""
    job.progress(1, 1, "done")
    return {}


@task("bad_result")
def bad_result(job: Job) -> Any:
    """Return a value with no JSON form."""
    return {1, 2}


@task("ledger")
def ledger(job: Job, path: str, seconds: float = 0.0) -> dict[str, Any]:
    """Append ``job_id attempt pid start|end`` lines to ``path`` around a sleep."""
    _append(path, f"{job.id} {job.attempt} {os.getpid()} start")
    time.sleep(seconds)
    _append(path, f"{job.id} {job.attempt} {os.getpid()} end")
    return {"pid": os.getpid()}


def _append(path: str, line: str) -> None:
    with open(path, "a") as ledger_file:
        ledger_file.write(line + "\n")


@task("record")
def record(job: Job, path: str, i: int = 0, seconds: float = 0.0, steps: int = 1) -> dict[str, Any]:
    """Ledger lines ``job_id attempt pid start|end i`` around ``seconds`` of work in ``steps``.

    Progress is reported after each step; the result names the attempt that produced it.
    """
    _append(path, f"{job.id} {job.attempt} {os.getpid()} start {i}")
    for step in range(1, steps + 1):
        time.sleep(seconds / steps)
        job.progress(step, steps)
    _append(path, f"{job.id} {job.attempt} {os.getpid()} end {i}")
    return {"id": job.id, "attempt": job.attempt, "pid": os.getpid(), "i": i}


@task("gil_hog")
def gil_hog(job: Job, n: int = 25) -> int:
    """Hold the GIL inside one C call (catastrophic backtracking; n=25 is about 1.5 s)."""
    import re

    return 0 if re.match(r"(a+)+$", "a" * n + "b") is None else 1


@task("stubborn")
def stubborn(job: Job, path: str, seconds: float = 30.0) -> None:
    """Report progress every 20 ms but swallow the JobCancelled it raises; ledger lines."""
    from broker.errors import JobCancelled

    _append(path, f"{job.id} {job.attempt} {os.getpid()} start")
    deadline, swallowed = time.monotonic() + seconds, False
    while time.monotonic() < deadline:
        time.sleep(0.02)
        try:
            job.progress(1, 2, "ignoring cancels")
        except JobCancelled:
            if not swallowed:
                swallowed = True
                _append(path, f"{job.id} {job.attempt} {os.getpid()} swallowed")
    _append(path, f"{job.id} {job.attempt} {os.getpid()} end")


@task("one_at_a_time", concurrency=1)
def one_at_a_time(job: Job, path: str, i: int = 0, seconds: float = 0.2) -> int:
    """Ledger lines ``job_id attempt pid start|end`` around a sleep; at most one runs at once."""
    _append(path, f"{job.id} {job.attempt} {os.getpid()} start")
    time.sleep(seconds)
    _append(path, f"{job.id} {job.attempt} {os.getpid()} end")
    return i


@task("chatty", max_attempts=1)
def chatty(job: Job, lines: int = 5, seconds: float = 0.0, fail: bool = False,
           say: str = "") -> dict[str, Any]:  # fmt: skip
    """Log ``say`` (if given) and ``lines`` numbered lines (with progress), then return or fail."""
    if say:
        job.log(say)
    for i in range(1, lines + 1):
        job.log(f"line {i} <b>&amp;</b>")
        job.progress(i, lines, f"logged {i}")
        time.sleep(seconds / lines)
    if fail:
        job.log("about to fail")
        raise RuntimeError("chatty failed on purpose")
    return {"lines": lines}


@task("step", max_attempts=1)
def step(job: Job, n: int = 0, steps: int = 4, seconds: float = 0.2, fail: bool = False) -> dict[str, Any]:
    """``steps`` progress steps over ``seconds``; fails at the end when ``fail``."""
    for i in range(1, steps + 1):
        time.sleep(seconds / steps)
        job.progress(i, steps, f"step {i}")
    if fail:
        raise ValueError(f"step {n} failed on purpose")
    return {"n": n, "rows": n * 10}
