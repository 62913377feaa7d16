"""A job's log as its worker tells it: the lines a user reads with ``cyxwiz jobs logs``
(data loaded, compiled in N s, each epoch, warnings, the error with its traceback) and
where it is within an epoch, at a bounded rate.

``JobDiary`` runs in the worker process and only sends tuples to the node (``("log",
level, message, traceback)``, ``("phase", phase)``, ``("progress", epoch, step,
steps)``); the node's reporter publishes them as ``JobLog`` and ``JobPhase`` telemetry
on ``telemetry.job.<job_id>``.
"""

from __future__ import annotations

import contextlib
import logging
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["PROGRESS_INTERVAL_S", "JobDiary", "epoch_line"]

PROGRESS_INTERVAL_S = 0.25  # in-epoch progress at most four times a second


def epoch_line(epoch: Any) -> str:
    """``epoch 3/10: loss 0.2141, accuracy 0.9312, val_loss 0.2533, val_accuracy 0.9200 (1.24 s, 1,450 samples/s)``."""
    figures = [f"{name} {value:.4f}" for name in ("loss", "accuracy", "val_loss", "val_accuracy")
               if (value := getattr(epoch, name)) is not None]
    return (f"epoch {epoch.epoch}/{epoch.total_epochs}: {', '.join(figures) or 'no metrics'} "
            f"({epoch.seconds:.2f} s, {epoch.samples_per_s:,.0f} samples/s)")


class JobDiary:
    """What one job's worker says about it besides its epochs and its end."""

    def __init__(self, send: Callable[..., None], clock: Callable[[], float] = time.monotonic) -> None:
        self.send = send
        self.clock = clock
        self._compiling_since: float | None = None
        self._last_progress = -1e9

    def line(self, message: str, level: str = "info", trace: str = "") -> None:
        self.send("log", level, message, trace)

    def phase(self, phase: str) -> None:
        self.send("phase", phase)
        if phase == "compiling":
            self._compiling_since = self.clock()
        elif phase == "training" and self._compiling_since is not None:
            self.line(f"compiled in {self.clock() - self._compiling_since:.2f} s")
            self._compiling_since = None

    def progress(self, epoch: int, step: int, steps: int) -> None:
        now = self.clock()
        if now - self._last_progress >= PROGRESS_INTERVAL_S:
            self._last_progress = now
            self.send("progress", epoch, step, steps)

    def epoch(self, epoch: Any) -> None:
        self.line(epoch_line(epoch))

    def loaded(self, dataset: Any, seconds: float) -> None:
        what = f"{dataset.num_classes} classes" if dataset.task == "classification" else "regression"
        self.line(f"loaded {dataset.uri}: {dataset.x.shape[0]:,} samples of shape {list(dataset.sample_shape)}, "
                  f"{what} ({seconds:.2f} s)")

    def crashed(self, exc: BaseException, summary: str) -> None:
        """The error the job ends with, and where it came from."""
        self.line(summary, "error", "".join(traceback.format_exception(exc)))

    @contextlib.contextmanager
    def warnings_as_lines(self) -> Iterator[None]:
        """Python warnings and WARNING log records raised while the job runs become
        warning lines of its log (the worker runs one job at a time)."""
        diary = self

        class ToDiary(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                if record.name.startswith("node."):
                    return  # ours: what they say reaches the log as the job's own lines
                try:
                    diary.line(f"{record.name}: {record.getMessage()}", "warning")
                except Exception:  # noqa: BLE001 - a log line must never fail the job
                    pass

        handler = ToDiary(logging.WARNING)
        root = logging.getLogger()
        root.addHandler(handler)
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            previous = warnings.showwarning
            warnings.showwarning = lambda message, category, *_a, **_k: self.line(
                f"{category.__name__}: {message}", "warning")
            try:
                yield
            finally:
                warnings.showwarning = previous
                root.removeHandler(handler)
