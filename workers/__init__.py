"""jobcast workers: ``@task`` to register task functions, ``Job`` is what they receive."""

from __future__ import annotations

from workers.context import Job
from workers.registry import task

__all__ = ["Job", "task"]
