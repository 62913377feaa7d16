"""The fast path: a predict function compiled per batch size, and a dynamic batcher.

:class:`Predictor` puts the parameters on the device once and compiles ``predict`` for
sizes 1 and ``max_batch`` before the deployment is RUNNING, then every power of two
between in the background, so no request pays compilation; a batch is padded to the
next compiled size. It also times a full batch (``batch_seconds``).

:class:`Batcher` runs batches in one of two ways, both bounded by ``queue_size``:

- **in a worker thread**: the node's loop hands requests to the worker through a
  queue. The worker takes what is queued; on an idle deployment a lone request runs at
  once; under load (the last batch held more than one request) it waits up to
  ``max_delay_s`` after the first request for more, up to ``max_batch`` samples.
  Results go back to the loop once per batch.
- **on the loop, while idle** (``inline``; the node allows it for a CPU model whose full
  batch takes at most ``INLINE_LIMIT_S``): a request that finds the deployment idle runs
  at once in the handler that submitted it, with no hop to the worker and back (two
  wake-ups and two GIL hand-overs cost more than a model this small). The deployment is
  *busy* from the moment a request arrives while another is with the worker (more than
  one caller) until the worker answers a batch of one with nothing else in flight; while
  busy every request goes to the worker, which gathers them and runs the model off the
  loop. One idle request in ``PROBE_EVERY`` goes to the worker anyway, so that a second
  caller can be seen at all.

``close()`` refuses new requests and answers every accepted one; ``join()`` waits for that.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from node.serving.errors import NotActive, QueueFull, ServingError
from node.serving.source import LoadedModel

__all__ = ["CPU_ALIGN", "INLINE_LIMIT_S", "PROBE_EVERY", "Batcher", "Predictor", "aligned_empty", "batch_sizes"]

log = logging.getLogger(__name__)

# XLA's CPU client uses a host array in place when it is aligned to this many bytes and
# copies it (slowly: 2.7 ms against 0.56 ms for a 4 MiB input on the 2-core machine)
# otherwise; numpy aligns to 16 and a request's bytes land anywhere.
CPU_ALIGN = 64
ALIGN_FROM_BYTES = 1 << 16  # below this the copy costs less than the check
INLINE_LIMIT_S = 0.001  # a full batch this fast runs on the loop (see the module docstring)
_TIMING_RUNS = 5
_TIMING_BUDGET_S = 0.05  # a slow model is timed fewer times: it is far over the limit anyway
PROBE_EVERY = 32  # an idle inline batcher still sends one request in this many to its worker


def aligned_empty(shape: tuple[int, ...], align: int) -> np.ndarray:
    """A float32 array (not initialized) whose data starts on an ``align``-byte boundary."""
    count = int(np.prod(shape))
    raw = np.empty(count * 4 + align, np.uint8)
    start = -raw.ctypes.data % align
    return raw[start : start + count * 4].view(np.float32).reshape(shape)


def batch_sizes(max_batch: int) -> list[int]:
    """Powers of two below ``max_batch``, then ``max_batch``: the sizes compiled."""
    sizes, size = [], 1
    while size < max_batch:
        sizes.append(size)
        size *= 2
    return [*sizes, max_batch]


class Predictor:
    """``predictor(x)`` for float32 ``x`` of ``[n, *sample_shape]``, any n: probabilities
    for a classifier (softmax of the model's output), the output itself otherwise.

    Construction compiles sizes 1 and ``max_batch`` (every batch fits one of them, so
    the deployment can run); :meth:`compile_rest` adds the sizes between, which then
    serve smaller batches with less padding.
    """

    def __init__(self, loaded: LoadedModel, max_batch: int) -> None:
        import jax
        import jax.numpy as jnp

        self.max_batch = max_batch
        self.sample_shape = loaded.sample_shape
        self.sizes = batch_sizes(max_batch)
        self.device = jax.devices()[0]
        self._align = self.on_cpu
        self._buffers = threading.local()  # size -> aligned staging array, see _staging
        self.params = jax.device_put(loaded.params, self.device)
        apply, softmax = loaded.model.apply, loaded.classification

        def predict(params, x):
            out = apply(params, x)
            return jax.nn.softmax(out, axis=-1) if softmax else out

        jitted = jax.jit(predict)
        self._lower = lambda size: jitted.lower(
            self.params, jax.ShapeDtypeStruct((size, *self.sample_shape), jnp.float32)
        ).compile()
        self._compiled: dict[int, object] = {}
        self._ready: tuple[int, ...] = ()
        for size in sorted({1, max_batch}):
            self._add(size)
        self.batch_seconds = self._time(max_batch)

    def _time(self, size: int) -> float:
        """The median wall time of predicting ``size`` samples (the first call warms up)."""
        x = np.zeros((size, *self.sample_shape), np.float32)
        self(x)
        runs: list[float] = []
        while len(runs) < _TIMING_RUNS and sum(runs) < _TIMING_BUDGET_S:
            started = time.perf_counter()
            self(x)
            runs.append(time.perf_counter() - started)
        return sorted(runs)[len(runs) // 2]

    @property
    def on_cpu(self) -> bool:
        return self.device.platform == "cpu"

    @property
    def compiled_sizes(self) -> tuple[int, ...]:
        return self._ready

    def _add(self, size: int) -> None:
        self._compiled[size] = self._lower(size)
        self._ready = tuple(sorted(self._compiled))  # replaced whole: the worker reads it unlocked

    def compile_rest(self) -> None:
        """Compile the sizes between 1 and ``max_batch`` (from the smallest up)."""
        for size in self.sizes:
            if size not in self._compiled and self.params is not None:
                self._add(size)

    def _size(self, n: int) -> int:
        for size in self._ready:
            if size >= n:
                return size
        return self.max_batch

    def __call__(self, x: np.ndarray) -> np.ndarray:
        n = x.shape[0]
        if n > self.max_batch:
            return np.concatenate([self(x[i : i + self.max_batch]) for i in range(0, n, self.max_batch)])
        size = self._size(n)
        large = self._align and x.nbytes >= ALIGN_FROM_BYTES
        if size != n or (large and x.ctypes.data % CPU_ALIGN):
            padded = self._staging(size) if large else np.empty((size, *self.sample_shape), np.float32)
            padded[:n] = x
            padded[n:] = 0.0
            x = padded
        return np.asarray(self._compiled[size](self.params, x))[:n]

    def _staging(self, size: int) -> np.ndarray:
        """An aligned input buffer of ``size`` samples, kept per thread and reused (a
        fresh 4 MiB array costs 1,024 page faults each time): the call that fills it
        waits for its result, so nothing else reads it meanwhile."""
        buffers = self._buffers.__dict__
        buffer = buffers.get(size)
        if buffer is None:
            buffer = buffers[size] = aligned_empty((size, *self.sample_shape), CPU_ALIGN)
        return buffer

    def release(self) -> None:
        """Drop the device buffers and executables."""
        self.params = None
        self._buffers = threading.local()
        self._ready = ()
        self._compiled.clear()


@dataclass(slots=True)
class _Item:
    x: np.ndarray
    future: asyncio.Future


_STOP = None


class Batcher:
    """Runs ``predict`` on batches of queued requests in one worker thread (and, when
    ``inline``, a request on an idle deployment on the loop itself)."""

    def __init__(
        self, predict: Callable[[np.ndarray], np.ndarray], *, max_batch: int, max_delay_s: float, queue_size: int,
        gather: bool = True, on_batch: Callable[[int], None] | None = None, name: str = "batcher",
        inline: bool = False,
    ) -> None:
        self.predict = predict
        self.max_batch = max_batch
        self.max_delay_s = max_delay_s
        self.queue_size = queue_size
        self.gather = gather
        self.on_batch = on_batch
        self.inline = inline
        self._loop = asyncio.get_running_loop()
        self._closed = False
        # on the loop: requests with the worker, whether the deployment is busy, idle runs since a probe
        self._inflight = 0
        self._busy = False
        self._since_probe = 0
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def busy(self) -> bool:
        """More than one caller seen lately: every request goes to the worker."""
        return self._busy

    def submit(self, x: np.ndarray) -> asyncio.Future:
        """Queue ``x`` (call on the loop); the future gets its rows of the output."""
        if self._closed:
            raise NotActive("the deployment is stopping; it takes no new requests")
        if self._inflight >= self.queue_size:
            raise QueueFull(f"the deployment's queue is full ({self.queue_size} requests waiting): retry shortly")
        item = _Item(x, self._loop.create_future())
        if self._inflight:
            self._busy = True  # a second caller while the worker holds a request
        elif self.inline and not self._busy and self._since_probe < PROBE_EVERY:
            self._since_probe += 1
            out, error = self._predict([item])
            self._deliver([item], out, error)
            return item.future
        self._since_probe = 0
        self._inflight += 1
        self._queue.put(item)
        return item.future

    def close(self) -> None:
        """Take no new requests; the worker answers those queued, then ends."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)

    def join(self, timeout: float | None = None) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    # --- worker thread ------------------------------------------------------------

    def _run(self) -> None:
        carry: _Item | None = None
        under_load = False
        while True:
            first = carry if carry is not None else self._queue.get()
            carry = None
            if first is _STOP:
                return
            batch, stop, carry = self._gather(first, under_load)
            under_load = len(batch) > 1 or carry is not None
            self._execute(batch)
            if stop:
                return

    def _gather(self, first: _Item, under_load: bool) -> tuple[list[_Item], bool, _Item | None]:
        batch, n = [first], first.x.shape[0]
        deadline = time.perf_counter() + self.max_delay_s
        while self.gather and n < self.max_batch:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                remaining = deadline - time.perf_counter()
                if not under_load or remaining <= 0:
                    break
                try:
                    item = self._queue.get(timeout=remaining)
                except queue.Empty:
                    break
            if item is _STOP:
                return batch, True, None
            if n + item.x.shape[0] > self.max_batch:
                return batch, False, item
            batch.append(item)
            n += item.x.shape[0]
        return batch, False, None

    def _predict(self, batch: list[_Item]) -> tuple[np.ndarray | None, Exception | None]:
        try:
            x = batch[0].x if len(batch) == 1 else np.concatenate([item.x for item in batch])
            return self.predict(x), None
        except Exception as exc:  # a runtime failure of the device (out of memory, ...)
            log.exception("prediction failed for a batch of %d request(s)", len(batch))
            return None, ServingError(f"prediction failed on the node: {type(exc).__name__}: {exc}; retry")

    def _execute(self, batch: list[_Item]) -> None:
        out, error = self._predict(batch)
        try:
            self._loop.call_soon_threadsafe(self._from_worker, batch, out, error)
        except RuntimeError:  # the loop is closed: the process is ending
            pass

    def _from_worker(self, batch: list[_Item], out: np.ndarray | None, error: Exception | None) -> None:
        self._inflight -= len(batch)
        if self._inflight == 0 and len(batch) == 1:
            self._busy = False  # the worker found nothing else to run: one caller at most
        self._deliver(batch, out, error)

    def _deliver(self, batch: list[_Item], out: np.ndarray | None, error: Exception | None) -> None:
        if self.on_batch is not None:
            self.on_batch(sum(item.x.shape[0] for item in batch))
        start = 0
        for item in batch:
            n = item.x.shape[0]
            if not item.future.done():
                if error is None:
                    item.future.set_result(out[start : start + n])
                else:
                    item.future.set_exception(error)
            start += n
