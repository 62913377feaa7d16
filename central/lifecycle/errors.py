"""The refusal every decider raises: a command that does not fit the state."""

from __future__ import annotations

from events.errors import CyxwizError

__all__ = ["Refused"]


class Refused(CyxwizError):
    """A command that does not fit the state.

    ``code`` is HTTP-style (400 invalid, 401 not authenticated, 403 not allowed, 404
    unknown, 409 conflict, 429 busy); ``reason`` names a refusal that callers treat
    apart (``exists``: the id is taken by something else; ``not_holder``: a node reported
    on a job it does not hold)."""

    def __init__(self, code: int, message: str, *, reason: str = "") -> None:
        super().__init__(message, code=code, retryable=code == 429)
        self.message = message
        self.reason = reason
