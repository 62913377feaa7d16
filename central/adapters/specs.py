"""Pure conversions between the protocol's messages and central's own types, with checks.

``spec_from_config`` and ``registration_from_info`` validate what a client or node sent
and raise ``Refused(400, ...)`` naming the field and what to do; the others build the
protocol's answers from central's state. Generated protobuf types stop here.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from datetime import datetime, timezone

from central.adapters.job_limits import MAX_NAME, check_spec
from central.lifecycle.errors import Refused
from central.lifecycle.jobs import JobState
from central.lifecycle.nodes import NodeState
from events import Device, JobPhase, JobSpec, Requirements
from events.devices import DEVICES
from protos import common_pb2, job_pb2, node_pb2

ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
MAX_SLOTS = 1024

DEVICE_NAMES = {
    common_pb2.DEVICE_CPU: "cpu",
    common_pb2.DEVICE_CUDA: "cuda",
    common_pb2.DEVICE_OPENCL: "opencl",
    common_pb2.DEVICE_METAL: "metal",
    common_pb2.DEVICE_VULKAN: "vulkan",
}
DEVICE_TYPES = {name: number for number, name in DEVICE_NAMES.items()}

# the numbers each protocol enum defines (``EnumTypeWrapper.values()`` builds a list per call)
ENUM_VALUES = {
    "JobType": frozenset(job_pb2.JobType.values()),
    "JobPriority": frozenset(job_pb2.JobPriority.values()),
    "DeviceType": frozenset(common_pb2.DeviceType.values()),
    "StatusCode": frozenset(common_pb2.StatusCode.values()),
}

STATUS_OF_STATE = {
    "queued": common_pb2.STATUS_PENDING,
    "assigned": common_pb2.STATUS_PENDING,
    "running": common_pb2.STATUS_IN_PROGRESS,
    "completed": common_pb2.STATUS_COMPLETED,
    "failed": common_pb2.STATUS_FAILED,
    "cancelled": common_pb2.STATUS_CANCELLED,
}


def check_id(what: str, value: str) -> str:
    if not value:
        raise Refused(400, f"{what} is missing")
    if not ID_PATTERN.match(value):
        raise Refused(400, f"{what} {value[:80]!r} is not a valid id: use 1-128 letters, digits, '-' or '_'")
    return value


def check_finite(what: str, value: float, *, minimum: float | None = None) -> float:
    if not math.isfinite(value):
        raise Refused(400, f"{what} must be a finite number (got {value})")
    if minimum is not None and value < minimum:
        raise Refused(400, f"{what} must be >= {minimum} (got {value})")
    return value


def check_metrics(what: str, metrics) -> dict[str, float]:
    out = {}
    for key, value in metrics.items():
        if not key or len(key) > 128:
            raise Refused(400, f"{what} has a key of length {len(key)}; use 1-128 characters")
        out[key] = check_finite(f"{what}[{key!r}]", value)
    return out


# --------------------------------------------------------------------------- jobs in


def spec_from_config(config: job_pb2.JobConfig, submitted_by: str = "", *, nodes: Iterable[NodeState] = (),
                     largest_memory: Callable[[str | None], int | None] | None = None) -> JobSpec:
    """A JobSpec from a submitted JobConfig; raises ``Refused(400)`` naming the bad field.

    ``nodes`` are the online nodes (or ``largest_memory``, see ``check_spec``): the model
    must fit the largest."""
    if config.job_type != job_pb2.JOB_TYPE_TRAINING:
        got = job_pb2.JobType.Name(config.job_type) if config.job_type in ENUM_VALUES["JobType"] else config.job_type
        raise Refused(400, f"config.job_type {got} is not supported: central runs JOB_TYPE_TRAINING jobs")
    if config.priority not in ENUM_VALUES["JobPriority"]:
        raise Refused(400, f"config.priority {config.priority} is unknown; use PRIORITY_LOW..PRIORITY_CRITICAL (0-3)")
    if config.required_device not in ENUM_VALUES["DeviceType"]:
        raise Refused(400, f"config.required_device {config.required_device} is unknown; use a DeviceType")
    if config.estimated_memory < 0:
        raise Refused(400, f"config.estimated_memory must be >= 0 bytes (got {config.estimated_memory})")
    hyper = dict(config.hyperparameters)
    name = hyper.pop("name", "")  # the job's display name rides in hyperparameters; it is no training setting
    spec = JobSpec(
        job_type="JOB_TYPE_TRAINING",
        model_definition=config.model_definition,
        hyperparameters=hyper,
        dataset_uri=config.dataset_uri,
        epochs=config.epochs,
        batch_size=config.batch_size,
        priority=config.priority,
        requirements=Requirements(device=DEVICE_NAMES.get(config.required_device),
                                  min_memory_bytes=config.estimated_memory),
        name=name,
        submitted_by=submitted_by,
    )
    return check_spec(spec, nodes=nodes, largest_memory=largest_memory, where="config",
                      name_field='config.hyperparameters["name"]')


def config_from_spec(job: JobState, *, attempt: int, resume_uri: str | None, resume_epoch: int,
                     devices: int = 1) -> job_pb2.JobConfig:
    """The JobConfig a node receives in AssignJob (with attempt, where to resume, and the
    attempt's device count in place of the hyperparameter ``devices`` it was asked as)."""
    spec = job.spec or JobSpec()
    req = spec.requirements
    hyperparameters = spec.hyperparameters
    if DEVICES in hyperparameters or devices != 1:
        hyperparameters = {**hyperparameters, DEVICES: str(devices)}
    return job_pb2.JobConfig(
        job_id=job.job_id,
        job_type=job_pb2.JOB_TYPE_TRAINING,
        priority=spec.priority,
        model_definition=spec.model_definition,
        hyperparameters=hyperparameters,
        dataset_uri=spec.dataset_uri,
        batch_size=spec.batch_size,
        epochs=spec.epochs,
        required_device=DEVICE_TYPES.get(req.device or "", common_pb2.DEVICE_UNKNOWN),
        estimated_memory=req.min_memory_bytes,
        resume_checkpoint_uri=resume_uri or "",
        resume_from_epoch=resume_epoch,
        attempt=attempt,
    )


# --------------------------------------------------------------------------- jobs out


def job_status(job: JobState, phase: JobPhase | None = None) -> job_pb2.JobStatus:
    """The protocol's JobStatus of ``job``; ``phase`` is its node's latest (telemetry)."""
    status = job_pb2.JobStatus(
        job_id=job.job_id,
        status=STATUS_OF_STATE.get(job.status, common_pb2.STATUS_UNKNOWN),
        progress=min(1.0, job.epochs_done / job.epochs) if job.epochs else 0.0,
        current_node_id=job.node_id or "",
        start_time=int(job.started_at),
        end_time=int(job.ended_at),
        metrics=job.metrics,
        current_epoch=job.epochs_done,
        attempt=job.attempt,
        state=job.status,
        job_type=job_pb2.JOB_TYPE_TRAINING,
        submitted_at=int(job.submitted_at),
        checkpoint_uri=job.checkpoint_uri or "",
        total_epochs=job.epochs,
        name=job.name,
        waiting_reason=job.waiting_reason if job.status == "queued" else "",
        retryable=job.retryable and job.status == "failed",
    )
    if phase is not None:
        status.phase = phase.phase
        if phase.phase == "training" and phase.steps > 0:
            status.epoch_progress = min(1.0, phase.step / phase.steps)
    if job.error:
        code = (job.error_code or 500) if job.status == "failed" else 0  # what the node said, else a failure
        status.error.CopyFrom(common_pb2.Error(code=code, message=job.error))
    if job.artifact:
        status.model_weights_uri, status.model_weights_hash, status.model_size = job.artifact
    return status


# --------------------------------------------------------------------------- nodes


def registration_from_info(info: node_pb2.NodeInfo) -> dict:
    """The NodeRegistered fields from a RegisterNode's NodeInfo; ``Refused(400)`` if bad."""
    from protos.convert import EndpointError, node_endpoint

    if info.node_id:
        check_id("info.node_id", info.node_id)
    _check_length("info.name", info.name, MAX_NAME)
    try:
        endpoint = node_endpoint(info.ip_address, info.port)
    except EndpointError as exc:
        raise Refused(400, f"info.{exc.field}: {exc}") from None
    if len(info.ip_address) > 255:
        raise Refused(400, "info.ip_address is too long")
    if not 0 <= info.slots <= MAX_SLOTS:
        raise Refused(400, f"info.slots must be 0..{MAX_SLOTS} (got {info.slots}); 0 means one")
    if info.cpu_cores < 0 or info.ram_total < 0:
        raise Refused(400, "info.cpu_cores and info.ram_total must be >= 0")
    if len(info.devices) > 256:
        raise Refused(400, f"info.devices lists {len(info.devices)} devices, at most 256")
    devices = []
    for i, d in enumerate(info.devices):
        if d.device_type not in ENUM_VALUES["DeviceType"]:
            raise Refused(400, f"info.devices[{i}].device_type {d.device_type} is unknown")
        if min(d.memory_total, d.vram_total, d.memory_available, d.vram_available) < 0:
            raise Refused(400, f"info.devices[{i}] memory must be >= 0 bytes")
        _check_length(f"info.devices[{i}].device_name", d.device_name, MAX_NAME)
        _check_length(f"info.devices[{i}].gpu_model", d.gpu_model, MAX_NAME)
        devices.append(Device(type=DEVICE_NAMES.get(d.device_type, "unknown"), name=d.device_name or d.gpu_model,
                              memory_bytes=max(d.memory_total, d.vram_total)))
    v = info.version
    _check_length("info.version.build", v.build, 64)
    version = f"{v.major}.{v.minor}.{v.patch}" + (f"+{v.build}" if v.build else "")
    _check_length("info.region", info.region, 64)
    return dict(name=info.name, endpoint=endpoint, devices=devices, cpu_cores=info.cpu_cores,
                ram_bytes=info.ram_total, slots=max(1, info.slots), version=version, region=info.region)


def _check_length(what: str, value: str, limit: int) -> None:
    """Free text over its limit is refused, never cut: the caller learns what was kept."""
    if len(value) > limit:
        raise Refused(400, f"{what} is too long ({len(value)} characters, at most {limit})")


def node_info(node: NodeState, *, last_seen_unix: float, completed: int, running: int, reputation: float = 1.0,
              reported: node_pb2.NodeInfo | None = None) -> node_pb2.NodeInfo:
    """The node as central knows it; what changes between registrations (available
    memory) comes from ``reported``, the NodeInfo of its latest heartbeat (0 when none)."""
    host, _, port = node.endpoint.rpartition(":")
    info = node_pb2.NodeInfo(
        node_id=node.node_id,
        name=node.name,
        cpu_cores=node.cpu_cores,
        ram_total=node.ram_bytes,
        ip_address=host.strip("[]"),
        port=int(port) if port.isascii() and port.isdigit() else 0,
        total_jobs_completed=completed,
        is_online=node.status == "online",
        last_heartbeat=int(last_seen_unix),
        slots=node.slots,
        region=node.region,
        reputation_score=reputation,
        ram_available=reported.ram_available if reported is not None else 0,
    )
    major, minor, patch = (_version_parts(node.version_text) + [0, 0, 0])[:3]
    info.version.CopyFrom(common_pb2.Version(major=major, minor=minor, patch=patch))
    beat = list(reported.devices) if reported is not None else []
    for i, d in enumerate(node.devices):
        available = beat[i].memory_available if i < len(beat) else 0
        info.devices.append(common_pb2.DeviceCapabilities(
            device_type=DEVICE_TYPES.get(d.type, common_pb2.DEVICE_UNKNOWN), device_name=d.name,
            memory_total=d.memory_bytes, memory_available=available))
    return info


def _version_parts(text: str) -> list[int]:
    parts = []
    for piece in text.split("+")[0].split(".")[:3]:
        parts.append(int(piece) if piece.isascii() and piece.isdigit() and len(piece) < 9 else 0)
    return parts


def unix(dt: datetime) -> float:
    return dt.replace(tzinfo=dt.tzinfo or timezone.utc).timestamp()
