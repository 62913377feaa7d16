"""Checkpoints off the training thread: each epoch's result is delivered, in order, by
one background thread; an epoch that carries a snapshot (a copy of the train state
still on the device) is delivered once that snapshot is copied to the host,
serialized and hashed.

At most one snapshot is being written at a time. A snapshot still waiting when a
newer one arrives is dropped (its epoch is delivered without a checkpoint), so a slow
store or listener never makes training wait and never holds more than two snapshots
on the device. ``lossless=True`` keeps every snapshot instead: the training thread
waits for the one in flight before queuing the next (tests of resume use it).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from node import checkpoint

__all__ = ["EpochPipeline"]


class EpochPipeline:
    """Delivers epochs from a background thread (see the module docstring)."""

    def __init__(self, deliver: Callable[[Any], None], *, lossless: bool = False) -> None:
        self._deliver = deliver
        self._lossless = lossless
        self._items: deque[tuple[Any, Callable[[], bytes] | None]] = deque()
        self._busy = False
        self._closed = False
        self._error: BaseException | None = None
        self._cond = threading.Condition()
        self.dropped = 0
        self._thread = threading.Thread(target=self._loop, name="checkpoints", daemon=True)
        self._thread.start()

    def put(self, epoch: Any, write: Callable[[], bytes] | None = None) -> None:
        """Queue ``epoch``; ``write()`` (run in the background) gives its checkpoint bytes.

        Raises what an earlier delivery raised (a listener's error ends the run).
        """
        with self._cond:
            if self._lossless and write is not None:
                self._cond.wait_for(lambda: self._error is not None or not (self._busy or self._items))
            self._raise_error()
            if write is not None:
                for i, (waiting, old) in enumerate(self._items):
                    if old is not None:
                        self._items[i] = (waiting, None)
                        self.dropped += 1
            self._items.append((epoch, write))
            self._cond.notify_all()

    def pending(self) -> bool:
        with self._cond:
            return self._busy or bool(self._items)

    def close(self, *, raise_error: bool = True) -> None:
        """Deliver what is queued, stop the thread, and raise a delivery's error if any."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join()
        with self._cond:
            if raise_error:
                self._raise_error()

    def _raise_error(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def _loop(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._items or self._closed)
                if not self._items:
                    return
                epoch, write = self._items.popleft()
                self._busy = True
            try:
                if write is not None:
                    data = write()
                    epoch = replace(epoch, checkpoint=data, checkpoint_sha256=checkpoint.sha256_hex(data))
                self._deliver(epoch)
            except BaseException as exc:  # noqa: BLE001 - handed to the training thread
                with self._cond:
                    self._error = exc
                    self._items.clear()
                    self._busy = False
                    self._cond.notify_all()
                return
            with self._cond:
                self._busy = False
                self._cond.notify_all()
