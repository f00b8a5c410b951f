"""Web fixtures: a real ``python -m web`` on 127.0.0.1 port 0, alone or with a broker and workers.

Register with ``pytest_plugins = ["web_fixtures"]`` in conftest.py.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import dataclass

import httpx
import pytest
from helpers import PYTHON, ReadyProcess, wait_for

WEB_TEST_ENV = {
    "JOBCAST_WS_PING_S": "1",  # a browser that stops reading is closed within 2 s
    "JOBCAST_WS_RESYNC_S": "1",  # a quiet stream re-reads the snapshot every second
    "JOBCAST_WS_SEND_S": "5",
}


@dataclass
class WebServer:
    """A running web process and its base URL (``http://127.0.0.1:PORT``)."""

    proc: ReadyProcess
    url: str

    @property
    def ws_url(self) -> str:
        """The base URL with the ws scheme."""
        return "ws" + self.url.removeprefix("http")

    def events_url(self, job_id: str, after: int | None = None) -> str:
        """The WebSocket URL of a job's events."""
        query = "" if after is None else f"?after={after}"
        return f"{self.ws_url}/api/jobs/{job_id}/events{query}"


@dataclass
class WebStack:
    """Broker, workers and web, all real processes."""

    broker: ReadyProcess
    workers: ReadyProcess
    web: WebServer

    @property
    def url(self) -> str:
        """The web server's base URL."""
        return self.web.url


@pytest.fixture
def start_web(
    base_url: str, tmpdir_short: str, part_env: dict[str, str], processes: list[ReadyProcess]
) -> Callable[..., WebServer]:
    """Start ``python -m web`` against the test's broker; waits until healthy.

    ``port`` 0 (the default) lets the server pick one; a fixed port (see ``free_port``)
    lets a test restart the server where the browser expects it. ``env`` adds to (and
    overrides) the web process's environment, e.g. small ``JOBCAST_SUBMIT_RATE`` limits.
    """

    def start(
        *extra: str, wait_healthy: bool = True, port: int = 0, env: dict[str, str] | None = None
    ) -> WebServer:
        argv = [
            PYTHON,
            "-m",
            "web",
            "--broker",
            base_url,
            "--data",
            os.path.join(tmpdir_short, "data"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            *extra,
        ]
        proc = ReadyProcess(argv, env={**part_env, **WEB_TEST_ENV, **(env or {})})
        processes.append(proc)
        server = WebServer(proc, proc.ready_line.split(" ready ", 1)[1].split()[0])
        if wait_healthy:
            wait_for(lambda: _healthy(server.url), timeout_s=15)
        return server

    return start


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (bind port 0, read it, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture
def web_stack(
    start_broker: Callable[..., ReadyProcess],
    start_workers: Callable[..., ReadyProcess],
    start_web: Callable[..., WebServer],
    part_env: dict[str, str],
) -> WebStack:
    """A broker, a web server and 2 workers running the test tasks, the demo report and feeds."""
    return _stack(start_broker, start_workers, start_web, part_env, port=0)


@pytest.fixture
def web_stack_fixed_port(
    start_broker: Callable[..., ReadyProcess],
    start_workers: Callable[..., ReadyProcess],
    start_web: Callable[..., WebServer],
    part_env: dict[str, str],
) -> WebStack:
    """Like ``web_stack``, but the web server listens on a fixed free port, so that a test
    can stop it and start a new one where the browser expects it (``start_web(port=...)``)."""
    return _stack(start_broker, start_workers, start_web, part_env, port=free_port())


def _stack(
    start_broker: Callable[..., ReadyProcess],
    start_workers: Callable[..., ReadyProcess],
    start_web: Callable[..., WebServer],
    part_env: dict[str, str],
    port: int,
) -> WebStack:
    broker = start_broker()
    web = start_web(port=port)
    part_env["JOBCAST_FEEDS_ALLOW"] = f"{web.url}/demo/feeds/"
    workers = start_workers(2, "--tasks", "workers.demo", "--tasks", "workers.feeds")
    return WebStack(broker, workers, web)


DASHBOARD_TOKEN = "correct-horse-battery-staple-42"


@pytest.fixture
def dashboard_stack(
    start_broker: Callable[..., ReadyProcess],
    start_workers: Callable[..., ReadyProcess],
    start_web: Callable[..., WebServer],
) -> WebStack:
    """Broker, 2 test workers and a web server whose dashboard token is ``DASHBOARD_TOKEN``."""
    broker = start_broker()
    web = start_web(env={"JOBCAST_DASHBOARD_TOKEN": DASHBOARD_TOKEN})
    return WebStack(broker, start_workers(2), web)
