"""``jobcast up``: broker, workers and web in one command, stopped cleanly by SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
from urllib.parse import urlsplit

import httpx
from helpers import ReadyProcess, children_of, jobcast, pid_alive, wait_for


def test_up_serves_the_demo_and_stops_cleanly(
    base_url: str, tmpdir_short: str, part_env: dict[str, str]
) -> None:
    data = os.path.join(tmpdir_short, "data")
    up = ReadyProcess(
        jobcast("up", "--port", "0", "--workers", "1", "--broker", base_url, "--data", data),
        env=part_env,
        ready_timeout_s=60,
    )
    try:
        url = up.ready_line.split(" ready ", 1)[1].split()[0]
        parts = children_of(up.pid)
        assert len(parts) >= 5, "broker, web, pool, an agent and its runner child"
        assert httpx.get(url + "/", timeout=10).status_code == 200
        path = "/reports/report?region=eu&year=2026&steps=2&step_s=0.05"
        first = httpx.get(url + path, timeout=10)
        assert first.status_code == 303
        job_id = urlsplit(first.headers["location"]).path.rsplit("/", 1)[1]
        wait_for(
            lambda: httpx.get(f"{url}/api/jobs/{job_id}", timeout=10).json()["state"] == "done", timeout_s=30
        )
        assert "Cached result." in httpx.get(url + path, timeout=10).text
        up.signal(signal.SIGTERM)
        assert up.wait(timeout_s=20) == 0
        wait_for(lambda: not any(pid_alive(pid) for pid in parts), timeout_s=10)
        port = int(urlsplit(url).port or 0)
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(("127.0.0.1", port))  # the port is released
    finally:
        up.stop()
