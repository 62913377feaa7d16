"""The job executor: a fixed number of slots, one worker thread per running job.

Each job is isolated: whatever goes wrong inside it (bad data, a model that does not
fit, an unknown optimizer, a NaN loss, running out of memory, a bug) ends that job
alone as a failed :class:`Outcome` with a one-line error naming the field or problem;
the node keeps serving. Cancellation sets a flag that the trainer reads between
chunks of steps (``should_stop``), so a job stops at the next step boundary.

The executor never talks to the network itself: a :class:`JobListener` (the reporter)
receives each epoch and the outcome, and must not block the worker thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

from node.datasets import DatasetError, load_dataset
from node.trainer import EpochResult, TrainConfig, Trainer, TrainingError, TrainResult

__all__ = [
    "Assignment", "Busy", "Conflict", "Executor", "JobListener", "Outcome",
    "COMPLETED", "FAILED", "CANCELLED",
]

log = logging.getLogger(__name__)

COMPLETED, FAILED, CANCELLED = "completed", "failed", "cancelled"
# Hyperparameters the node reads itself; the rest go to the trainer.
NODE_HYPERPARAMETERS = ("label_column", "checkpoint_every")


@dataclass(frozen=True, kw_only=True)
class Assignment:
    """A job as the node runs it (our own type: protobuf stays in the service)."""

    job_id: str
    attempt: int = 1
    model_definition: str
    hyperparameters: Mapping[str, str] = field(default_factory=dict)
    dataset_uri: str
    epochs: int
    batch_size: int
    resume_checkpoint_uri: str = ""
    resume_from_epoch: int = 0


@dataclass(frozen=True, kw_only=True)
class Outcome:
    """How a job ended. ``error_code`` is HTTP-style: 400 bad job, 422 diverged (NaN),
    503 node or store trouble, 507 out of memory, 500 anything else."""

    status: str
    result: TrainResult | None = None
    error: str = ""
    error_code: int = 0
    retryable: bool = False
    epochs_done: int = 0
    seconds: float = 0.0


class JobListener(Protocol):
    """Receives a job's epochs and its end, in order, from its worker thread. Must not block."""

    def on_epoch(self, job: Assignment, epoch: EpochResult) -> None: ...

    def on_end(self, job: Assignment, outcome: Outcome) -> None: ...


class Busy(Exception):
    """Every slot is taken (the node answers 429)."""


class Conflict(Exception):
    """Another attempt of this job is running here (the node answers 409)."""


class _Running:
    def __init__(self, job: Assignment) -> None:
        self.job = job
        self.stop = threading.Event()
        self.stop_reason = CANCELLED  # or FAILED when the node itself is shutting down
        self.thread: threading.Thread | None = None


