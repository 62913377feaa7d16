"""Why a serving call did not do what was asked, under the one error tree
(:class:`events.errors.CyxwizError`): ``code`` is HTTP-style; the gRPC status comes from
the tree's one table (``events.errors.answer_for``).

    ServingError            503  (a bug in a handler: answered as retryable, never INTERNAL)
    ├── InvalidRequest      400 INVALID_ARGUMENT    the request is wrong: says what and how to fix it
    ├── Unauthenticated     401 UNAUTHENTICATED     no or wrong API key
    ├── NotFound            404 NOT_FOUND           no such deployment (or model)
    ├── NotActive           409 FAILED_PRECONDITION stopped or failed; or an active one cannot be deleted
    ├── QueueFull           429 RESOURCE_EXHAUSTED  the deployment's queue is full: retry later
    └── NotReady            503 UNAVAILABLE         still loading: retry after ``retry_after`` s
"""

from __future__ import annotations

import grpc

from events.errors import CyxwizError, answer_for

__all__ = [
    "InvalidRequest", "NotActive", "NotFound", "NotReady", "QueueFull", "ServingError", "Unauthenticated",
]


class ServingError(CyxwizError):
    code = 503
    retryable = True
    kind = "unavailable"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    @property
    def grpc_code(self) -> grpc.StatusCode:
        return grpc.StatusCode[answer_for(self.code).grpc]


class InvalidRequest(ServingError):
    code, retryable, kind = 400, False, "invalid_request"


class Unauthenticated(ServingError):
    code, retryable, kind = 401, False, "unauthenticated"


class NotFound(ServingError):
    code, retryable, kind = 404, False, "not_found"


class NotActive(ServingError):
    code, retryable, kind = 409, False, "conflict"


class QueueFull(ServingError):
    code, retryable, kind = 429, True, "queue_full"


class NotReady(ServingError):
    code, retryable, kind = 503, True, "not_ready"

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after
