"""The one error tree of cyxwiz, and the one table from an error's code to what each
edge answers: the gRPC status, the HTTP status and the CLI's exit code.

Every error of ours is a ``CyxwizError``: it carries ``code`` (HTTP-style, the number
the CyxWiz protocol puts in ``Error.code``) and ``retryable`` (whether trying again can
help). Library errors (NATS, gRPC, DuckDB) are re-raised as ours at the edge that meets
them (``raise X(...) from exc``), so nothing else tells errors apart by their text::

    CyxwizError                        code  retryable
    ├── ConfigError                     400          a setting that cannot be used (central and node)
    ├── events.InvalidEvent             400          data that is not an event of the catalog
    ├── bus.BusError                    503   yes    the event bus (bus/errors.py)
    │   ├── BusUnavailable              503   yes    NATS cannot be reached
    │   ├── ConcurrencyConflict         409   yes    the aggregate moved on: reload, decide again
    │   ├── AppendFailed                503   yes    the server refused or did not acknowledge
    │   ├── ObjectNotFound              404          no such object in a bucket
    │   ├── BusUnauthorized             401          NATS refused our credentials (CredentialsError too)
    │   └── BusForbidden                403          our role may not publish or subscribe there
    ├── central.lifecycle.Refused       4xx          a command that does not fit the state
    ├── central.readmodel: ProjectionError 503 (ProjectionBusy 409), SqlRefused 400, SqlError 400,
    │                      SqlTimeout 400, SqlTooLarge 413, SqlBusy 429 (retryable)
    ├── central.client.ClientError      by code      what central answered the Python client
    ├── central.cli.stack.StackError    503          a part of `cyxwiz up` did not start
    ├── node: DatasetError 400, CheckpointError 400, TrainingError 422, Busy 429, Conflict 409,
    │         Unfit 400, JobProblem (by code), CentralError (by code), ModelLoadError (by code)
    ├── node.serving.ServingError       400/401/404/409/429/503  a deployment or inference request
    ├── node.terminal.Denied            400/401/403/404/409/429  a terminal request refused
    └── protos.grant.GrantInvalid       401          a terminal grant that does not verify

Pure: no I/O, no imports beyond the standard library.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType

__all__ = ["CODES", "ConfigError", "CyxwizError", "Answer", "answer_for", "EXIT_FAILED", "EXIT_OK"]

EXIT_OK = 0
EXIT_FAILED = 1  # the job failed or was cancelled, or something broke inside


@dataclass(frozen=True, slots=True)
class Answer:
    """What every edge answers for one code: the gRPC status name, the CLI exit code, and
    the words a person reads."""

    grpc: str
    exit: int
    meaning: str


CODES = MappingProxyType({
    400: Answer("INVALID_ARGUMENT", 2, "bad input: the message names the field and what to do"),
    401: Answer("UNAUTHENTICATED", 6, "missing or wrong credentials"),
    403: Answer("PERMISSION_DENIED", 6, "the credentials do not allow it"),
    404: Answer("NOT_FOUND", 4, "unknown id"),
    409: Answer("FAILED_PRECONDITION", 5, "refused in the current state: the id is taken, the job has no model yet, "
                                          "the data set exists (--force), the event does not fit the stream"),
    413: Answer("RESOURCE_EXHAUSTED", 2, "the request or its answer is too large"),
    422: Answer("FAILED_PRECONDITION", 1, "the job diverged (NaN or infinite loss)"),
    429: Answer("RESOURCE_EXHAUSTED", 7, "busy: retry later"),
    500: Answer("INTERNAL", 1, "a bug: the message and the log say where"),
    501: Answer("UNIMPLEMENTED", 1, "this server does not serve that method, or this install lacks the part "
                                    "(cyxwiz node: pip install 'cyxwiz[node]')"),
    503: Answer("UNAVAILABLE", 3, "central, a node or NATS cannot be reached: retry"),
    504: Answer("DEADLINE_EXCEEDED", 3, "no answer in time: retry"),
    507: Answer("RESOURCE_EXHAUSTED", 1, "out of memory on the node"),
})


def answer_for(code: int) -> Answer:
    """The answer of an HTTP-style code; an unknown 4xx counts as bad input, 5xx as a bug."""
    found = CODES.get(code)
    if found is not None:
        return found
    return CODES[400] if 400 <= code < 500 else CODES[500]


class CyxwizError(Exception):
    """The root of every error of ours: ``code`` (HTTP-style) and ``retryable``."""

    code: int = 500
    retryable: bool = False

    def __init__(self, message: str = "", *, code: int | None = None, retryable: bool | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        if retryable is not None:
            self.retryable = retryable

    @property
    def exit_code(self) -> int:
        return answer_for(self.code).exit


class ConfigError(CyxwizError, ValueError):
    """A setting that cannot be used; the message names it and what to do."""

    code = 400
