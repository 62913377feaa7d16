"""Pure job and node deciders: ``decide(state, command, now) -> list[Event]`` and
``evolve(state, event) -> state``. No I/O; time comes in as ``now``.

Job lifecycle (the ``status`` word of ``JobState``)::

    JobSubmitted -> queued -JobAssigned-> assigned -JobStarted-> running -> completed
                      ^                     |                       |      \\-> failed
                      +----JobRejected------+                       |       \\-> cancelled
                      +----JobRequeued (attempt + 1)----------------+

``decide`` refuses a command that does not fit the state by raising ``Refused`` with an
HTTP-style code (404 unknown job, 409 wrong state, 400 invalid). ``evolve`` is total: an
event that makes no sense for the state (a script's JobCompleted for a cancelled job)
changes nothing; ``anomaly(state, event)`` says why, so the caller can report it.

Events derived from a node's report have deterministic ids (uuid5 of job, attempt and
what happened), so a retried report is stored once; a repeated epoch decides nothing.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime

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
    NodeDeregistered,
    NodeLost,
    NodeRegistered,
)

MAX_ATTEMPTS = 3
MAX_INVALID_REJECTIONS = 3
ACTIVE = frozenset({"assigned", "running"})
TERMINAL = frozenset({"completed", "failed", "cancelled"})
_NAMESPACE = uuid.UUID("6f1c9a52-3b0e-4c8e-9a57-0c1f3e2d7b11")


class Refused(Exception):
    """A command that does not fit the state; ``code`` is HTTP-style (400/401/404/409/429)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def report_event_id(job_id: str, attempt: int, what: str) -> str:
    """The deterministic id of an event central derives from a node's report."""
    return str(uuid.uuid5(_NAMESPACE, f"{job_id}/{attempt}/{what}"))


# --------------------------------------------------------------------------- job state


@dataclass(frozen=True, slots=True)
class JobState:
    """What central remembers of one job; ``spec`` is dropped once the job has ended."""

    job_id: str
    status: str = "new"
    spec: JobSpec | None = None
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
    started_at: float = 0.0
    ended_at: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)
    error: str = ""
    artifact: tuple[str, str, int] | None = None  # (uri, sha256, size)
    version: int = 0  # stream sequence of its last event; set by the state that folds it

    @property
    def done(self) -> bool:
        return self.status in TERMINAL

    def holds(self, node_id: str, attempt: int = 0) -> bool:
        """True when ``node_id`` runs this job now (and ``attempt`` is current, 0: any)."""
        return self.status in ACTIVE and self.node_id == node_id and attempt in (0, self.attempt)


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
    retryable: bool = False


@dataclass(frozen=True, slots=True)
class Cancel:
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Fail:
    error: str


JobCommand = Submit | Assign | Reject | Requeue | Progress | Finish | Cancel | Fail


def decide(state: JobState | None, command: JobCommand, now: datetime) -> list[Event]:
    """The events a command on a job produces; raises ``Refused`` when it does not fit."""
    if isinstance(command, Submit):
        if state is not None and state.status != "new":
            raise Refused(409, f"job {command.job_id!r} already exists")
        return [JobSubmitted(job_id=command.job_id, spec=command.spec, occurred_at=now)]
    if state is None or state.status == "new":
        raise Refused(404, "unknown job")
    match command:
        case Assign():
            return _decide_assign(state, command, now)
        case Reject():
            return _decide_reject(state, command, now)
        case Requeue():
            return _decide_requeue(state, command, now)
        case Progress():
            return _decide_progress(state, command, now)
        case Finish():
            return _decide_finish(state, command, now)
        case Cancel():
            return _decide_cancel(state, command, now)
        case Fail():
            _require_not_done(state)
            return [JobFailed(job_id=state.job_id, attempt=state.attempt, error=command.error,
                              node_id=state.node_id, occurred_at=now,
                              event_id=report_event_id(state.job_id, state.attempt, "failed"))]
    raise Refused(400, f"unknown command {type(command).__name__}")