class Executor:
    """Runs up to ``slots`` jobs at once, each in its own thread.

    ``fetch_dataset(name)`` reads ``nats://<name>`` data sets and ``fetch_object(uri)``
    resume checkpoints; both block the calling worker thread only.
    """

    def __init__(
        self,
        slots: int,
        listener: JobListener,
        *,
        data_roots: Sequence[Path] = (),
        fetch_dataset: Callable[[str], bytes] | None = None,
        fetch_object: Callable[[str], bytes] | None = None,
        checkpoint_every: int = 1,
    ) -> None:
        if slots < 1:
            raise ValueError(f"slots must be >= 1 (got {slots})")
        self.slots = slots
        self.listener = listener
        self.data_roots = tuple(data_roots)
        self.fetch_dataset = fetch_dataset
        self.fetch_object = fetch_object
        self.checkpoint_every = checkpoint_every
        self._running: dict[str, _Running] = {}
        self._lock = threading.Lock()

    # --- what the service and agent call -----------------------------------------

    def submit(self, job: Assignment) -> bool:
        """Start ``job`` in a free slot. Returns False when that same attempt already runs
        here (an idempotent repeat); raises :class:`Conflict` or :class:`Busy`."""
        with self._lock:
            current = self._running.get(job.job_id)
            if current is not None:
                if current.job.attempt == job.attempt:
                    return False
                raise Conflict(
                    f"job {job.job_id!r}: attempt {current.job.attempt} is still running on this node"
                )
            if len(self._running) >= self.slots:
                raise Busy(f"node busy: all {self.slots} slot(s) are running jobs; try another node or later")
            running = _Running(job)
            running.thread = threading.Thread(
                target=self._run, args=(running,), name=f"job-{job.job_id}", daemon=True
            )
            self._running[job.job_id] = running
        running.thread.start()
        return True

    def cancel(self, job_id: str) -> bool:
        """Ask ``job_id`` to stop at its next step boundary; False if it does not run here."""
        with self._lock:
            running = self._running.get(job_id)
        if running is None:
            return False
        running.stop.set()
        return True

    def stop_all(self, reason: str = "node shutting down") -> None:
        """Stop every job; they end as failed and retryable, so central runs them elsewhere."""
        with self._lock:
            jobs = list(self._running.values())
        for running in jobs:
            running.stop_reason = FAILED
            running.stop.set()

    def active_jobs(self) -> list[str]:
        with self._lock:
            return list(self._running)

    @property
    def free_slots(self) -> int:
        with self._lock:
            return self.slots - len(self._running)

    def join(self, timeout: float | None = None) -> bool:
        """Wait for running jobs to end; True if none is left."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._lock:
                threads = [r.thread for r in self._running.values() if r.thread is not None]
            if not threads:
                return True
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            threads[0].join(remaining)

    # --- the worker thread ---------------------------------------------------------

    def _run(self, running: _Running) -> None:
        job = running.job
        started = time.monotonic()
        try:
            outcome = self._train(running)
        except BaseException as exc:  # noqa: BLE001 - whatever happens, this job alone fails
            outcome = _failure(job, exc)
        outcome = _with_seconds(outcome, time.monotonic() - started)
        if outcome.status == FAILED:
            log.warning("job %s failed: %s", job.job_id, outcome.error)
        with self._lock:
            self._running.pop(job.job_id, None)  # the slot is free before central hears of the end
        try:
            self.listener.on_end(job, outcome)
        except Exception:  # a listener bug must not kill the worker silently
            log.exception("job %s: reporting its end failed", job.job_id)

    def _train(self, running: _Running) -> Outcome:
        job = running.job
        hyper = dict(job.hyperparameters)
        label_column = hyper.pop("label_column", None)
        every = _int_hyperparameter(hyper.pop("checkpoint_every", None), self.checkpoint_every)
        try:
            config = TrainConfig.from_job(
                hyper, epochs=job.epochs, batch_size=job.batch_size,
                model_definition=job.model_definition, checkpoint_every=every,
            )
        except ValueError as exc:
            return _bad_job(f"hyperparameters: {exc}" if "model_definition" not in str(exc) else str(exc))
        dataset = load_dataset(
            job.dataset_uri, data_roots=self.data_roots, fetch_object=self.fetch_dataset, label_column=label_column,
        )
        try:
            trainer = Trainer(config, dataset)
        except ValueError as exc:
            return _bad_job(str(exc) if "model_definition" in str(exc) else f"model_definition: {exc}")
        resume = self._resume_bytes(job)
        if running.stop.is_set():
            return self._stopped(running, epochs_done=job.resume_from_epoch)

        def on_epoch(epoch: EpochResult) -> None:
            self.listener.on_epoch(job, epoch)

        result = trainer.run(on_epoch=on_epoch, should_stop=running.stop.is_set, resume=resume)
        if result.stopped:
            return self._stopped(running, epochs_done=result.epochs_done, result=result)
        return Outcome(status=COMPLETED, result=result, epochs_done=result.epochs_done)

    def _resume_bytes(self, job: Assignment) -> bytes | None:
        if not job.resume_checkpoint_uri:
            return None
        if self.fetch_object is None:
            raise _JobProblem("resume_checkpoint_uri: this node has no object store to read it from", 500, True)
        try:
            return self.fetch_object(job.resume_checkpoint_uri)
        except ValueError as exc:  # a malformed URI
            raise _JobProblem(f"resume_checkpoint_uri: {exc}", 400, False) from exc

    @staticmethod
    def _stopped(running: _Running, *, epochs_done: int, result: TrainResult | None = None) -> Outcome:
        if running.stop_reason == FAILED:
            return Outcome(
                status=FAILED, result=result, error="the node shut down while the job ran",
                error_code=503, retryable=True, epochs_done=epochs_done,
            )
        return Outcome(status=CANCELLED, result=result, epochs_done=epochs_done)


class _JobProblem(Exception):
    def __init__(self, message: str, code: int, retryable: bool) -> None:
        super().__init__(message)
        self.code = code
        self.retryable = retryable


def _bad_job(message: str) -> Outcome:
    return Outcome(status=FAILED, error=message, error_code=400, retryable=False)


def _int_hyperparameter(raw: str | None, default: int) -> int:
    if raw is None:
        return default
    try:
        value = int(str(raw).strip())
    except ValueError:
        raise _JobProblem(f"hyperparameters: checkpoint_every must be an integer >= 0 (got {raw!r})", 400, False) from None
    if value < 0:
        raise _JobProblem(f"hyperparameters: checkpoint_every must be an integer >= 0 (got {raw!r})", 400, False)
    return value


def _failure(job: Assignment, exc: BaseException) -> Outcome:
    """The failed Outcome for an exception raised inside a job, with a one-line error."""
    from bus import BusError, ObjectNotFound
    from node.checkpoint import CheckpointError

    if isinstance(exc, _JobProblem):
        return Outcome(status=FAILED, error=str(exc), error_code=exc.code, retryable=exc.retryable)
    if isinstance(exc, DatasetError):
        return Outcome(status=FAILED, error=f"dataset_uri: {exc}", error_code=400, retryable=exc.retryable)
    if isinstance(exc, TrainingError):
        return Outcome(status=FAILED, error=str(exc), error_code=422, retryable=False, epochs_done=exc.epoch - 1)
    if isinstance(exc, CheckpointError):
        return Outcome(status=FAILED, error=f"resume_checkpoint_uri: {exc}", error_code=400, retryable=False)
    if isinstance(exc, ObjectNotFound):
        return Outcome(status=FAILED, error=f"resume_checkpoint_uri: {exc}", error_code=404, retryable=False)
    if isinstance(exc, BusError):
        return Outcome(status=FAILED, error=f"object store: {exc}", error_code=503, retryable=True)
    if _out_of_memory(exc):
        return Outcome(
            status=FAILED, error=f"out of memory: {_first_line(exc)}; lower batch_size or the model size",
            error_code=507, retryable=True,
        )
    log.error("job %s crashed", job.job_id, exc_info=exc)
    return Outcome(status=FAILED, error=f"{type(exc).__name__}: {_first_line(exc)}", error_code=500, retryable=False)


def _out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, MemoryError) or "RESOURCE_EXHAUSTED" in str(exc) or "Out of memory" in str(exc)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _with_seconds(outcome: Outcome, seconds: float) -> Outcome:
    return replace(outcome, seconds=seconds)
