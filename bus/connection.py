"""One NATS connection of ours: credentials in, the server's refusals out as our errors.

nats-py reports a refused CONNECT (no or unknown credentials) and a refused publish or
subscription (the user's permissions) only to its error callback, and keeps retrying
or waiting: a request to a forbidden subject would time out after seconds. Here the
first refusal of a CONNECT ends the connect at once with ``BusUnauthorized``, and each
permissions violation is handed to whatever waits on this connection (``Violations``),
which raises ``BusForbidden`` naming the subject.
"""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import Awaitable, Callable
from typing import TypeVar

import nats.errors

from bus.client import FastHeadersClient
from bus.credentials import Credentials
from bus.errors import BusForbidden, BusUnauthorized, BusUnavailable
from bus.server import host_port

__all__ = ["Violations", "cluster_size", "first_refusal", "open_connection", "parse_violation", "servers"]

T = TypeVar("T")
_VIOLATION = re.compile(r"permissions violation for (publish|subscription) to \"([^\"]*)\"", re.IGNORECASE)
_REFUSED = ("authorization violation", "authentication", "user authentication")


def parse_violation(message: str) -> tuple[str, str] | None:
    """``("publish"|"subscription", subject)`` from a nats-py error text, else None.
    (nats-py lowercases the server's text, so the subject comes back lowercased.)"""
    found = _VIOLATION.search(message)
    return (found.group(1).lower(), found.group(2)) if found else None


class Violations:
    """The permissions violations the server reported on one connection.

    ``guard(op)`` runs ``op`` and fails it with ``BusForbidden`` as soon as a violation
    arrives while it runs; ``listeners`` hear every violation (the appender fails the
    appends to that subject)."""

    def __init__(self, credentials: str | None) -> None:
        self.credentials = credentials
        self.listeners: list[Callable[[str, str], None]] = []
        self._waiters: set[asyncio.Future] = set()

    def report(self, action: str, subject: str) -> None:
        error = BusForbidden(action, subject, self.credentials)
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_exception(error)
        for listener in self.listeners:
            listener(action, subject)

    async def guard(self, op: Awaitable[T]) -> T:
        refused = asyncio.get_running_loop().create_future()
        self._waiters.add(refused)
        task = asyncio.ensure_future(op)
        try:
            await asyncio.wait({task, refused}, return_when=asyncio.FIRST_COMPLETED)
            if task.done():
                return task.result()
            task.cancel()
            return refused.result()  # raises the BusForbidden
        finally:
            self._waiters.discard(refused)
            if not refused.done():
                refused.cancel()
            elif not refused.cancelled():
                refused.exception()  # retrieved: no "never retrieved" warning


async def open_connection(
    url: str, *, credentials: Credentials | None, name: str, timeout: float, flush_linger_s: float
) -> tuple[FastHeadersClient, Violations]:
    """A connected client, or ``BusUnauthorized``/``BusUnavailable`` within ``timeout``."""
    label = str(credentials.path) if credentials else None
    violations = Violations(label)
    loop = asyncio.get_running_loop()
    refused: asyncio.Future = loop.create_future()

    async def on_error(exc: Exception) -> None:
        text = str(exc)
        violation = parse_violation(text)
        if violation is not None:
            violations.report(*violation)
        elif not refused.done() and (
            isinstance(exc, nats.errors.AuthorizationError) or any(word in text.lower() for word in _REFUSED)
        ):
            refused.set_result(text)

    nc = FastHeadersClient()
    nc.flush_linger_s = flush_linger_s
    options = credentials.connect_options() if credentials else {}
    connecting = asyncio.ensure_future(
        nc.connect(
            servers(url),
            name=name,
            connect_timeout=min(2.0, timeout),
            allow_reconnect=True,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.5,
            error_cb=on_error,
            disconnected_cb=_quiet,
            reconnected_cb=_quiet,
            closed_cb=_quiet,
            **options,
        )
    )
    try:
        await asyncio.wait({connecting, refused}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if connecting.done():
            connecting.result()
            return nc, violations
        connecting.cancel()
        await _close_quietly(nc)
        if refused.done():
            raise BusUnauthorized(url, label)
        raise BusUnavailable(url, "TimeoutError")
    except (OSError, nats.errors.Error) as exc:
        raise BusUnavailable(url, type(exc).__name__) from exc
    finally:
        if not refused.done():
            refused.cancel()


def servers(url: str) -> list[str]:
    """The servers of ``url``: one, or a cluster's, comma-separated (``CYXWIZ_NATS_URL``)."""
    return [part.strip() for part in url.split(",") if part.strip()]


def cluster_size(nc) -> int:
    """How many servers the connection knows: those given and those the server told of
    (a cluster's servers advertise each other), so 1 means a lone server."""
    return len({(u.hostname, u.port) for u in nc.servers})


def first_refusal(url: str, timeout: float) -> str | None:
    """None if some server of ``url`` (comma-separated for a cluster) accepts TCP, else why not."""
    reason = None
    for server in servers(url):
        try:
            with socket.create_connection(host_port(server), timeout=timeout):
                return None
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
        except ValueError:
            return None  # an address we cannot parse: let nats-py judge it
    return reason


async def _close_quietly(nc: FastHeadersClient) -> None:
    try:
        await nc.close()
    except (nats.errors.Error, asyncio.TimeoutError, OSError):
        pass


async def _quiet() -> None:
    pass