def _require_not_done(state: JobState) -> None:
    if state.done:
        raise Refused(409, f"job {state.job_id!r} has already {_ended_word(state.status)}")


def _ended_word(status: str) -> str:
    return {"completed": "completed", "failed": "failed", "cancelled": "been cancelled"}[status]


def _decide_assign(state: JobState, cmd: Assign, now: datetime) -> list[Event]:
    if state.status != "queued" or state.cancel_requested:
        raise Refused(409, f"job {state.job_id!r} is {state.status}, not queued")
    return [JobAssigned(job_id=state.job_id, node_id=cmd.node_id, attempt=state.attempt,
                        resume_checkpoint=state.checkpoint_uri, resume_epoch=state.checkpoint_epoch,
                        occurred_at=now)]


def _decide_reject(state: JobState, cmd: Reject, now: datetime) -> list[Event]:
    if state.status != "assigned" or not state.holds(cmd.node_id, cmd.attempt):
        raise Refused(409, f"job {state.job_id!r} is not assigned to node {cmd.node_id!r}")
    rejected = JobRejected(job_id=state.job_id, node_id=cmd.node_id, attempt=state.attempt,
                           reason=cmd.reason, message=cmd.message, occurred_at=now)
    if state.cancel_requested:
        return [rejected, JobCancelled(job_id=state.job_id, at_epoch=state.epochs_done, occurred_at=now,
                                       event_id=report_event_id(state.job_id, 0, "cancelled"))]
    if cmd.reason == "invalid" and state.rejections + 1 >= MAX_INVALID_REJECTIONS:
        error = f"rejected as invalid {MAX_INVALID_REJECTIONS} times (last by node {cmd.node_id}): {cmd.message}"
        return [rejected, JobFailed(job_id=state.job_id, attempt=state.attempt, error=error, occurred_at=now,
                                    event_id=report_event_id(state.job_id, state.attempt, "failed"))]
    return [rejected]


def _decide_requeue(state: JobState, cmd: Requeue, now: datetime) -> list[Event]:
    if state.status not in ACTIVE:
        raise Refused(409, f"job {state.job_id!r} is {state.status}; only assigned or running jobs are requeued")
    if state.cancel_requested:
        return [JobCancelled(job_id=state.job_id, at_epoch=state.epochs_done, occurred_at=now,
                             event_id=report_event_id(state.job_id, 0, "cancelled"))]
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
                           f"(attempt {attempt or 'current'}); it is {state.status}, {where}")


def _decide_progress(state: JobState, cmd: Progress, now: datetime) -> list[Event]:
    if state.status == "cancelled":
        return []
    _require_holder(state, cmd.node_id, cmd.attempt)
    job, attempt = state.job_id, state.attempt
    out: list[Event] = []
    if state.status == "assigned":
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


_NAMED_METRICS = frozenset({"loss", "accuracy", "val_loss", "val_accuracy"})


def _cancelled(state: JobState, epoch: int, now: datetime) -> JobCancelled:
    return JobCancelled(job_id=state.job_id, at_epoch=epoch, occurred_at=now,
                        event_id=report_event_id(state.job_id, 0, "cancelled"))


def _decide_finish(state: JobState, cmd: Finish, now: datetime) -> list[Event]:
    if state.status == "cancelled":
        return []
    _require_holder(state, cmd.node_id, cmd.attempt)
    job, attempt = state.job_id, state.attempt
    if cmd.outcome == "cancelled":
        return [_cancelled(state, state.epochs_done, now)]
    if cmd.outcome == "completed":
        return [JobCompleted(job_id=job, node_id=cmd.node_id, attempt=attempt, metrics=dict(cmd.metrics),
                             artifact_uri=cmd.artifact_uri, sha256=cmd.sha256, size_bytes=cmd.size_bytes,
                             compute_seconds=cmd.compute_seconds, occurred_at=now,
                             event_id=report_event_id(job, attempt, "completed"))]
    if cmd.retryable and not state.cancel_requested and attempt < MAX_ATTEMPTS:
        return _decide_requeue(state, Requeue(f"failed on node {cmd.node_id}: {cmd.error}", cmd.node_id), now)
    return [JobFailed(job_id=job, node_id=cmd.node_id, attempt=attempt, error=cmd.error or "failed on the node",
                      retryable=cmd.retryable, occurred_at=now,
                      event_id=report_event_id(job, attempt, "failed"))]


