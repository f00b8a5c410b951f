"""A user's own Starlette app that authenticates users, with jobcast mounted under /jobcast.

The host's ``AuthenticationMiddleware`` signs a request in as the user named in the
``X-Test-User`` header (a stand-in for a real session; run by test_scope.py).
"""

from __future__ import annotations

import os
import socket
import sys

import uvicorn
from starlette.applications import Starlette
from starlette.authentication import AuthCredentials, AuthenticationBackend, BaseUser, SimpleUser
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import HTTPConnection
from starlette.routing import Mount

from web import Settings, create_app, jobcast_lifespan


class HeaderUser(AuthenticationBackend):
    """Signs the request in as the user named in ``X-Test-User``; anonymous without it."""

    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, BaseUser] | None:
        name = conn.headers.get("x-test-user")
        return (AuthCredentials(["authenticated"]), SimpleUser(name)) if name else None


settings = Settings(broker_url=os.environ["JOBCAST_BROKER"], data_dir=os.environ["JOBCAST_DATA"])
app = Starlette(
    routes=[Mount("/jobcast", create_app(settings))],
    middleware=[Middleware(AuthenticationMiddleware, backend=HeaderUser())],
    lifespan=jobcast_lifespan(settings),
)

if __name__ == "__main__":
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    print(f"mounted auth app ready http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
    uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])
    sys.exit(0)
