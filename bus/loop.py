"""The event loop our processes run on (uvloop where it is installed, else asyncio's),
and a cheap wait with a deadline for hot paths.

uvloop takes about a sixth off the CPU that central spends per job, and a tenth off a
projector's per event (measured in bench/central_bench.py and bench/backbone_bench.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


async def wait_for_future(future: asyncio.Future[T], timeout: float, default: T) -> T:
    """``await future``, or ``default`` once ``timeout`` seconds pass (the future is then
    settled with it). One timer per wait: ``asyncio.wait_for`` makes a task per call,
    which appends, fold waits and dispatch calls cannot afford by the thousand."""
    timer = future.get_loop().call_later(timeout, _settle, future, default)
    try:
        return await future
    finally:
        timer.cancel()


def _settle(future: asyncio.Future, value: object) -> None:
    if not future.done():
        future.set_result(value)
