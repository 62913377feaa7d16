"""The PTY's output on its way to a stream: a bounded buffer with back-pressure.

The PTY is read into a buffer of at most ``limit`` bytes (1 MiB); when it is full the
node stops reading, the PTY's own queue fills, and the program writing to it blocks:
back-pressure reaches the program instead of memory growing. Chunks leave at most
``chunk`` bytes (32 KiB) at a time; bytes that arrive within ``flush_s`` (5 ms) of the
last chunk wait for that moment so a burst travels in few messages, while a keystroke's
echo after a quiet spell leaves at once.
"""

from __future__ import annotations

import asyncio
import errno
import os
import time

__all__ = ["OutputPump"]

BUFFER_LIMIT = 1 << 20
CHUNK = 32 * 1024
FLUSH_S = 0.005


class OutputPump:
    def __init__(self, fd: int, *, limit: int = BUFFER_LIMIT, chunk: int = CHUNK, flush_s: float = FLUSH_S) -> None:
        self.fd = fd
        self.limit = limit
        self.chunk = chunk
        self.flush_s = flush_s
        self.buffer = bytearray()
        self.eof = False
        self.total = 0
        self.paused = False
        self.last_read = time.monotonic()
        self._last_sent = 0.0
        self._loop = asyncio.get_running_loop()
        self._waiter: asyncio.Future | None = None
        self._interrupted = False
        self._loop.add_reader(fd, self._on_readable)

    def _on_readable(self) -> None:
        try:
            data = os.read(self.fd, min(65536, self.limit - len(self.buffer)))
        except BlockingIOError:
            return
        except OSError as exc:  # EIO: every writer of the PTY has closed it
            if exc.errno not in (errno.EIO, errno.EBADF):
                raise
            data = b""
        if not data:
            self.eof = True
            self._loop.remove_reader(self.fd)
        else:
            self.buffer += data
            self.total += len(data)
            self.last_read = time.monotonic()
            if len(self.buffer) >= self.limit:
                self._loop.remove_reader(self.fd)
                self.paused = True
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _wait(self, timeout: float | None) -> None:
        self._waiter = self._loop.create_future()
        try:
            if timeout is None:
                await self._waiter
            else:
                await asyncio.wait_for(self._waiter, timeout)
        except asyncio.TimeoutError:
            pass
        finally:
            self._waiter = None

    async def next_chunk(self) -> bytes | None:
        """The next chunk of output, or None once the PTY is closed and all was sent."""
        while not self.buffer and not self.eof and not self._interrupted:
            await self._wait(None)
        if self._interrupted:
            self._interrupted = False
            return None
        if self.buffer and len(self.buffer) < self.chunk and not self.eof:
            delay = self._last_sent + self.flush_s - time.monotonic()
            while delay > 0 and len(self.buffer) < self.chunk and not self.eof:
                await self._wait(delay)
                delay = self._last_sent + self.flush_s - time.monotonic()
        if not self.buffer:
            return None
        out = bytes(self.buffer[: self.chunk])
        del self.buffer[: self.chunk]
        if self.paused and len(self.buffer) < self.limit and not self.eof:
            self.paused = False
            self._loop.add_reader(self.fd, self._on_readable)
        self._last_sent = time.monotonic()
        return out

    def interrupt(self) -> None:
        """Make the pending (or next) ``next_chunk`` return None at once."""
        self._interrupted = True
        self._wake()

    def close(self) -> None:
        if not self.eof:
            self.eof = True
            try:
                self._loop.remove_reader(self.fd)
            except (ValueError, OSError):
                pass
        self._wake()
