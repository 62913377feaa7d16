"""The job lifecycle's state and fold, pure: ``JobStatus`` (the one set of job states),
``JobState``, and ``anomaly(state, event)`` / ``evolve(state, event)``, which central's
state (``central.lifecycle.state``) and the DuckDB projection (``central.readmodel.fold``)
both fold the stream through, so SQL and gRPC never disagree about a job::

    JobSubmitted -> queued -JobAssigned-> assigned -JobStarted-> running -> completed
                 (JobWaiting: why it waits)
                      ^                     |                       |      \\-> failed
                      +----JobRejected------+                       |       \\-> cancelled
                      +----JobRequeued (attempt + 1)----------------+

``evolve`` is total: an event that makes no sense for the state (a script's
JobCompleted for a cancelled job) changes nothing; ``anomaly`` says why, so the caller
can report it. The decisions that produce these events are in ``deciders``.
"""

from __future__ import annotations

import hashlib
import uuid
from enum import StrEnum

import msgspec
from msgspec.structs import replace

from events import (
    EpochCompleted,
    Event,
    JobAssigned,
    JobCancelled,
    JobCancelRequested,
    JobCompleted,
    JobFailed,
    JobRejected,
    JobRequeued,
    JobSpec,
    JobStarted,
    JobSubmitted,
    JobWaiting,
)

__all__ = [
    "ACTIVE", "NAMED_METRICS", "TERMINAL", "JobState", "JobStatus",
    "anomaly", "decision_event_id", "ended_word", "evolve", "fold", "report_event_id", "spec_digest",
]

_NAMESPACE = uuid.UUID("6f1c9a52-3b0e-4c8e-9a57-0c1f3e2d7b11")


class JobStatus(StrEnum):
    """The one set of job states, for central, the projection and every answer."""

    NEW = "new"
    QUEUED = "queued"
    ASSIGNED = "assigned"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


ACTIVE = frozenset({JobStatus.ASSIGNED, JobStatus.RUNNING})
TERMINAL = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED})
_ENDED_WORDS = {JobStatus.COMPLETED: "completed", JobStatus.FAILED: "failed", JobStatus.CANCELLED: "been cancelled"}
NAMED_METRICS = ("loss", "accuracy", "val_loss", "val_accuracy")


def ended_word(status: JobStatus) -> str:
    """How a message says the job ended: "has already completed", "has been cancelled"."""
    return _ENDED_WORDS[status]


def report_event_id(job_id: str, attempt: int, what: str) -> str:
    """The id of an event central derives from a node's report of ``attempt``."""
    return str(uuid.uuid5(_NAMESPACE, f"{job_id}/{attempt}/{what}"))


def decision_event_id(aggregate: str, version: int, kind: str) -> str:
    """The id of an event central decides on an aggregate at stream ``version``."""
    return str(uuid.uuid5(_NAMESPACE, f"{aggregate}@{version}/{kind}"))


def spec_digest(spec: JobSpec) -> str:
    """What makes two submissions of one job id the same job (key order does not matter)."""
    return hashlib.sha256(msgspec.json.encode(spec, order="sorted")).hexdigest()


# --------------------------------------------------------------------------- job state


