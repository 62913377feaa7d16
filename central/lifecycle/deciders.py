"""The job lifecycle, pure: ``decide(state, command, now, version) -> list[Event]``,
``anomaly(state, event) -> str | None`` and ``evolve(state, event) -> state``. No I/O.

Central's state (``central.lifecycle.state``) and the DuckDB projection
(``central.readmodel.fold``) both fold the stream through ``anomaly``/``evolve`` here, so
SQL and gRPC never disagree about a job::

    JobSubmitted -> queued -JobAssigned-> assigned -JobStarted-> running -> completed
                      ^                     |                       |      \\-> failed
                      +----JobRejected------+                       |       \\-> cancelled
                      +----JobRequeued (attempt + 1)----------------+

``decide`` refuses a command that does not fit the state by raising ``Refused`` with an
HTTP-style code (404 unknown job, 409 wrong state, 400 invalid). ``evolve`` is total: an
event that makes no sense for the state (a script's JobCompleted for a cancelled job)
changes nothing; ``anomaly`` says why, so the caller can report it.

Event ids are functions of the decision's inputs, so ``decide`` is a function of its
arguments and a retried decision is stored once (``Nats-Msg-Id``): central's own
decisions take ``uuid5(job, version, kind)``; events derived from a node's report take
``uuid5(job, attempt, what happened)``, so a retried report is stored once too.

Rules worth knowing:
- SubmitJob is idempotent on ``job_id``: the same spec again decides nothing (success);
  another spec is refused (409, ``exists``).
- Epochs are reported in order: a report that skips one is refused (400); a completion
  needs every epoch of the attempt recorded.
- A completion from the attempt that was requeued moments earlier (its node fell silent
  after training every epoch) is accepted while the job has not ended, rather than
  retrained; the attempt that replaced it is told to stop.
- Any job that has not ended can be cancelled.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum

import msgspec

from central.lifecycle.errors import Refused
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
)

__all__ = [
    "ACTIVE", "MAX_ATTEMPTS", "MAX_INVALID_REJECTIONS", "TERMINAL",
    "Assign", "Cancel", "Fail", "Finish", "JobCommand", "JobState", "JobStatus", "Progress", "Refused",
    "Reject", "Requeue", "Submit",
    "anomaly", "decide", "decision_event_id", "evolve", "jobs_to_cancel", "report_event_id", "spec_digest",
]

MAX_ATTEMPTS = 3
MAX_INVALID_REJECTIONS = 3
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
_ENDED_WORD = {JobStatus.COMPLETED: "completed", JobStatus.FAILED: "failed", JobStatus.CANCELLED: "been cancelled"}
_NAMED_METRICS = ("loss", "accuracy", "val_loss", "val_accuracy")


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


@dataclass(frozen=True, slots=True)
class JobState:
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
    metrics: dict[str, float] = field(default_factory=dict)
    error: str = ""
    error_code: int = 0  # HTTP-style, from the node's report (0: not said)
    retryable: bool = False
    artifact: tuple[str, str, int] | None = None  # (uri, sha256, size)
    compute_seconds: float = 0.0

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


# --------------------------------------------------------------------------- job commands


@dataclass(frozen=True, slots=True)
class Submit:
    job_id: str
    spec: JobSpec


@dataclass(frozen=True, slots=True)
class Assign:
    node_id: str


@dataclass(frozen=True, slots=True)
class Reject:
    node_id: str
    attempt: int
    reason: str  # busy, invalid, unreachable, unauthorized
    message: str = ""


@dataclass(frozen=True, slots=True)
class Requeue:
    reason: str
    excluded_node: str | None = None


@dataclass(frozen=True, slots=True)
class Progress:
    node_id: str
    attempt: int = 0  # 0: the current attempt
    epoch: int = 0  # epochs completed
    metrics: dict[str, float] = field(default_factory=dict)
    checkpoint_uri: str | None = None
    seconds: float = 0.0
    samples_per_s: float = 0.0
    cancelled: bool = False  # the node confirms that it stopped on a cancel request


@dataclass(frozen=True, slots=True)
class Finish:
    node_id: str
    outcome: str  # completed, failed, cancelled
    attempt: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    artifact_uri: str | None = None
    sha256: str | None = None
    size_bytes: int = 0
    compute_seconds: float = 0.0
    error: str = ""
    error_code: int = 0
    retryable: bool = False


@dataclass(frozen=True, slots=True)
class Cancel:
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Fail:
    error: str


JobCommand = Submit | Assign | Reject | Requeue | Progress | Finish | Cancel | Fail


def decide(state: JobState | None, command: JobCommand, now: datetime, version: int = 0) -> list[Event]:
    """The events ``command`` produces on a job at stream ``version``; raises ``Refused``."""
    if isinstance(command, Submit):
        return _decide_submit(state, command, now)
    if state is None or state.status == JobStatus.NEW:
        raise Refused(404, f"unknown job {getattr(state, 'job_id', '')!r}" if state else "unknown job")
    match command:
        case Assign():
            return _decide_assign(state, command, now, version)
        case Reject():
            return _decide_reject(state, command, now, version)
        case Requeue():
            return _decide_requeue(state, command, now)
        case Progress():
            return _decide_progress(state, command, now)
        case Finish():
            return _decide_finish(state, command, now)
        case Cancel():
            return _decide_cancel(state, command, now, version)
        case Fail():
            _require_not_done(state)
            return [JobFailed(job_id=state.job_id, attempt=state.attempt, error=command.error,
                              node_id=state.node_id, occurred_at=now,
                              event_id=report_event_id(state.job_id, state.attempt, "failed"))]
    raise Refused(400, f"unknown command {type(command).__name__}")


def _decide_submit(state: JobState | None, cmd: Submit, now: datetime) -> list[Event]:
    if state is not None and state.status != JobStatus.NEW:
        if state.spec_sha256 == spec_digest(cmd.spec):
            return []  # the same job again (a retry): it exists, nothing to do
        raise Refused(409, f"job {cmd.job_id!r} already exists with a different spec; "
                           "submit it under another job_id", reason="exists")
    return [JobSubmitted(job_id=cmd.job_id, spec=cmd.spec, occurred_at=now,
                         event_id=decision_event_id(cmd.job_id, 0, "submitted"))]


def _require_not_done(state: JobState) -> None:
    if state.done:
        raise Refused(409, f"job {state.job_id!r} has already {_ENDED_WORD[state.status]}")


def _decide_assign(state: JobState, cmd: Assign, now: datetime, version: int) -> list[Event]:
    if state.status != JobStatus.QUEUED or state.cancel_requested:
        raise Refused(409, f"job {state.job_id!r} is {state.status}, not queued")
    return [JobAssigned(job_id=state.job_id, node_id=cmd.node_id, attempt=state.attempt,
                        resume_checkpoint=state.checkpoint_uri, resume_epoch=state.checkpoint_epoch,
                        occurred_at=now, event_id=decision_event_id(state.job_id, version, f"assigned/{cmd.node_id}"))]


def _decide_reject(state: JobState, cmd: Reject, now: datetime, version: int) -> list[Event]:
    if state.status != JobStatus.ASSIGNED or not state.holds(cmd.node_id, cmd.attempt):
        raise Refused(409, f"job {state.job_id!r} is not assigned to node {cmd.node_id!r}")
    rejected = JobRejected(job_id=state.job_id, node_id=cmd.node_id, attempt=state.attempt,
                           reason=cmd.reason, message=cmd.message, occurred_at=now,
                           event_id=decision_event_id(state.job_id, version, f"rejected/{cmd.node_id}"))
    if state.cancel_requested:
        return [rejected, _cancelled(state, state.epochs_done, now)]
    if cmd.reason == "invalid" and state.rejections + 1 >= MAX_INVALID_REJECTIONS:
        error = f"rejected as invalid {MAX_INVALID_REJECTIONS} times (last by node {cmd.node_id}): {cmd.message}"
        return [rejected, JobFailed(job_id=state.job_id, attempt=state.attempt, error=error, occurred_at=now,
                                    event_id=report_event_id(state.job_id, state.attempt, "failed"))]
    return [rejected]


def _decide_requeue(state: JobState, cmd: Requeue, now: datetime) -> list[Event]:
    if state.status not in ACTIVE:
        raise Refused(409, f"job {state.job_id!r} is {state.status}; only assigned or running jobs are requeued")
    if state.cancel_requested:
        return [_cancelled(state, state.epochs_done, now)]
    if state.attempt >= MAX_ATTEMPTS:
        error = f"{cmd.reason} on attempt {state.attempt}; giving up after {MAX_ATTEMPTS} attempts"
        return [JobFailed(job_id=state.job_id, node_id=state.node_id, attempt=state.attempt, error=error,
                          retryable=True, occurred_at=now,
                          event_id=report_event_id(state.job_id, state.attempt, "failed"))]
    return [JobRequeued(job_id=state.job_id, reason=cmd.reason, next_attempt=state.attempt + 1,
                        resume_checkpoint=state.checkpoint_uri, resume_epoch=state.checkpoint_epoch,
                        excluded_node=cmd.excluded_node, occurred_at=now,
                        event_id=report_event_id(state.job_id, state.attempt, "requeued"))]


def _require_holder(state: JobState, node_id: str, attempt: int) -> None:
    if not state.holds(node_id, attempt):
        where = f"attempt {state.attempt} on node {state.node_id!r}" if state.node_id else "no node"
        raise Refused(409, f"node {node_id!r} does not hold job {state.job_id!r} "
                           f"(attempt {attempt or 'current'}); it is {state.status}, {where}", reason="not_holder")


def _decide_progress(state: JobState, cmd: Progress, now: datetime) -> list[Event]:
    if state.status == JobStatus.CANCELLED:
        return []
    _require_holder(state, cmd.node_id, cmd.attempt)
    if cmd.epoch > state.epochs_done + 1:
        raise Refused(400, f"job {state.job_id!r}: epoch {cmd.epoch} reported, but epoch {state.epochs_done + 1} "
                           "is the next one of this attempt: report the epochs in order")
    job, attempt = state.job_id, state.attempt
    out: list[Event] = []
    if state.status == JobStatus.ASSIGNED:
        out.append(JobStarted(job_id=job, node_id=cmd.node_id, attempt=attempt,
                              resumed_from_epoch=state.checkpoint_epoch, occurred_at=now,
                              event_id=report_event_id(job, attempt, "started")))
    if cmd.epoch > state.epochs_done:
        m = cmd.metrics
        extra = {k: v for k, v in m.items() if k not in _NAMED_METRICS}
        out.append(EpochCompleted(
            job_id=job, node_id=cmd.node_id, attempt=attempt, epoch=cmd.epoch, total_epochs=state.epochs,
            loss=m.get("loss"), accuracy=m.get("accuracy"), val_loss=m.get("val_loss"),
            val_accuracy=m.get("val_accuracy"), seconds=cmd.seconds, samples_per_s=cmd.samples_per_s,
            checkpoint_uri=cmd.checkpoint_uri, metrics=extra, occurred_at=now,
            event_id=report_event_id(job, attempt, f"epoch/{cmd.epoch}")))
    if cmd.cancelled:
        out.append(_cancelled(state, max(cmd.epoch, state.epochs_done), now))
    return out


def _cancelled(state: JobState, epoch: int, now: datetime) -> JobCancelled:
    return JobCancelled(job_id=state.job_id, at_epoch=epoch, occurred_at=now,
                        event_id=report_event_id(state.job_id, 0, "cancelled"))


def _decide_finish(state: JobState, cmd: Finish, now: datetime) -> list[Event]:
    if state.status == JobStatus.CANCELLED:
        return []
    if state.done and state.node_id == cmd.node_id and cmd.attempt in (0, state.attempt):
        return []  # a retried report of the end already recorded
    if cmd.outcome == "completed" and state.finished_by_requeued(cmd.node_id, cmd.attempt):
        return [_completed(state, cmd, state.requeued_from[1], now)]
    _require_holder(state, cmd.node_id, cmd.attempt)
    job, attempt = state.job_id, state.attempt
    if cmd.outcome == "cancelled":
        return [_cancelled(state, state.epochs_done, now)]
    if cmd.outcome == "completed":
        if state.epochs_done < state.epochs:
            raise Refused(409, f"job {job!r}: completion of attempt {attempt} refused: epochs "
                               f"{state.epochs_done + 1}..{state.epochs} were never reported; report them first")
        return [_completed(state, cmd, attempt, now)]
    if cmd.retryable and not state.cancel_requested and attempt < MAX_ATTEMPTS:
        return _decide_requeue(state, Requeue(f"failed on node {cmd.node_id}: {cmd.error}", cmd.node_id), now)
    return [JobFailed(job_id=job, node_id=cmd.node_id, attempt=attempt, error=cmd.error or "failed on the node",
                      retryable=cmd.retryable, code=cmd.error_code, occurred_at=now,
                      event_id=report_event_id(job, attempt, "failed"))]


def _completed(state: JobState, cmd: Finish, attempt: int, now: datetime) -> JobCompleted:
    return JobCompleted(job_id=state.job_id, node_id=cmd.node_id, attempt=attempt, metrics=dict(cmd.metrics),
                        artifact_uri=cmd.artifact_uri, sha256=cmd.sha256, size_bytes=cmd.size_bytes,
                        compute_seconds=cmd.compute_seconds, occurred_at=now,
                        event_id=report_event_id(state.job_id, attempt, "completed"))


def _decide_cancel(state: JobState, cmd: Cancel, now: datetime, version: int) -> list[Event]:
    _require_not_done(state)
    if state.cancel_requested:
        return [_cancelled(state, state.epochs_done, now)] if state.status == JobStatus.QUEUED else []
    requested = JobCancelRequested(job_id=state.job_id, reason=cmd.reason, occurred_at=now,
                                   event_id=decision_event_id(state.job_id, version, "cancel-requested"))
    if state.status == JobStatus.QUEUED:
        return [requested, _cancelled(state, state.epochs_done, now)]
    return [requested]


def jobs_to_cancel(node_id: str, held: set[str] | frozenset[str], reported_active: list[str],
                   jobs: dict[str, JobState]) -> list[str]:
    """What a node's heartbeat answer lists to stop: jobs it holds whose cancel was
    requested, and jobs it says it runs that have ended or belong to another node."""
    out = [j for j in sorted(held) if jobs[j].cancel_requested]
    for job_id in reported_active:
        job = jobs.get(job_id)
        if job is None or job_id in out:
            continue
        if job.done or (job.node_id is not None and job.node_id != node_id):
            out.append(job_id)
    return out


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
        return f"{name} for a job that has {_ENDED_WORD[status]}"
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
    return f"{name} is not a job event"


def evolve(state: JobState | None, event: Event) -> JobState | None:
    """The job after ``event``; unchanged when ``anomaly`` finds it does not apply."""
    if anomaly(state, event) is not None:
        return state
    at = event.occurred_at.timestamp()
    match event:
        case JobSubmitted(spec=spec):
            return JobState(job_id=event.job_id, status=JobStatus.QUEUED, spec=spec, spec_sha256=spec_digest(spec),
                            priority=spec.priority, epochs=spec.epochs,
                            name=spec.name or spec.hyperparameters.get("name", ""), owner=spec.submitted_by,
                            submitted_at=at)
        case JobAssigned():
            return replace(state, status=JobStatus.ASSIGNED, node_id=event.node_id, attempt=event.attempt)
        case JobRejected():
            return replace(state, status=JobStatus.QUEUED, node_id=None, rejections=state.rejections + 1)
        case JobStarted():
            return replace(state, status=JobStatus.RUNNING, started_at=state.started_at or at)
        case EpochCompleted():
            metrics = dict(event.metrics)
            for key in _NAMED_METRICS:
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
    """A finished job keeps its summary and drops its spec (compact history)."""
    return replace(state, status=status, ended_at=at, spec=None, requeued_from=None, **changes)
