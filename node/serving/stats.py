"""Serving measurements: per-request latency and errors, per-batch size, in 5 s windows.

Requests are counted where they are answered (the node's loop); batches where they
run. A window closes when a record or a read finds it past its end; closed windows
are kept (one hour by default) for GetDeploymentMetrics and published as telemetry.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

__all__ = ["ServingStats", "Window"]

WINDOW_S = 5.0


@dataclass(frozen=True)
class Window:
    """One closed window: ``start``/``end`` Unix seconds, latencies in ms."""

    start: float
    end: float
    requests: int
    errors: int
    p50_ms: float
    p99_ms: float
    mean_ms: float
    mean_batch: float
    batches: int

    @property
    def throughput_rps(self) -> float:
        return self.requests / max(self.end - self.start, 1e-9)


@dataclass
class _Open:
    start: float
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    batches: int = 0
    samples: int = 0


class ServingStats:
    """Counters of one deployment. Not thread-safe: call from the node's loop only."""

    def __init__(self, *, window_s: float = WINDOW_S, keep: int = 720, clock: Callable[[], float] = time.time) -> None:
        self.window_s = window_s
        self.clock = clock
        self.closed: deque[Window] = deque(maxlen=keep)
        self.total_requests = 0
        self.total_errors = 0
        self._latency_sum_ms = 0.0
        self._open = _Open(self._window_start(clock()))
        self._export: _Open | None = None  # what a serving process has not handed to the node yet

    def start_export(self) -> None:
        """Keep every record also for :meth:`take_export` (a serving process's stats go to the node)."""
        self._export = _Open(0.0)

    def _window_start(self, now: float) -> float:
        return now - (now % self.window_s)

    def roll(self) -> list[Window]:
        """Close the open window if its time is over; the windows closed now."""
        now = self.clock()
        if now < self._open.start + self.window_s:
            return []
        current = self._open
        self._open = _Open(self._window_start(now))
        if not current.latencies and not current.errors and not current.batches:
            return []
        window = _summary(current, current.start + self.window_s)
        self.closed.append(window)
        return [window]

    def request(self, latency_s: float) -> None:
        self.roll()
        ms = latency_s * 1000.0
        self._open.latencies.append(ms)
        self.total_requests += 1
        self._latency_sum_ms += ms
        if self._export is not None:
            self._export.latencies.append(ms)

    def error(self) -> None:
        self.roll()
        self._open.errors += 1
        self.total_errors += 1
        if self._export is not None:
            self._export.errors += 1

    def batch(self, samples: int) -> None:
        self.roll()
        self._open.batches += 1
        self._open.samples += samples
        if self._export is not None:
            self._export.batches += 1
            self._export.samples += samples

    def take_export(self) -> tuple[list[float], int, int, int]:
        """The records since the last call: (latencies in ms, errors, batches, samples)."""
        taken, self._export = self._export or _Open(0.0), _Open(0.0)
        return taken.latencies, taken.errors, taken.batches, taken.samples

    def merge(self, latencies_ms: list[float], errors: int, batches: int, samples: int) -> None:
        """Records another serving process made (they join the open window)."""
        self.roll()
        self._open.latencies.extend(latencies_ms)
        self._open.errors += errors
        self._open.batches += batches
        self._open.samples += samples
        self.total_requests += len(latencies_ms)
        self.total_errors += errors
        self._latency_sum_ms += sum(latencies_ms)

    @property
    def avg_latency_ms(self) -> float:
        return self._latency_sum_ms / self.total_requests if self.total_requests else 0.0

    def between(self, start: float, end: float) -> list[Window]:
        """Closed windows that overlap [start, end]; 0 for either means open-ended."""
        self.roll()
        return [w for w in self.closed if (not start or w.end >= start) and (not end or w.start <= end)]


def _summary(w: _Open, end: float) -> Window:
    lat = np.asarray(w.latencies) if w.latencies else np.zeros(1)
    p50, p99 = (float(v) for v in np.percentile(lat, [50, 99]))
    return Window(
        start=w.start, end=end, requests=len(w.latencies), errors=w.errors, p50_ms=p50, p99_ms=p99,
        mean_ms=float(lat.mean()), mean_batch=w.samples / w.batches if w.batches else 0.0, batches=w.batches,
    )