class JobState(msgspec.Struct, frozen=True, kw_only=True):
    """What central remembers of one job; ``spec`` is dropped once the job has ended."""

    job_id: str
    status: JobStatus = JobStatus.NEW
    spec: JobSpec | None = None
    spec_sha256: str = ""
    priority: int = 1
    epochs: int = 0
    name: str = ""
    owner: str = ""
    submitted_at: float = 0.0
    attempt: int = 1
    node_id: str | None = None
    epochs_done: int = 0
    checkpoint_uri: str | None = None
    checkpoint_epoch: int = 0
    cancel_requested: bool = False
    rejections: int = 0
    excluded_node: str | None = None  # the node a requeue moved it away from
    requeued_from: tuple[str, int, int] | None = None  # (node, attempt, epochs done) of the attempt requeued last
    started_at: float = 0.0
    ended_at: float = 0.0
    metrics: dict[str, float] = {}
    error: str = ""
    error_code: int = 0  # HTTP-style, from the node's report (0: not said)
    retryable: bool = False
    artifact: tuple[str, str, int] | None = None  # (uri, sha256, size)
    compute_seconds: float = 0.0
    waiting_reason: str = ""  # while queued: why the scheduler found no node (JobWaiting)
    model_definition: str = ""  # kept from the spec by a completed job: deploying its model estimates its memory

    @property
    def done(self) -> bool:
        return self.status in TERMINAL

    def holds(self, node_id: str, attempt: int = 0) -> bool:
        """True when ``node_id`` runs this job now (and ``attempt`` is current, 0: any)."""
        return self.status in ACTIVE and self.node_id == node_id and attempt in (0, self.attempt)

    def finished_by_requeued(self, node_id: str, attempt: int) -> bool:
        """True when ``node_id``'s ``attempt`` was requeued after recording every epoch:
        its late completion is the job's completion."""
        rf = self.requeued_from
        return (rf is not None and not self.done and rf[0] == node_id and attempt in (0, rf[1])
                and rf[2] >= self.epochs > 0)


# --------------------------------------------------------------------------- job evolve


def anomaly(state: JobState | None, event: Event) -> str | None:
    """Why ``event`` cannot apply to ``state`` (None when it applies)."""
    name = type(event).__name__
    status = JobStatus.NEW if state is None else state.status
    if isinstance(event, JobSubmitted):
        return None if status == JobStatus.NEW else f"{name} for a job that already exists ({status})"
    if status == JobStatus.NEW:
        return f"{name} for an unknown job"
    if isinstance(event, JobCompleted) and state.finished_by_requeued(event.node_id, event.attempt):
        return None
    if status in TERMINAL:
        return f"{name} for a job that has {ended_word(status)}"
    match event:
        case JobAssigned():
            return None if status == JobStatus.QUEUED else f"{name} for a job that is {status}, not queued"
        case JobRejected():
            if status == JobStatus.ASSIGNED and state.holds(event.node_id, event.attempt):
                return None
            return f"{name} from node {event.node_id!r} attempt {event.attempt}, which does not hold the job"
        case JobStarted():
            if status == JobStatus.RUNNING:
                return f"{name} repeated for attempt {event.attempt}"
            return None if state.holds(event.node_id, event.attempt) else (
                f"{name} from node {event.node_id!r} attempt {event.attempt}, which does not hold the job")
        case EpochCompleted():
            if not state.holds(event.node_id or state.node_id or "", event.attempt):
                return f"{name} from attempt {event.attempt}, which does not hold the job"
            if event.epoch <= state.epochs_done:
                return f"{name} repeated epoch {event.epoch}"
            if event.epoch > state.epochs_done + 1:
                return f"{name} epoch {event.epoch} skips epoch {state.epochs_done + 1}"
            return None
        case JobCompleted():
            if not state.holds(event.node_id or state.node_id or "", event.attempt):
                return f"{name} from attempt {event.attempt}, which does not hold the job"
            if state.epochs_done < state.epochs:
                return f"{name} with epochs {state.epochs_done + 1}..{state.epochs} of attempt {state.attempt} never recorded"
            return None
        case JobRequeued():
            if status not in ACTIVE:
                return f"{name} for a job that is {status}"
            return None if event.next_attempt == state.attempt + 1 else (
                f"{name} to attempt {event.next_attempt}, but the job is on attempt {state.attempt}")
        case JobFailed():
            if event.node_id and status in ACTIVE and not state.holds(event.node_id, event.attempt):
                return f"{name} from node {event.node_id!r}, which does not hold the job"
            return None
        case JobCancelRequested():
            return "JobCancelRequested repeated" if state.cancel_requested else None
        case JobCancelled():
            return None
        case JobWaiting():
            return None if status == JobStatus.QUEUED else f"{name} for a job that is {status}, not queued"
    return f"{name} is not a job event"


