"""Wait for a condition with a deadline, never for a fixed time."""

from __future__ import annotations

import asyncio
import inspect
import time


async def eventually(check, timeout: float = 10.0, interval: float = 0.02, message: str = ""):
    """Poll ``check`` (sync or async) until it returns a truthy value; return that value."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            result = check()
            if inspect.isawaitable(result):
                result = await result
            if result:
                return result
        except AssertionError as exc:
            last_error = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s: {message or check}") from last_error
        await asyncio.sleep(interval)


def wait_until(check, timeout: float = 10.0, interval: float = 0.02, message: str = ""):
    """Blocking twin of ``eventually`` for synchronous tests."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s: {message or check}")
        time.sleep(interval)