def _decide_cancel(state: JobState, cmd: Cancel, now: datetime) -> list[Event]:
    _require_not_done(state)
    if state.cancel_requested:
        return [_cancelled(state, state.epochs_done, now)] if state.status == "queued" else []
    requested = JobCancelRequested(job_id=state.job_id, reason=cmd.reason, occurred_at=now)
    if state.status == "queued":
        return [requested, _cancelled(state, state.epochs_done, now)]
    return [requested]


# --------------------------------------------------------------------------- job evolve


def anomaly(state: JobState | None, event: Event) -> str | None:
    """Why ``event`` cannot apply to ``state`` (None when it applies)."""
    name = type(event).__name__
    status = "new" if state is None else state.status
    if isinstance(event, JobSubmitted):
        return None if status == "new" else f"{name} for a job that already exists ({status})"
    if status == "new":
        return f"{name} for an unknown job"
    if status in TERMINAL:
        return f"{name} for a job that has {_ended_word(status)}"
    match event:
        case JobAssigned():
            return None if status == "queued" else f"{name} for a job that is {status}, not queued"
        case JobRejected() | JobStarted():
            ok = state.holds(event.node_id, event.attempt) and (status == "assigned" or isinstance(event, JobStarted))
            if isinstance(event, JobStarted) and status == "running":
                return f"{name} repeated for attempt {event.attempt}"
            return None if ok else f"{name} from node {event.node_id!r} attempt {event.attempt}, which does not hold the job"
        case EpochCompleted():
            if not state.holds(event.node_id or state.node_id or "", event.attempt):
                return f"{name} from attempt {event.attempt}, which does not hold the job"
            return None if event.epoch > state.epochs_done else f"{name} repeated epoch {event.epoch}"
        case JobCompleted():
            return None if state.holds(event.node_id or state.node_id or "", event.attempt) else (
                f"{name} from attempt {event.attempt}, which does not hold the job")
        case JobRequeued():
            if status not in ACTIVE:
                return f"{name} for a job that is {status}"
            return None if event.next_attempt == state.attempt + 1 else (
                f"{name} to attempt {event.next_attempt}, but the job is on attempt {state.attempt}")
        case JobFailed():
            if event.node_id and status in ACTIVE and not state.holds(event.node_id, event.attempt):
                return f"{name} from node {event.node_id!r}, which does not hold the job"
            return None
        case JobCancelRequested() | JobCancelled():
            return None
    return f"{name} is not a job event"


