"""The bundled demo tasks: ``report`` (a slow report over filters) and ``db_query`` (one slow
"database" count; ten of them in a group make the parallel report)."""

from __future__ import annotations

import random
import time
from typing import Any, Final

from workers.context import Job
from workers.registry import task

MONTHS: Final = ("Jan", "Feb", "Mar", "Apr", "May", "Jun",
                 "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")  # fmt: skip
MAX_STEPS: Final = 1000


@task("report", ttl=86400, timeout=600, max_attempts=3)
def report(job: Job, region: str = "all", year: int = 2026, steps: int = 20,
           step_s: float = 0.25) -> dict[str, Any]:  # fmt: skip
    """Sum a year of (deterministic, made-up) orders for a region, one slice per step."""
    if not isinstance(steps, int) or not 1 <= steps <= MAX_STEPS:
        raise ValueError(f"steps must be an int within 1..{MAX_STEPS} (got {steps!r})")
    if not isinstance(step_s, int | float) or not 0 <= step_s <= 60:
        raise ValueError(f"step_s must be a number within 0..60 (got {step_s!r})")
    rng = random.Random(f"{region}/{year}")
    rows: list[dict[str, Any]] = []
    for step in range(1, steps + 1):
        time.sleep(step_s)
        month = MONTHS[(step - 1) * len(MONTHS) // steps]
        orders = rng.randint(50, 500)
        rows.append({"month": month, "orders": orders, "revenue": orders * rng.randint(20, 90)})
        job.progress(step, steps, f"Summed {month} slice {step} of {steps} for {region}")
    total = {"orders": sum(r["orders"] for r in rows), "revenue": sum(r["revenue"] for r in rows)}
    return {"region": region, "year": year, "rows": rows, "total": total}


DEMO_TABLES: Final = ("orders", "customers", "invoices", "refunds", "shipments",
                      "returns", "payments", "reviews", "stock", "visits")  # fmt: skip


@task("db_query", ttl=3600, timeout=120, max_attempts=3)
def db_query(job: Job, table: str = "orders", steps: int = 8, step_s: float = 0.3) -> dict[str, Any]:
    """A slow (made-up) "database" count over one table: the parallel report's unit of work."""
    if not isinstance(steps, int) or not 1 <= steps <= MAX_STEPS:
        raise ValueError(f"steps must be an int within 1..{MAX_STEPS} (got {steps!r})")
    if not isinstance(step_s, int | float) or not 0 <= step_s <= 60:
        raise ValueError(f"step_s must be a number within 0..60 (got {step_s!r})")
    rng = random.Random(f"db/{table}")
    rows = 0
    job.log(f"SELECT count(*) FROM {table}  -- {steps} batches")
    for step in range(1, steps + 1):
        time.sleep(step_s)
        batch = rng.randint(100, 999)
        rows += batch
        job.log(f"{table}: batch {step}/{steps} counted {batch} rows")
        job.progress(step, steps, f"{table}: {rows} rows so far")
    return {"table": table, "rows": rows}
