"""Errors of the event bus, with NATS's own errors translated at this boundary.

    BusError
    ├── BusUnavailable        the NATS server cannot be reached (retry may help)
    ├── ConcurrencyConflict   the aggregate moved on since it was read: reload, decide again
    ├── AppendFailed          the server refused or did not acknowledge an append
    └── ObjectNotFound        no such object in an object store bucket
"""

from __future__ import annotations

from events.errors import CyxwizError


class BusError(CyxwizError):
    code = 503
    retryable = False


class BusUnavailable(BusError):
    retryable = True

    def __init__(self, url: str, reason: str = "") -> None:
        self.url = url
        detail = f" ({reason})" if reason else ""
        super().__init__(
            f"cannot reach NATS at {url}{detail}; start it, or set CYXWIZ_NATS_URL / --nats "
            "to a running server"
        )


class ConcurrencyConflict(BusError):
    code = 409
    retryable = True

    def __init__(self, subject: str, expected: int, detail: str = "") -> None:
        self.subject = subject
        self.expected = expected
        super().__init__(
            f"{subject} is no longer at sequence {expected}{': ' + detail if detail else ''}; "
            "reload the aggregate and decide again"
        )


class AppendFailed(BusError):
    retryable = True


class ObjectNotFound(BusError):
    code = 404

    def __init__(self, bucket: str, name: str) -> None:
        self.bucket = bucket
        self.name = name
        super().__init__(f"no object {name!r} in bucket {bucket!r}")
