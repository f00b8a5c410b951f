"""``jobcast up``: broker, workers and web in one command, stopped cleanly by SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
from urllib.parse import urlsplit

import httpx
import pytest
from helpers import ReadyProcess, children_of, jobcast, pid_alive, wait_for
from test_security_wire import free_base_port

from broker.client import Client
from broker.security import client_keys, create_key_pair


def start_up(part_env: dict[str, str], broker: str, data: str, *extra: str) -> ReadyProcess:
    """``jobcast up`` with one worker, the web on a free port; waits for its ready line."""
    argv = jobcast("up", "--port", "0", "--workers", "1", "--broker", broker, "--data", data, *extra)
    return ReadyProcess(argv, env=part_env, ready_timeout_s=60)


def test_up_serves_the_demo_and_stops_cleanly(
    base_url: str, tmpdir_short: str, part_env: dict[str, str]
) -> None:
    data = os.path.join(tmpdir_short, "data")
    up = start_up(part_env, base_url, data)
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


def test_up_with_curve_dir_runs_off_loopback_and_lets_only_enrolled_keys_in(
    tmpdir_short: str, part_env: dict[str, str]
) -> None:
    keys_dir, data = os.path.join(tmpdir_short, "keys"), os.path.join(tmpdir_short, "data")
    port = free_base_port()
    up = start_up(part_env, f"tcp://0.0.0.0:{port}", data, "--curve-dir", keys_dir)
    try:
        url = up.ready_line.split(" ready ", 1)[1].split()[0]
        assert os.stat(os.path.join(keys_dir, "broker.key_secret")).st_mode & 0o077 == 0
        path = "/reports/report?region=eu&year=2026&steps=2&step_s=0.05"  # web and worker use CURVE
        first = httpx.get(url + path, timeout=10)
        job_id = urlsplit(first.headers["location"]).path.rsplit("/", 1)[1]
        wait_for(
            lambda: httpx.get(f"{url}/api/jobs/{job_id}", timeout=10).json()["state"] == "done", timeout_s=30
        )
        broker = f"tcp://127.0.0.1:{port}"
        local = client_keys(os.path.join(keys_dir, "local.key_secret"), os.path.join(keys_dir, "broker.key"))
        with Client(broker, timeout_s=5, curve=local) as client:
            assert client.status(job_id)["state"] == "done"
        _, stranger_secret = create_key_pair(os.path.join(tmpdir_short, "other"), "stranger")
        stranger = client_keys(stranger_secret, os.path.join(keys_dir, "broker.key"))
        with Client(broker, timeout_s=2, curve=stranger) as client, pytest.raises(TimeoutError):
            client.status(job_id)  # a key outside allow/ is never let in
        up.signal(signal.SIGTERM)
        assert up.wait(timeout_s=20) == 0
    finally:
        up.stop()
    again = start_up(part_env, f"tcp://127.0.0.1:{port}", data, "--curve-dir", keys_dir)
    try:  # a restart reuses the keys: the result is still there for the same local key
        with Client(f"tcp://127.0.0.1:{port}", timeout_s=5, curve=local) as client:
            assert client.status(job_id)["state"] == "done"
    finally:
        again.stop()
