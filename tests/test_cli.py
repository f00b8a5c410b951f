"""The jobcast command line, run as users run it, against a real broker and workers."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable

from helpers import ReadyProcess, jobcast


def run_cli(base_url: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        jobcast(*args, "--broker", base_url),
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=60,
    )


def test_submit_wait_json_prints_the_result(
    broker: ReadyProcess, base_url: str, part_env: dict[str, str], start_workers: Callable[..., ReadyProcess]
) -> None:
    start_workers(1)
    done = run_cli(base_url, part_env, "submit", "echo", "region=eu", "year=2026", "--wait", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"region": "eu", "year": 2026}


def test_submit_prints_id_then_status_and_cancel(
    broker: ReadyProcess, base_url: str, part_env: dict[str, str]
) -> None:
    submitted = run_cli(base_url, part_env, "submit", "echo", "x=1")
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip()
    assert len(job_id) == 22
    status = run_cli(base_url, part_env, "status", job_id, "--json")
    assert status.returncode == 0, (status.returncode, status.stderr)
    assert json.loads(status.stdout)["state"] == "queued"
    cancelled = run_cli(base_url, part_env, "cancel", job_id, "--json")
    assert cancelled.returncode == 0, (cancelled.returncode, cancelled.stderr)
    assert json.loads(cancelled.stdout)["state"] == "cancelled"
    unknown = run_cli(base_url, part_env, "status", "B" * 22)
    assert unknown.returncode == 1 and "no such job" in unknown.stderr


def test_failed_job_exits_1_with_its_error(
    broker: ReadyProcess, base_url: str, part_env: dict[str, str], start_workers: Callable[..., ReadyProcess]
) -> None:
    start_workers(1)
    failed = run_cli(base_url, part_env, "submit", "fail", "--wait")
    assert failed.returncode == 1
    assert "ValueError" in failed.stderr and "boom" in failed.stderr


def test_stats_lists_workers_and_counters(
    broker: ReadyProcess, base_url: str, part_env: dict[str, str], start_workers: Callable[..., ReadyProcess]
) -> None:
    start_workers(2)
    assert run_cli(base_url, part_env, "submit", "echo", "a=1", "--wait").returncode == 0
    stats = json.loads(run_cli(base_url, part_env, "stats", "--json").stdout)
    assert stats["workers"] == 2 and stats["done"] == 1 and stats["submitted"] == 1


def test_bad_usage_exits_2(broker: ReadyProcess, base_url: str, part_env: dict[str, str]) -> None:
    bad = run_cli(base_url, part_env, "submit", "echo", "no-equals-sign")
    assert bad.returncode == 2 and "key=value" in bad.stderr
