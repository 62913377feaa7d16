"""A job as the node runs it, how it ended, and the one place that turns an exception
into that ending (a one-line error with an HTTP-style code).

Pure values shared by the executor (the node's process) and the worker processes
that train: everything here pickles, so it crosses the pipe between them.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Mapping
from dataclasses import dataclass, field

import jax

from events.errors import CyxwizError
from node.datasets import DatasetError
from node.trainer import TrainingError, TrainResult

__all__ = [
    "Assignment", "JobProblem", "Outcome", "COMPLETED", "FAILED", "CANCELLED", "PHASES",
    "bad_job", "crashed", "outcome_of",
]

log = logging.getLogger(__name__)

COMPLETED, FAILED, CANCELLED = "completed", "failed", "cancelled"
# The phases a job goes through, published as JobPhase telemetry.
PHASES = ("loading", "compiling", "training", "checkpointing")


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
    devices: int = 1  # from the hyperparameter "devices"; events.devices.ALL: every device of the node


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


class JobProblem(CyxwizError):
    """A problem of one job already phrased for the user, with its code."""

    def __init__(self, message: str, code: int, retryable: bool) -> None:
        super().__init__(message, code=code, retryable=retryable)
        self.message = message

    def __reduce__(self):  # the worker process pickles it back to the node
        return type(self), (self.message, self.code, self.retryable)

    def __str__(self) -> str:
        return self.message


def bad_job(message: str) -> Outcome:
    return Outcome(status=FAILED, error=message, error_code=400, retryable=False)


def outcome_of(exc: BaseException) -> Outcome:
    """The failed Outcome for an exception raised inside a job, with a one-line error."""
    from bus import BusError, ObjectNotFound
    from node.checkpoint import CheckpointError

    if isinstance(exc, JobProblem):
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
    if isinstance(exc, CyxwizError):  # the error tree says whether a retry can help
        return Outcome(status=FAILED, error=str(exc), error_code=exc.code, retryable=exc.retryable)
    if out_of_memory(exc):
        return Outcome(
            status=FAILED, error=f"out of memory: {_first_line(exc)}; lower batch_size or the model size",
            error_code=507, retryable=True,
        )
    log.error("job crashed", exc_info=exc)
    return Outcome(status=FAILED, error=f"{type(exc).__name__}: {_first_line(exc)}", error_code=500, retryable=False)


def crashed(exitcode: int | None, epochs_done: int) -> Outcome:
    """The Outcome of a job whose worker process died under it (not stopped by us)."""
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        if -exitcode == signal.SIGKILL:
            return Outcome(
                status=FAILED, error_code=507, retryable=True, epochs_done=epochs_done,
                error="the job's worker process was killed (SIGKILL, most likely out of host memory); "
                      "lower batch_size or the model size",
            )
        how = f"died of {name}"
    else:
        how = f"exited with code {exitcode}"
    return Outcome(
        status=FAILED, error_code=500, retryable=False, epochs_done=epochs_done,
        error=f"the job's worker process {how}; the node started a fresh one for the next job",
    )


def out_of_memory(exc: BaseException) -> bool:
    """Host memory (``MemoryError``) or XLA's: a ``JaxRuntimeError`` whose absl status is
    RESOURCE_EXHAUSTED. JAX gives no code attribute, only the status as the message's
    first word, so that word (and no other text) is what is read."""
    return isinstance(exc, MemoryError) or (
        isinstance(exc, jax.errors.JaxRuntimeError) and str(exc).startswith("RESOURCE_EXHAUSTED:"))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
