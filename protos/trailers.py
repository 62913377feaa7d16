"""What a failed gRPC call carries beside its status: the error in the method's own
answer message (``cyxwiz-error-bin``, the CyxWiz protocol's ``Error``) and its
HTTP-style code (``cyxwiz-code``), so a client learns the exact code even where two
codes share one gRPC status (409 and 422 are both FAILED_PRECONDITION).

    await context.abort(status, message, trailing_metadata=error_trailers(response, 409))
    ...
    code = code_of(rpc_error)      # 409, or None from a server that does not send it
"""

from __future__ import annotations

from typing import Any

from events.errors import CODES

__all__ = ["CODE_TRAILER", "ERROR_TRAILER", "code_of", "error_trailers"]

ERROR_TRAILER = "cyxwiz-error-bin"
CODE_TRAILER = "cyxwiz-code"
_BY_STATUS: dict[str, int] = {}
for _code, _answer in CODES.items():  # the first code of each status is its plain meaning
    _BY_STATUS.setdefault(_answer.grpc, _code)
_BY_STATUS.setdefault("ALREADY_EXISTS", 409)
_BY_STATUS.setdefault("ABORTED", 409)


def error_trailers(response: Any, code: int) -> tuple[tuple[str, Any], ...]:
    """The trailing metadata of a call that fails with ``code``; ``response`` is the
    method's answer message with its ``error`` filled in."""
    return ((ERROR_TRAILER, response.SerializeToString()), (CODE_TRAILER, str(code)))


def code_of(exc: Any) -> int | None:
    """The HTTP-style code of a failed call: the server's ``cyxwiz-code`` trailer, else the
    code the call's gRPC status stands for in ``events.errors.CODES`` (None if neither)."""
    trailers = exc.trailing_metadata() if hasattr(exc, "trailing_metadata") else None
    for key, value in trailers or ():
        if key == CODE_TRAILER and isinstance(value, str) and value.isdigit() and len(value) == 3:
            return int(value)
    status = exc.code() if hasattr(exc, "code") else None
    return _BY_STATUS.get(getattr(status, "name", ""))
