"""Why a serving call did not do what was asked, and its status on each wire.

    ServingError (code: HTTP-style, grpc_code: the gRPC status)
    ├── InvalidRequest      400 INVALID_ARGUMENT    the request is wrong: says what and how to fix it
    ├── Unauthenticated     401 UNAUTHENTICATED     no or wrong API key
    ├── NotFound            404 NOT_FOUND           no such deployment (or model)
    ├── NotActive           409 FAILED_PRECONDITION stopped or failed; or an active one cannot be deleted
    ├── QueueFull           429 RESOURCE_EXHAUSTED  the deployment's queue is full: retry later
    └── NotReady            503 UNAVAILABLE         still loading: retry after ``retry_after`` s

Every handler maps these (and only these) to answers; anything else is a bug, logged
and answered as 503 so that a client retries instead of seeing INTERNAL.
"""

from __future__ import annotations

import grpc

__all__ = [
    "InvalidRequest", "NotActive", "NotFound", "NotReady", "QueueFull", "ServingError", "Unauthenticated",
]


class ServingError(Exception):
    code = 503
    grpc_code = grpc.StatusCode.UNAVAILABLE
    kind = "unavailable"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidRequest(ServingError):
    code, grpc_code, kind = 400, grpc.StatusCode.INVALID_ARGUMENT, "invalid_request"


class Unauthenticated(ServingError):
    code, grpc_code, kind = 401, grpc.StatusCode.UNAUTHENTICATED, "unauthenticated"


class NotFound(ServingError):
    code, grpc_code, kind = 404, grpc.StatusCode.NOT_FOUND, "not_found"


class NotActive(ServingError):
    code, grpc_code, kind = 409, grpc.StatusCode.FAILED_PRECONDITION, "conflict"


class QueueFull(ServingError):
    code, grpc_code, kind = 429, grpc.StatusCode.RESOURCE_EXHAUSTED, "queue_full"


class NotReady(ServingError):
    code, grpc_code, kind = 503, grpc.StatusCode.UNAVAILABLE, "not_ready"

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after
