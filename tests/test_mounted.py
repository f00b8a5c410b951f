"""jobcast's web app mounted inside a user's own Starlette app, served by uvicorn."""

from __future__ import annotations

import os
from collections.abc import Callable

import httpx
from helpers import PYTHON, ReadyProcess, wait_for


def test_mounted_app_serves_api_pages_and_the_users_routes(
    broker: ReadyProcess,
    start_workers: Callable[..., ReadyProcess],
    base_url: str,
    tmpdir_short: str,
    part_env: dict[str, str],
    processes: list[ReadyProcess],
) -> None:
    start_workers(1)
    env = {**part_env, "JOBCAST_BROKER": base_url, "JOBCAST_DATA": os.path.join(tmpdir_short, "data")}
    app = ReadyProcess([PYTHON, "-m", "mounted_app"], env=env)
    processes.append(app)
    url = app.ready_line.split(" ready ", 1)[1]
    assert httpx.get(url + "/", timeout=10).text == "the user's own page"
    created = httpx.post(url + "/jobcast/api/jobs", json={"task": "echo", "args": {"n": 1}}, timeout=10)
    assert created.status_code == 202
    job_url = f"{url}/jobcast/api/jobs/{created.json()['id']}"
    done = wait_for(
        lambda: (r := httpx.get(job_url, timeout=10).json())["state"] == "done" and r, timeout_s=15
    )
    assert done["result"] == {"n": 1}
    first = httpx.get(url + "/jobcast/reports/echo?region=eu", timeout=10)
    assert first.status_code == 303 and first.headers["location"].startswith("/jobcast/jobs/")
