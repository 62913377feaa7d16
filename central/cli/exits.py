"""The CLI's exit codes: one table for every command, read from ``events.errors.CODES``
(the one that also gives each code its gRPC and HTTP status), so a NATS or central that
cannot be reached exits 3 whichever command met it.

    0 done    1 the job failed or was cancelled (or a bug)    2 bad input
    3 central, a node or NATS unreachable    4 unknown id    5 refused in the current state
    6 not authenticated or not allowed    7 busy, retry later
"""

from __future__ import annotations

from events.errors import CODES, EXIT_FAILED, EXIT_OK, CyxwizError

__all__ = ["EXIT_FAILED", "EXIT_INPUT", "EXIT_NOT_FOUND", "EXIT_OK", "EXIT_REFUSED", "EXIT_UNREACHABLE", "exit_code"]

EXIT_INPUT = CODES[400].exit
EXIT_UNREACHABLE = CODES[503].exit
EXIT_NOT_FOUND = CODES[404].exit
EXIT_REFUSED = CODES[409].exit


def exit_code(exc: BaseException) -> int:
    """The exit code of an error of ours (by its code); anything else is a failure."""
    return exc.exit_code if isinstance(exc, CyxwizError) else EXIT_FAILED
