"""HTTP errors as ``{"error": ...}`` JSON with a 4xx status, never a 500 for bad input."""

from __future__ import annotations

import logging
import math
from typing import Final

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ExceptionHandler

from broker.errors import (
    BadArguments,
    BrokerError,
    PayloadTooLarge,
    ProtocolError,
    QueueFull,
    StorageFull,
    UnknownJob,
    UnknownTask,
)

logger = logging.getLogger(__name__)

NO_SUCH_JOB: Final = "no such job"
TOO_MANY_REQUESTS: Final = "too many requests"


class ApiError(Exception):
    """A request the server refuses: ``status`` (4xx) and a message for people."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class RateLimited(Exception):
    """A client over its rate: 429, retry after ``wait_s`` seconds."""

    def __init__(self, wait_s: float) -> None:
        super().__init__(TOO_MANY_REQUESTS)
        self.wait_s = wait_s


def error_response(status: int, message: str) -> JSONResponse:
    """The one error shape: ``{"error": message}``."""
    return JSONResponse({"error": message}, status_code=status)


def too_many_requests(wait_s: float) -> JSONResponse:
    """429 ``{"error": "too many requests"}`` with ``Retry-After`` (whole seconds, rounded up)."""
    response = error_response(429, TOO_MANY_REQUESTS)
    response.headers["Retry-After"] = str(max(1, math.ceil(wait_s)))
    return response


async def _api_error(request: Request, exc: Exception) -> Response:
    status = exc.status if isinstance(exc, ApiError) else 400
    return error_response(status, str(exc))


async def _rate_limited(request: Request, exc: Exception) -> Response:
    return too_many_requests(exc.wait_s if isinstance(exc, RateLimited) else 1.0)


async def _http_exception(request: Request, exc: Exception) -> Response:
    if isinstance(exc, HTTPException):
        return error_response(exc.status_code, exc.detail)
    return error_response(400, str(exc))


def _status_handler(
    status: int, fixed_message: str | None = None, retry_after_s: int | None = None
) -> ExceptionHandler:
    async def handle(request: Request, exc: Exception) -> Response:
        if status >= 500:
            logger.warning("%s %s: %s", request.method, request.url.path, exc)
        response = error_response(status, fixed_message or str(exc))
        if retry_after_s is not None:
            response.headers["Retry-After"] = str(retry_after_s)
        return response

    return handle


async def _unexpected(request: Request, exc: Exception) -> Response:
    logger.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal error")


def exception_handlers() -> dict[int | type[Exception], ExceptionHandler]:
    """Starlette exception handlers mapping every known failure to its status."""
    return {
        ApiError: _api_error,
        RateLimited: _rate_limited,
        HTTPException: _http_exception,
        UnknownJob: _status_handler(404, NO_SUCH_JOB),  # same shape for unknown and expired
        PayloadTooLarge: _status_handler(413),
        BadArguments: _status_handler(400),
        UnknownTask: _status_handler(400),
        ProtocolError: _status_handler(502),
        StorageFull: _status_handler(503, retry_after_s=5),
        QueueFull: _status_handler(503, retry_after_s=5),
        BrokerError: _status_handler(502),
        TimeoutError: _status_handler(503, "the broker did not answer in time"),
        Exception: _unexpected,
    }
