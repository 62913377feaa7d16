"""How fast the node trains, from the epochs its workers report.

Jobs train in worker processes (``node.worker``); what reaches this process is each
epoch's ``EpochResult`` through the executor's listener. :class:`Throughput` stands in
that place, keeps the last samples/s of each running job, then hands every call on to
the listener it wraps (the reporter), so it sees exactly what central is told.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass

from node.executor import Assignment, JobListener, Outcome
from node.trainer import EpochResult

__all__ = ["Throughput", "ThroughputSnapshot"]


@dataclass(frozen=True)
class ThroughputSnapshot:
    """Samples/s of each running job (from its last epoch), and totals since the node started."""

    samples_per_s: dict[str, float]
    epochs: int
    finished: dict[str, int]  # by outcome: completed, failed, cancelled


class Throughput:
    """A :class:`node.executor.JobListener` that measures, then passes each call on."""

    def __init__(self, listener: JobListener) -> None:
        self.listener = listener
        self._lock = threading.Lock()  # the executor calls from each job's thread
        self._rates: dict[str, float] = {}
        self._epochs = 0
        self._finished: Counter[str] = Counter()

    def on_epoch(self, job: Assignment, epoch: EpochResult) -> None:
        with self._lock:
            if epoch.samples_per_s > 0:  # a resumed run's first report has no measurement
                self._rates[job.job_id] = epoch.samples_per_s
            self._epochs += 1
        self.listener.on_epoch(job, epoch)

    def on_end(self, job: Assignment, outcome: Outcome) -> None:
        with self._lock:
            self._rates.pop(job.job_id, None)
            self._finished[outcome.status] += 1
        self.listener.on_end(job, outcome)

    def __getattr__(self, name: str):
        """The listener's other calls (``on_phase``, ``on_progress``, ``on_log``, ...) pass
        through unmeasured; the executor asks with ``getattr``, so a missing one stays missing."""
        if name.startswith("on_"):
            return getattr(self.listener, name)
        raise AttributeError(name)

    def snapshot(self) -> ThroughputSnapshot:
        with self._lock:
            return ThroughputSnapshot(dict(self._rates), self._epochs, dict(self._finished))
