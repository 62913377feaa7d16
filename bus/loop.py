"""The event loop our processes run on: uvloop where it is installed, else asyncio's.

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
