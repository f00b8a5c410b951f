"""A user's own Starlette app with jobcast mounted under /jobcast (run by test_mounted.py)."""

from __future__ import annotations

import os
import socket
import sys

import uvicorn
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

from web import Settings, create_app, jobcast_lifespan


async def home(request: object) -> PlainTextResponse:
    return PlainTextResponse("the user's own page")


settings = Settings(broker_url=os.environ["JOBCAST_BROKER"], data_dir=os.environ["JOBCAST_DATA"])
app = Starlette(
    routes=[Route("/", home), Mount("/jobcast", create_app(settings))],
    lifespan=jobcast_lifespan(settings),
)

if __name__ == "__main__":
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    print(f"mounted app ready http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
    uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])
    sys.exit(0)
