"""User SQL off central's event loop, in a bounded pool of worker threads.

    pool = QueryPool(projection.query, workers=4, waiting=4)
    result = await pool.run("SELECT ...", max_rows=100)   # SqlBusy when full
    pool.close()

At most ``workers`` queries run at once (each thread runs one query on a cursor of its
own, opened for that query); ``waiting`` more may wait for a thread. Beyond that a query
is refused at once with ``SqlBusy`` instead of piling up, so a burst of long queries
cannot take the threads the rest of central reads with (the REST reads of the
projection have their own pool) nor grow without bound. The workers run at a lower CPU
priority (nice 10), so a long query takes what central's loop leaves.
"""

from __future__ import annotations

import asyncio
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable

from central.readmodel.sql import QueryResult
from events.errors import CyxwizError

__all__ = ["QueryPool", "SqlBusy"]

_NICE = 10


class SqlBusy(CyxwizError):
    """Every worker is busy and the waiting line is full; retry after ``retry_after_s``."""

    code = 429
    retryable = True

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class QueryPool:
    def __init__(self, run: Callable[..., QueryResult], *, workers: int = 4, waiting: int = 4,
                 retry_after_s: int = 5) -> None:
        self._run = run
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cyxwiz-sql",
                                            initializer=_lower_priority)
        self.workers = workers
        self.capacity = workers + waiting
        self.retry_after_s = retry_after_s
        self._lock = threading.Lock()
        self._taken = 0

    @property
    def in_flight(self) -> int:
        """Queries running or waiting for a thread."""
        return self._taken

    async def run(self, sql: str, **kwargs) -> QueryResult:
        """``run(sql, **kwargs)`` in a worker thread; ``SqlBusy`` if the pool is full."""
        with self._lock:
            if self._taken >= self.capacity:
                raise SqlBusy(
                    f"central is running {self.workers} SQL queries and {self.capacity - self.workers} more wait, "
                    f"the limit: try again in {self.retry_after_s} s", self.retry_after_s)
            self._taken += 1
        try:
            future = self._executor.submit(self._run, sql, **kwargs)
        except BaseException:
            self._release(None)
            raise
        future.add_done_callback(self._release)  # a query whose caller left still holds its place until it ends
        return await asyncio.wrap_future(future)

    def _release(self, _: Future | None) -> None:
        with self._lock:
            self._taken -= 1

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def _lower_priority() -> None:
    """Run this worker thread at a lower CPU priority (Linux threads have their own nice
    value), so users' queries yield the CPU to central's loop and the API's own reads."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), _NICE)
    except (AttributeError, OSError):  # not Linux, or not allowed: run at the normal priority
        pass
