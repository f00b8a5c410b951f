"""Tasks used by scripts/bench (loaded with ``--tasks bench_tasks``)."""

from __future__ import annotations

from typing import Any

from workers import Job, task


@task("bench_noop", ttl=0)
def bench_noop(job: Job, **args: Any) -> dict[str, Any]:
    """Report progress once and return at once."""
    job.progress(1, 1, "done")
    return {}
