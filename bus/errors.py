"""Errors of the event bus, with NATS's own errors translated at this boundary.

    BusError
    ├── BusUnavailable        the NATS server cannot be reached (retry may help)
    │   └── BusUnauthorized   401: the server refused our credentials (none, or not its users)
    │       └── CredentialsError  the credentials file cannot be used (missing, no seed)
    ├── BusForbidden          403: the credentials' role may not do this (a permissions violation)
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


CREDS_HINT = (
    "set CYXWIZ_NATS_CREDS to an nkey seed or .creds file the server accepts "
    "(`cyxwiz nats creds --role ROLE -o FILE` on central's machine writes one)"
)


class BusUnauthorized(BusUnavailable):
    """The server refused the connection's credentials: a retry with the same ones cannot help."""

    code = 401
    retryable = False

    def __init__(self, url: str, credentials: str | None) -> None:
        self.url = url
        self.credentials = credentials
        Exception.__init__(
            self,
            f"NATS at {url} refused the connection "
            f"({'credentials ' + credentials if credentials else 'no credentials given'}); {CREDS_HINT}",
        )


class CredentialsError(BusUnauthorized):
    """A credentials file that cannot be used (missing, unreadable, no valid seed)."""

    def __init__(self, message: str) -> None:
        self.url = ""
        self.credentials = None
        Exception.__init__(self, f"{message}; {CREDS_HINT}")


class BusForbidden(BusError):
    """The server refused one publish or subscription of these credentials."""

    code = 403

    def __init__(self, action: str, subject: str, credentials: str | None = None) -> None:
        self.action = action
        self.subject = subject
        self.credentials = credentials
        whose = f"the credentials {credentials}" if credentials else "these credentials"
        super().__init__(
            f"NATS refused {action} to {subject!r} for {whose}: their role may not do it; "
            "use credentials of a role that may (`cyxwiz nats creds --role ROLE -o FILE`, CYXWIZ_NATS_CREDS)"
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