def evolve(state: JobState | None, event: Event) -> JobState | None:
    """The job after ``event``; unchanged when ``anomaly`` finds it does not apply."""
    if anomaly(state, event) is not None:
        return state
    at = event.occurred_at.timestamp()
    match event:
        case JobSubmitted(spec=spec):
            hp_name = spec.hyperparameters.get("name", "")
            return JobState(job_id=event.job_id, status="queued", spec=spec, priority=spec.priority,
                            epochs=spec.epochs, name=spec.name or hp_name, owner=spec.submitted_by,
                            submitted_at=at)
        case JobAssigned():
            return replace(state, status="assigned", node_id=event.node_id, attempt=event.attempt)
        case JobRejected():
            return replace(state, status="queued", node_id=None, rejections=state.rejections + 1)
        case JobStarted():
            return replace(state, status="running", started_at=state.started_at or at)
        case EpochCompleted():
            metrics = dict(event.metrics)
            for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
                value = getattr(event, key)
                if value is not None:
                    metrics[key] = value
            ckpt = (event.checkpoint_uri, event.epoch) if event.checkpoint_uri else (state.checkpoint_uri, state.checkpoint_epoch)
            return replace(state, status="running", epochs_done=event.epoch, metrics=metrics,
                           checkpoint_uri=ckpt[0], checkpoint_epoch=ckpt[1], started_at=state.started_at or at)
        case JobCompleted():
            artifact = (event.artifact_uri or "", event.sha256 or "", event.size_bytes)
            return _ended(state, "completed", at, metrics=dict(event.metrics) or state.metrics,
                          artifact=artifact, epochs_done=max(state.epochs_done, state.epochs))
        case JobFailed():
            return _ended(state, "failed", at, error=event.error)
        case JobRequeued():
            return replace(state, status="queued", node_id=None, attempt=event.next_attempt,
                           checkpoint_uri=event.resume_checkpoint or state.checkpoint_uri,
                           checkpoint_epoch=event.resume_epoch if event.resume_checkpoint else state.checkpoint_epoch,
                           epochs_done=event.resume_epoch if event.resume_checkpoint else 0)
        case JobCancelRequested():
            return replace(state, cancel_requested=True)
        case JobCancelled():
            return _ended(state, "cancelled", at)
    return state


def _ended(state: JobState, status: str, at: float, **changes) -> JobState:
    """A finished job keeps its summary and drops its spec (compact history)."""
    return replace(state, status=status, ended_at=at, spec=None, **changes)


# --------------------------------------------------------------------------- nodes


@dataclass(frozen=True, slots=True)
class NodeState:
    node_id: str
    status: str = "new"  # online, lost, deregistered
    name: str = ""
    endpoint: str = ""
    devices: tuple = ()
    cpu_cores: int = 0
    ram_bytes: int = 0
    slots: int = 1
    version_text: str = ""
    token_sha256: str = ""
    registration_id: str = ""  # event id of its NodeRegistered: the session token derives from it
    registered_at: float = 0.0
    lost_at: float = 0.0
    version: int = 0  # stream sequence of its last event


@dataclass(frozen=True, slots=True)
class MarkLost:
    last_seen: datetime
    reason: str = "heartbeat timeout"


@dataclass(frozen=True, slots=True)
class Deregister:
    reason: str = ""


def decide_node(state: NodeState | None, command: MarkLost | Deregister, now: datetime) -> list[Event]:
    if state is None or state.status == "new":
        raise Refused(404, "unknown node")
    if state.status != "online":
        raise Refused(409, f"node {state.node_id!r} is {state.status}, not online")
    if isinstance(command, MarkLost):
        return [NodeLost(node_id=state.node_id, last_seen=command.last_seen, reason=command.reason, occurred_at=now)]
    return [NodeDeregistered(node_id=state.node_id, reason=command.reason, occurred_at=now)]


def node_anomaly(state: NodeState | None, event: Event) -> str | None:
    if isinstance(event, NodeRegistered):
        return None
    if state is None or state.status != "online":
        return f"{type(event).__name__} for a node that is {'unknown' if state is None else state.status}"
    return None


def evolve_node(state: NodeState | None, event: Event) -> NodeState | None:
    if node_anomaly(state, event) is not None:
        return state
    match event:
        case NodeRegistered():
            return NodeState(node_id=event.node_id, status="online", name=event.name, endpoint=event.endpoint,
                             devices=tuple(event.devices), cpu_cores=event.cpu_cores, ram_bytes=event.ram_bytes,
                             slots=max(1, event.slots), version_text=event.version,
                             token_sha256=event.session_token_sha256, registration_id=event.event_id,
                             registered_at=event.occurred_at.timestamp())
        case NodeLost():
            return replace(state, status="lost", lost_at=event.occurred_at.timestamp())
        case NodeDeregistered():
            return replace(state, status="deregistered", lost_at=event.occurred_at.timestamp())
    return state