def evolve(state: JobState | None, event: Event) -> JobState | None:
    """The job after ``event``; unchanged when ``anomaly`` finds it does not apply."""
    return fold(state, event)[0]


def fold(state: JobState | None, event: Event) -> tuple[JobState | None, str | None]:
    """``(evolve(state, event), anomaly(state, event))`` with the rules looked at once:
    what every consumer folding the stream calls."""
    reason = anomaly(state, event)
    if reason is not None:
        return state, reason
    return _apply(state, event), None


def _apply(state: JobState | None, event: Event) -> JobState | None:
    at = event.occurred_at.timestamp()
    match event:
        case JobSubmitted(spec=spec):
            return JobState(job_id=event.job_id, status=JobStatus.QUEUED, spec=spec, spec_sha256=spec_digest(spec),
                            priority=spec.priority, epochs=spec.epochs,
                            name=spec.name or spec.hyperparameters.get("name", ""), owner=spec.submitted_by,
                            submitted_at=at)
        case JobAssigned():
            return replace(state, status=JobStatus.ASSIGNED, node_id=event.node_id, attempt=event.attempt,
                           waiting_reason="")
        case JobRejected():
            return replace(state, status=JobStatus.QUEUED, node_id=None, rejections=state.rejections + 1)
        case JobWaiting():
            return replace(state, waiting_reason=event.reason)
        case JobStarted():
            return replace(state, status=JobStatus.RUNNING, started_at=state.started_at or at)
        case EpochCompleted():
            metrics = dict(event.metrics)
            for key in NAMED_METRICS:
                value = getattr(event, key)
                if value is not None:
                    metrics[key] = value
            ckpt = (event.checkpoint_uri, event.epoch) if event.checkpoint_uri else (state.checkpoint_uri, state.checkpoint_epoch)
            return replace(state, status=JobStatus.RUNNING, epochs_done=event.epoch, metrics=metrics,
                           checkpoint_uri=ckpt[0], checkpoint_epoch=ckpt[1], started_at=state.started_at or at)
        case JobCompleted():
            artifact = (event.artifact_uri or "", event.sha256 or "", event.size_bytes)
            return _ended(state, JobStatus.COMPLETED, at, metrics=dict(event.metrics) or state.metrics,
                          artifact=artifact, epochs_done=state.epochs, node_id=event.node_id or state.node_id,
                          attempt=event.attempt or state.attempt, compute_seconds=event.compute_seconds)
        case JobFailed():
            return _ended(state, JobStatus.FAILED, at, error=event.error, retryable=event.retryable,
                          error_code=event.code)
        case JobRequeued():
            resumed = bool(event.resume_checkpoint)
            return replace(state, status=JobStatus.QUEUED, node_id=None, attempt=event.next_attempt,
                           checkpoint_uri=event.resume_checkpoint or state.checkpoint_uri,
                           checkpoint_epoch=event.resume_epoch if resumed else state.checkpoint_epoch,
                           epochs_done=event.resume_epoch if resumed else 0,
                           excluded_node=event.excluded_node,
                           requeued_from=(state.node_id or "", state.attempt, state.epochs_done))
        case JobCancelRequested():
            return replace(state, cancel_requested=True)
        case JobCancelled():
            return _ended(state, JobStatus.CANCELLED, at)
    return state


def _ended(state: JobState, status: JobStatus, at: float, **changes) -> JobState:
    """A finished job keeps its summary and drops its spec (compact history); a completed
    one keeps its model definition."""
    if status is JobStatus.COMPLETED and state.spec is not None:
        changes.setdefault("model_definition", state.spec.model_definition)
    return replace(state, status=status, ended_at=at, spec=None, requeued_from=None, waiting_reason="", **changes)
