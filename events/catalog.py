"""The event catalog: every state change of the platform as a frozen, tagged Struct.

Rules for changing this file (schema evolution):
- never remove, rename or reorder a field; never change a field's type;
- a new field gets a default, so events written before it still decode;
- a change that a default cannot express bumps the type's ``SCHEMA_VERSIONS`` entry and
  registers an upcaster in ``events.codec`` that rewrites the old shape.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

import msgspec


def new_event_id() -> str:
    return str(uuid.uuid4())


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


class EventBase(msgspec.Struct, frozen=True, kw_only=True, tag=True, tag_field="type"):
    """The envelope every event carries; the tag ``type`` is the class name."""

    event_id: str = msgspec.field(default_factory=new_event_id)
    occurred_at: datetime = msgspec.field(default_factory=utc_now)
    schema_version: int = 1
    causation_id: str | None = None
    correlation_id: str | None = None


class JobEvent(EventBase, frozen=True, kw_only=True):
    job_id: str


class NodeEvent(EventBase, frozen=True, kw_only=True):
    node_id: str


# --- value types carried inside events ------------------------------------------------


class Device(msgspec.Struct, frozen=True, kw_only=True):
    type: str  # "cpu", "cuda", "rocm", "tpu", ...
    name: str = ""
    memory_bytes: int = 0


class Requirements(msgspec.Struct, frozen=True, kw_only=True):
    device: str | None = None  # a device type the node must have ("cuda"), or None for any
    min_memory_bytes: int = 0  # memory the job needs on that device (or RAM on CPU)




class JobSpec(msgspec.Struct, frozen=True, kw_only=True):
    job_type: str = "JOB_TYPE_TRAINING"
    model_definition: str = ""  # JSON text, e.g. '{"type": "mlp", "hidden": [64]}'
    hyperparameters: dict[str, str] = {}
    dataset_uri: str = ""
    epochs: int = 1
    batch_size: int = 32
    priority: int = 1  # 0 low, 1 normal, 2 high, 3 critical
    requirements: Requirements = Requirements()
    name: str = ""
    submitted_by: str = ""


# --- node aggregate: subject events.node.<node_id> -----------------------------------


class NodeRegistered(NodeEvent, frozen=True, kw_only=True):
    name: str = ""
    endpoint: str  # host:port of the node's NodeService (AssignJob)
    devices: list[Device] = []
    cpu_cores: int = 0
    ram_bytes: int = 0
    slots: int = 1
    version: str = ""
    session_token_sha256: str = ""  # the token itself is never stored
    region: str = ""


class NodeLost(NodeEvent, frozen=True, kw_only=True):
    last_seen: datetime
    reason: str = "heartbeat timeout"


class NodeDeregistered(NodeEvent, frozen=True, kw_only=True):
    reason: str = ""


# --- telemetry: subject telemetry.node.<node_id>, age-limited stream ---------------------


class NodeHeartbeat(NodeEvent, frozen=True, kw_only=True):
    active_jobs: list[str] = []
    cpu_percent: float = 0.0
    ram_used_bytes: int = 0
    ram_total_bytes: int = 0
    gpu_percent: float | None = None
    gpu_memory_used_bytes: int | None = None
    gpu_memory_total_bytes: int | None = None


# --- job aggregate: subject events.job.<job_id> -----------------------------------------


class JobSubmitted(JobEvent, frozen=True, kw_only=True):
    spec: JobSpec


class JobAssigned(JobEvent, frozen=True, kw_only=True):
    node_id: str
    attempt: int = 1
    resume_checkpoint: str | None = None
    resume_epoch: int = 0


class JobRejected(JobEvent, frozen=True, kw_only=True):
    node_id: str
    attempt: int = 1
    reason: str = ""  # "busy", "invalid", "unreachable"
    message: str = ""


class JobStarted(JobEvent, frozen=True, kw_only=True):
    node_id: str
    attempt: int = 1
    resumed_from_epoch: int = 0


class EpochCompleted(JobEvent, frozen=True, kw_only=True):
    node_id: str = ""
    attempt: int = 1
    epoch: int
    total_epochs: int = 0
    loss: float | None = None
    accuracy: float | None = None
    val_loss: float | None = None
    val_accuracy: float | None = None
    seconds: float = 0.0
    samples_per_s: float = 0.0
    checkpoint_uri: str | None = None
    metrics: dict[str, float] = {}


class JobCompleted(JobEvent, frozen=True, kw_only=True):
    node_id: str = ""
    attempt: int = 1
    metrics: dict[str, float] = {}
    artifact_uri: str | None = None
    sha256: str | None = None
    size_bytes: int = 0
    compute_seconds: float = 0.0


class JobFailed(JobEvent, frozen=True, kw_only=True):
    node_id: str | None = None
    attempt: int = 1
    error: str
    retryable: bool = False
    code: int = 0  # HTTP-style, as the node said (400 bad job, 422 diverged, 503, 507 out of memory); 0: unknown


class JobRequeued(JobEvent, frozen=True, kw_only=True):
    reason: str
    next_attempt: int
    resume_checkpoint: str | None = None
    resume_epoch: int = 0
    excluded_node: str | None = None


class JobCancelRequested(JobEvent, frozen=True, kw_only=True):
    reason: str = ""


class JobCancelled(JobEvent, frozen=True, kw_only=True):
    at_epoch: int = 0


class JobWaiting(JobEvent, frozen=True, kw_only=True):
    """Central's scheduler found no node for a queued job, and says why ("no online node
    has a cuda device", "all slots of the nodes that fit it are busy"). Appended when the
    reason changes; leaving the queue clears it."""

    reason: str


# --- deployments: subject events.deployment.<deployment_id> ------------------------------
# Appended by central (its DeploymentService places a deployment on a node and follows
# it there); nodes never publish to events.>. DeploymentFailed with ``lost`` set means
# the node holding it was lost: the deployment may be placed again.


class DeploymentEvent(EventBase, frozen=True, kw_only=True):
    deployment_id: str


class DeploymentRequested(DeploymentEvent, frozen=True, kw_only=True):
    model_id: str = ""  # the completed job whose model is served
    model_uri: str = ""  # nats://cyxwiz-models/<job id>
    sha256: str = ""
    name: str = ""
    node_id: str | None = None  # a node asked for (id or name), else central chooses
    max_batch: int = 0
    runtime_params: dict[str, str] = {}
    user_id: str = ""
    requirements: Requirements = Requirements()  # the device kind and memory asked for
    memory_bytes: int = 0  # what central estimated serving it takes (placement holds it against the node's available memory)


class DeploymentPlaced(DeploymentEvent, frozen=True, kw_only=True):
    node_id: str
    endpoint: str = ""  # the node's gRPC endpoint central controls it through


class DeploymentRunning(DeploymentEvent, frozen=True, kw_only=True):
    node_id: str
    grpc_endpoint: str = ""  # InferenceService and the OIP on the node
    http_endpoint: str = ""  # /v1/predict and /v2 on the node
    load_seconds: float = 0.0


class DeploymentFailed(DeploymentEvent, frozen=True, kw_only=True):
    error: str
    node_id: str | None = None
    lost: bool = False


class DeploymentStopped(DeploymentEvent, frozen=True, kw_only=True):
    reason: str = ""


class DeploymentDeleted(DeploymentEvent, frozen=True, kw_only=True):
    reason: str = ""


# --- telemetry: subject telemetry.deployment.<deployment_id>, published by the node -------


class DeploymentStats(DeploymentEvent, frozen=True, kw_only=True):
    node_id: str = ""
    window_start: datetime
    window_s: float = 5.0
    requests: int = 0
    errors: int = 0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    mean_batch: float = 0.0


# --- terminal sessions of a node: subject events.node.<node_id> ---------------------------
# Reported by the node over gRPC (nodes may not publish to events.>) and appended by
# central. ``session_ref`` is a digest of the session id (the id itself is a secret);
# ``principal`` is "api-key", "grant:<user>" or "local:<user>". Never keystrokes.


class TerminalSessionOpened(NodeEvent, frozen=True, kw_only=True):
    session_ref: str
    principal: str
    user_id: str = ""
    deployment_id: str = ""


class TerminalSessionClosed(NodeEvent, frozen=True, kw_only=True):
    session_ref: str
    principal: str
    user_id: str = ""
    deployment_id: str = ""
    bytes_in: int = 0
    bytes_out: int = 0
    exit_code: int | None = None
    duration_s: float = 0.0
    reason: str = ""


class TerminalSessionDenied(NodeEvent, frozen=True, kw_only=True):
    principal: str
    deployment_id: str = ""
    reason: str = ""


# --- job telemetry: subject telemetry.job.<job_id>, age-limited stream -----------------


class JobPhase(JobEvent, frozen=True, kw_only=True):
    """A job's node entered a phase: loading (data), compiling, training or
    checkpointing (waiting for the last checkpoint). Telemetry, not state: best effort."""

    node_id: str = ""
    attempt: int = 1
    phase: str
    epoch: int = 0  # while training: the epoch in progress (1-based), 0 otherwise
    step: int = 0  # steps of that epoch done
    steps: int = 0  # steps in that epoch (0: not known)


class JobLog(JobEvent, frozen=True, kw_only=True):
    """One line of a job's log on its node: data loaded, compiled in N s, each epoch,
    warnings, the error with its traceback. Telemetry: kept with the telemetry stream."""

    node_id: str = ""
    attempt: int = 1
    level: str = "info"  # info, warning, error
    message: str
    traceback: str = ""


Event = (
    NodeRegistered
    | NodeLost
    | NodeDeregistered
    | NodeHeartbeat
    | JobSubmitted
    | JobAssigned
    | JobRejected
    | JobStarted
    | EpochCompleted
    | JobCompleted
    | JobFailed
    | JobRequeued
    | JobCancelRequested
    | JobCancelled
    | DeploymentRequested
    | DeploymentPlaced
    | DeploymentRunning
    | DeploymentFailed
    | DeploymentStopped
    | DeploymentDeleted
    | DeploymentStats
    | TerminalSessionOpened
    | TerminalSessionClosed
    | TerminalSessionDenied
    | JobPhase
    | JobWaiting
    | JobLog
)

EVENT_TYPES: dict[str, type] = {cls.__name__: cls for cls in Event.__args__}

# The current schema version of each type; an event written with an older one is
# passed through the upcasters in events.codec before it is decoded.
SCHEMA_VERSIONS: dict[str, int] = {name: 1 for name in EVENT_TYPES}

TELEMETRY_TYPES = frozenset({"NodeHeartbeat", "DeploymentStats", "JobPhase", "JobLog"})
DEPLOYMENT_TYPES = frozenset({
    "DeploymentRequested", "DeploymentPlaced", "DeploymentRunning", "DeploymentFailed", "DeploymentStopped",
    "DeploymentDeleted",
})
TERMINAL_JOB_TYPES = frozenset({"JobCompleted", "JobFailed", "JobCancelled"})
TERMINAL_SESSION_TYPES = frozenset({"TerminalSessionOpened", "TerminalSessionClosed", "TerminalSessionDenied"})
