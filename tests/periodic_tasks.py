"""A periodic test task, in its own module so that only the tests that load it run it."""

from __future__ import annotations

import os
import time

from workers import Job, task


@task("every_half_second", every=0.5)
def every_half_second(job: Job) -> None:
    """Ledger lines in ``$JOBCAST_TEST_LEDGER`` around 0.7 s of work, longer than its period."""
    path = os.environ.get("JOBCAST_TEST_LEDGER")
    if path:
        for mark in ("start", "end"):
            with open(path, "a") as ledger:
                ledger.write(f"{job.id} {job.attempt} {os.getpid()} {mark}\n")
            if mark == "start":
                time.sleep(0.7)
