"""How many attempts a worker slot may hold at once for a task (pure).

A slot that announced ``prefetch`` > 1 is sent more jobs while it runs one, so it never
waits for the broker between short jobs and the broker, the agent and the runner each
handle several jobs per wake-up. Only short tasks are prefetched: a job held behind
others waits for them, and a slot elsewhere may come free meanwhile. So a slot holds at
most about ``PREFETCH_BUDGET_S`` of work by the task's mean run time, and a task whose
mean is not known yet (no finished run) or is longer than half the budget gets one job
per slot, as with no prefetch at all (Celery's prefetch multiplier, bounded by time).
Neither is a task with a concurrency limit (``TaskControls.prefetchable``): a held job
counts against the limit while it waits.

When a slot reports (a job done), it is topped up only once it holds at most half its
``prefetch`` (``wants_top_up``), so the jobs it is sent travel together in one bundle
(``broker.bundle``) rather than one message per job finished. A job that arrives goes to
any slot with room, as before.
"""

from __future__ import annotations

from typing import Final

PREFETCH_BUDGET_S: Final = 0.05
MIN_RUN_S: Final = 1e-4  # below it a mean is taken as this (a 0 s mean would mean any depth)


def prefetch_depth(prefetch: int, mean_run_s: float | None) -> int:
    """How many attempts of a task whose runs take ``mean_run_s`` a slot may hold."""
    if prefetch <= 1 or mean_run_s is None:
        return 1
    return max(1, min(prefetch, int(PREFETCH_BUDGET_S / max(mean_run_s, MIN_RUN_S))))


def wants_top_up(held: int, prefetch: int) -> bool:
    """Whether a busy slot holding ``held`` attempts is sent more now (at most half full)."""
    return held <= prefetch // 2
