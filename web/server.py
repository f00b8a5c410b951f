"""Run the web app on uvicorn: ``main(argv)`` for ``jobcast web`` and ``python -m web``.

The server binds its socket itself so that ``--port 0`` works: it prints one ready line with
the real address (``jobcast web ready http://127.0.0.1:PORT``), then hands the socket to
``uvicorn.Server.serve``. uvicorn turns SIGINT/SIGTERM into a graceful shutdown.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
from types import FrameType
from typing import Final

import uvicorn

from broker.addresses import broker_url
from broker.security import client_keys
from web.app import create_app
from web.settings import (
    DEFAULT_DATA_DIR,
    DEFAULT_HOST,
    DEFAULT_PORT,
    WS_MAX_MESSAGE_BYTES,
    Settings,
)

logger = logging.getLogger(__name__)

GRACEFUL_SHUTDOWN_S: Final = 5


def parser() -> argparse.ArgumentParser:
    """The ``jobcast web`` arguments."""
    p = argparse.ArgumentParser(prog="jobcast web", description="Run the jobcast web server.")
    p.add_argument("--broker", default=None, help="broker base URL (default: $JOBCAST_BROKER)")
    p.add_argument("--data", default=None, help="data dir (default: $JOBCAST_DATA or ./.jobcast)")
    p.add_argument("--host", default=DEFAULT_HOST, help=f"address to bind (default {DEFAULT_HOST})")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="port (0: any free port)")
    p.add_argument(
        "--allowed-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="an extra origin trusted for WebSockets and API calls (repeatable)",
    )
    p.add_argument(
        "--allowed-host",
        action="append",
        default=[],
        metavar="HOST",
        help="a Host header to accept (repeatable; default: derived from --host)",
    )
    p.add_argument("--dashboard-token", default=None, metavar="TOKEN",
                   help="turn on /dashboard behind this token (default: $JOBCAST_DASHBOARD_TOKEN, "
                        "which keeps it out of the process list)")  # fmt: skip
    p.add_argument("--curve-secret", default=None, metavar="FILE",
                   help="own CURVE key pair (.key_secret) for an off-loopback broker")  # fmt: skip
    p.add_argument("--curve-server", default=None, metavar="FILE",
                   help="the broker's public .key file ($JOBCAST_CURVE_SERVER)")  # fmt: skip
    return p


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Settings from parsed arguments, falling back to the environment."""
    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port must be within 0..65535 (got {args.port})")
    return Settings(
        broker_url=broker_url(args.broker),
        data_dir=args.data or os.environ.get("JOBCAST_DATA") or DEFAULT_DATA_DIR,
        host=args.host,
        port=args.port,
        allowed_origins=tuple(o.rstrip("/") for o in args.allowed_origin),
        allowed_hosts=tuple(args.allowed_host),
        curve=client_keys(args.curve_secret, args.curve_server),
        dashboard_token=args.dashboard_token or os.environ.get("JOBCAST_DASHBOARD_TOKEN") or None,
    )


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (IPv6 when the host says so)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def uvicorn_config(settings: Settings) -> uvicorn.Config:
    """uvicorn settings: small inbound WebSocket frames, no deflate, no access log."""
    return uvicorn.Config(
        create_app(settings),
        lifespan="on",
        access_log=False,  # its lines carry job ids, which are capabilities
        ws_max_size=WS_MAX_MESSAGE_BYTES,
        ws_per_message_deflate=False,
        ws_ping_interval=settings.ws_ping_s,
        ws_ping_timeout=settings.ws_ping_s,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        proxy_headers=False,
        server_header=False,
        log_level="warning",
    )


def _stopped_by_sigterm(signum: int, frame: FrameType | None) -> None:
    logger.info("web server stopped by signal %d", signum)


def main(argv: list[str] | None = None) -> int:
    """Bind, print the ready line, serve until SIGINT/SIGTERM; the exit code."""
    args = parser().parse_args(argv)
    try:
        settings = settings_from_args(args)
        sock = bind(settings.host, settings.port)
    except (ValueError, OSError) as exc:
        sys.stderr.write(f"jobcast web: {exc}\n")
        return 2
    settings = settings.with_port(sock.getsockname()[1])
    server = uvicorn.Server(uvicorn_config(settings))
    # uvicorn re-raises a captured SIGTERM after its graceful shutdown; this handler only
    # absorbs that re-raise, so that a SIGTERM stop exits 0.
    signal.signal(signal.SIGTERM, _stopped_by_sigterm)
    sys.stdout.write(f"jobcast web ready {settings.own_url}\n")
    sys.stdout.flush()
    try:
        server.run(sockets=[sock])  # uvicorn's own loop factory: uvloop where installed
    except KeyboardInterrupt:
        return 130
    finally:
        sock.close()
    return 0
