"""The job decisions, pure: ``decide(state, command, now, version) -> list[Event]``.
No I/O; the state and its fold are in ``jobs``.

``decide`` refuses a command that does not fit the state by raising ``Refused`` with an
HTTP-style code (404 unknown job, 409 wrong state, 400 invalid).

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

from dataclasses import dataclass, field
from datetime import datetime

from central.lifecycle.errors import Refused
from central.lifecycle.jobs import (
    ACTIVE,
    NAMED_METRICS,
    JobState,
    JobStatus,
    decision_event_id,
    ended_word,
    report_event_id,
    spec_digest,
)
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
    "MAX_ATTEMPTS", "MAX_INVALID_REJECTIONS",
    "Assign", "Cancel", "Fail", "Finish", "JobCommand", "Progress", "Reject", "Requeue", "Submit", "Wait",
    "decide", "jobs_to_cancel",
]

MAX_ATTEMPTS = 3
MAX_INVALID_REJECTIONS = 3


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
    code: int = 0  # HTTP-style: 400 a job no node can run
    retryable: bool = False


@dataclass(frozen=True, slots=True)
class Wait:
    reason: str  # why the scheduler found no node for the queued job


JobCommand = Submit | Assign | Reject | Requeue | Progress | Finish | Cancel | Fail | Wait


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
        case Wait():
            if state.status != JobStatus.QUEUED:
                raise Refused(409, f"job {state.job_id!r} is {state.status}, not queued")
            if command.reason == state.waiting_reason:
                return []
            return [JobWaiting(job_id=state.job_id, reason=command.reason, occurred_at=now,
                               event_id=decision_event_id(state.job_id, version, f"waiting/{command.reason}"))]
        case Fail():
            _require_not_done(state)
            return [JobFailed(job_id=state.job_id, attempt=state.attempt, error=command.error,
                              node_id=state.node_id, code=command.code, retryable=command.retryable, occurred_at=now,
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
        raise Refused(409, f"job {state.job_id!r} has already {ended_word(state.status)}")


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
        return [rejected, JobFailed(job_id=state.job_id, attempt=state.attempt, error=error, code=400, occurred_at=now,
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
        extra = {k: v for k, v in m.items() if k not in NAMED_METRICS}
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
