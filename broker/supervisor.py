"""``jobcast up``: the broker, the web server and a worker pool in one command.

Each part runs as its own process and prints one ready line; ``up`` waits for each, then
prints its own. SIGINT/SIGTERM are forwarded to every part (warm stop); the parts get
``STOP_GRACE_S`` to exit, then they are killed. No part outlives ``up``.
"""

from __future__ import annotations

import argparse
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from typing import IO, Final

from broker.addresses import broker_url
from broker.up_keys import UpKeys, prepare_up_keys

STOP_GRACE_S: Final = 8.0
READY_TIMEOUT_S: Final = 30.0
DEMO_TASKS: Final = ("workers.demo", "workers.feeds")


class Part:
    """One child process of ``up`` and the lines it prints."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        self.name = name
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, env=env)
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, args=(self.proc.stdout,), daemon=True).start()

    def _pump(self, stream: IO[str] | None) -> None:
        for line in stream or ():
            self.lines.put(line.rstrip("\n"))

    def wait_ready(self, timeout_s: float) -> str:
        """The part's ready line; raises RuntimeError if it exits or stays silent."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                line = self.lines.get(timeout=0.1)
            except queue.Empty:
                continue
            if " ready" in line:
                return line
        raise RuntimeError(f"{self.name} did not start (exit code {self.proc.poll()})")


def main(argv: list[str] | None = None) -> int:
    """Run broker, web and workers until interrupted; return the exit code."""
    args = _parser().parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    parts: list[Part] = []
    try:
        keys = prepare_up_keys(args.curve_dir) if args.curve_dir else None
        url = _start_all(args, parts, keys)
        print(f"jobcast up ready {url} (broker {args.broker}, {args.workers} workers)", flush=True)
        if args.dashboard_token:
            print(f"dashboard: {url}/dashboard (sign in with the token)", flush=True)
        if keys is not None:
            print(f"CURVE on: workers elsewhere take --curve-server {keys.broker_public}; "
                  f"enrol their .key in {keys.allow_dir}", flush=True)  # fmt: skip
        while not stop.wait(0.5):
            dead = [part.name for part in parts if part.proc.poll() is not None]
            if dead:
                print(f"jobcast up: {', '.join(dead)} exited; stopping", file=sys.stderr)
                return 1
        return 0
    except (RuntimeError, ValueError, OSError) as exc:
        print(f"jobcast up: {exc}", file=sys.stderr)
        return 1
    finally:
        _stop_all(parts)


def _start_all(args: argparse.Namespace, parts: list[Part], keys: UpKeys | None) -> str:
    python = sys.executable
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "JOBCAST_BROKER": args.broker}
    if args.dashboard_token:  # to the web part by environment: not on its command line
        env["JOBCAST_DASHBOARD_TOKEN"] = args.dashboard_token
    curve_argv = keys.broker_argv() if keys else []
    broker = Part(
        "broker",
        [python, "-m", "broker.cli", "broker", "--broker", args.broker, "--data", args.data, *curve_argv],
        env,
    )
    parts.append(broker)
    broker.wait_ready(READY_TIMEOUT_S)
    if keys is not None:  # the web server and the workers are the broker's CURVE clients
        env.update(keys.client_env())
    web = Part(
        "web",
        [
            python,
            "-m",
            "broker.cli",
            "web",
            "--broker",
            args.broker,
            "--data",
            args.data,
            "--host",
            args.host,
            "--port",
            str(args.port),
        ],
        env,
    )
    parts.append(web)
    url = web.wait_ready(READY_TIMEOUT_S).split(" ready ", 1)[1].split()[0]
    env["JOBCAST_FEEDS_ALLOW"] = f"{url}/demo/feeds/"
    tasks = [item for module in (*DEMO_TASKS, *args.tasks) for item in ("--tasks", module)]
    workers = Part(
        "workers",
        [python, "-m", "broker.cli", "worker", "--broker", args.broker, "-n", str(args.workers), *tasks],
        env,
    )
    parts.append(workers)
    workers.wait_ready(READY_TIMEOUT_S)
    return url


def _stop_all(parts: list[Part]) -> None:
    # workers first, and wait for them: their last results must reach a broker still running
    workers, others = parts[2:], list(reversed(parts[:2]))
    _stop(workers, STOP_GRACE_S)
    _stop(others, STOP_GRACE_S)


def _stop(parts: list[Part], grace_s: float) -> None:
    for part in parts:
        if part.proc.poll() is None:
            part.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for part in parts:
        try:
            part.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            part.proc.kill()
            part.proc.wait()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jobcast up", description=__doc__)
    parser.add_argument("--port", type=int, default=8000, help="web port (default 8000)")
    parser.add_argument("--host", default="127.0.0.1", help="web host (default 127.0.0.1)")
    parser.add_argument(
        "--workers", type=int, default=os.cpu_count() or 2, help="worker processes (default: number of cores)"
    )
    parser.add_argument(
        "--tasks",
        action="append",
        default=[],
        metavar="MODULE",
        help="more task modules to load (repeatable)",
    )
    parser.add_argument(
        "--data",
        default=os.environ.get("JOBCAST_DATA", ".jobcast"),
        help="data dir (default $JOBCAST_DATA or ./.jobcast)",
    )
    parser.add_argument("--broker", default=broker_url(), help="broker base URL")
    parser.add_argument(
        "--curve-dir",
        default=None,
        metavar="DIR",
        help="CURVE keys for a broker off loopback: made in DIR on first use, then reused "
        "(broker.key for peers, allow/ for their keys)",
    )
    parser.add_argument(
        "--dashboard-token",
        default=None,
        metavar="TOKEN",
        help="turn on /dashboard behind this token (default $JOBCAST_DASHBOARD_TOKEN)",
    )
    return parser
