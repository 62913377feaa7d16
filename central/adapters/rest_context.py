"""What every REST route of central shares: its context (the projection, the read
threads, the SQL pool, the scheduler's view), JSON answers in one encoding, the error
body, and the API key check of ``/api/v1``."""

from __future__ import annotations

import asyncio
import functools
import hmac
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable

import msgspec
from litestar import Response
from litestar.connection import ASGIConnection
from litestar.handlers import BaseRouteHandler

from central.lifecycle.errors import Refused
from central.readmodel.projection import Projection
from central.readmodel.query_pool import QueryPool

__all__ = ["API_KEY_MESSAGE", "ApiContext", "ErrorBody", "ErrorDetail", "bearer_ok", "context_of", "error_response",
           "json_bytes", "json_response", "require_key", "run_read"]

API_KEY_MESSAGE = "missing or wrong API key: send 'Authorization: Bearer <key>'"
_encoder = msgspec.json.Encoder(decimal_format="number", enc_hook=str)  # str: any odd SQL value type


class ErrorDetail(msgspec.Struct, kw_only=True):
    code: int
    message: str


class ErrorBody(msgspec.Struct, kw_only=True):
    error: ErrorDetail


@dataclass
class ApiContext:
    projection: Projection | None
    scheduler_status: Callable[[], dict]
    scheduler_queue: Callable[[], list[dict]]
    sql_pool: QueryPool | None
    reads: ThreadPoolExecutor | None
    api_key: str | None = None
    live: Any = None  # central.adapters.live.LiveFeed
    gateway: Any = None  # central.adapters.gateway.Gateway


def context_of(connection: ASGIConnection) -> ApiContext:
    return connection.app.state.api


def json_bytes(value: Any) -> bytes:
    return _encoder.encode(value)


def json_response(value: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(content=_encoder.encode(value), status_code=status, media_type="application/json",
                    headers=headers)


def error_response(code: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return json_response(ErrorBody(error=ErrorDetail(code=code, message=message)), status=code, headers=headers)


def bearer_ok(authorization: str, api_key: str | None) -> bool:
    """Whether an ``Authorization`` header carries ``api_key`` (always, without a key);
    constant-time."""
    if not api_key:
        return True
    scheme, _, token = authorization.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), api_key.encode())


def require_key(connection: ASGIConnection, _: BaseRouteHandler) -> None:
    """The guard of ``/api/v1``: 401 unless the request carries the API key."""
    if not bearer_ok(connection.headers.get("Authorization", ""), context_of(connection).api_key):
        raise Refused(401, API_KEY_MESSAGE)


async def run_read(context: ApiContext, read: Callable, *args: Any) -> Any:
    """``read(*args)`` on the API's own read threads (never behind users' SQL)."""
    if context.projection is None:
        raise Refused(503, "this central has no read model yet")
    return await asyncio.get_running_loop().run_in_executor(context.reads, functools.partial(read, *args))
