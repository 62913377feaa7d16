"""The Python client for ML engineers: submit, watch and manage jobs over gRPC.

    from central.client import Client
    with Client("localhost:50051") as client:
        job_id = client.submit(dataset_uri="builtin://digits", model={"type": "mlp", "hidden": [64]}, epochs=5)
        for update in client.follow(job_id):
            print(update.epoch, update.metrics.get("loss"))

Errors are ``ClientError`` subclasses that carry the protocol's code and a message
that says what to do; gRPC's own errors never leak out.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Iterator

import grpc

from central.cluster import central_address
from central.lifecycle.jobs import TERMINAL
from events.errors import CyxwizError
from protos import common_pb2, job_pb2, job_pb2_grpc, node_pb2, node_pb2_grpc
from protos.convert import bearer_metadata, dict_to_job_config
from protos.trailers import CODE_TRAILER, code_of
from central.client_deployments import DeploymentCalls, DeploymentInfo  # noqa: F401  (re-exported)

TERMINAL_STATES = frozenset(str(s) for s in TERMINAL)


class ClientError(CyxwizError):
    """What central answered, as the error tree's code (``events.errors.CODES``)."""

    code = 500

    def __init__(self, message: str, code: int | None = None):
        super().__init__(message, code=code)


class InvalidRequest(ClientError):
    code = 400


class Unauthenticated(ClientError):
    code = 401


class Forbidden(Unauthenticated):
    code = 403


class NotFound(ClientError):
    code = 404


class Conflict(ClientError):
    code = 409


class CentralUnavailable(ClientError):
    code = 503
    retryable = True


_BY_CODE = {cls.code: cls for cls in (InvalidRequest, Unauthenticated, Forbidden, NotFound, Conflict)}


def error_for(code: int, message: str) -> ClientError:
    """The client's error for an HTTP-style code: its own class where it has one, else a
    ``ClientError`` that carries the code (and the table's retryable for 429/503/504)."""
    cls = _BY_CODE.get(code, ClientError)
    error = cls(message, code)
    error.retryable = code in (429, 503, 504)
    return error


@dataclass(frozen=True)
class JobInfo:
    job_id: str
    state: str
    name: str = ""
    node_id: str = ""
    epoch: int = 0
    total_epochs: int = 0
    progress: float = 0.0
    attempt: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    error: str = ""
    artifact_uri: str = ""
    sha256: str = ""
    size_bytes: int = 0
    submitted_at: int = 0
    started_at: int = 0
    finished_at: int = 0
    waiting_reason: str = ""  # queued: why no node has taken it
    phase: str = ""  # assigned or running: loading, compiling, training, checkpointing
    epoch_progress: float = 0.0  # training: the share of the current epoch done
    retryable: bool = False  # failed: whether a run elsewhere may succeed

    @property
    def done(self) -> bool:
        return self.state in TERMINAL_STATES

    @classmethod
    def from_proto(cls, status: job_pb2.JobStatus) -> "JobInfo":
        return cls(
            job_id=status.job_id,
            state=status.state or _state_from_code(status.status),
            name=status.name,
            node_id=status.current_node_id,
            epoch=status.current_epoch,
            total_epochs=status.total_epochs,
            progress=status.progress,
            attempt=status.attempt,
            metrics=dict(status.metrics),
            error=status.error.message if status.HasField("error") else "",
            artifact_uri=status.model_weights_uri,
            sha256=status.model_weights_hash,
            size_bytes=status.model_size,
            submitted_at=status.submitted_at,
            started_at=status.start_time,
            finished_at=status.end_time,
            waiting_reason=status.waiting_reason,
            phase=status.phase,
            epoch_progress=status.epoch_progress,
            retryable=status.retryable,
        )

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class NodeSummary:
    node_id: str
    name: str
    endpoint: str
    online: bool
    devices: list[str]
    cpu_cores: int
    ram_bytes: int
    slots: int
    jobs_completed: int

    @classmethod
    def from_proto(cls, info: common_pb2.NodeInfo | Any) -> "NodeSummary":
        devices = [
            f"{common_pb2.DeviceType.Name(d.device_type).removeprefix('DEVICE_').lower()}:{d.device_name}"
            for d in info.devices
        ]
        return cls(
            node_id=info.node_id,
            name=info.name,
            endpoint=f"{info.ip_address}:{info.port}",
            online=info.is_online,
            devices=devices,
            cpu_cores=info.cpu_cores,
            ram_bytes=info.ram_total,
            slots=info.slots,
            jobs_completed=info.total_jobs_completed,
        )

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class Client(DeploymentCalls):
    """A connection to central's gRPC endpoint: ``target``, else ``CYXWIZ_CENTRAL``, else the
    cluster file of ``CYXWIZ_HOME`` (``central.cluster``), else localhost:50051."""

    def __init__(self, target: str | None = None, *, api_key: str | None = None, timeout: float = 10.0):
        self.target = central_address(target)
        self.timeout = timeout
        api_key = api_key if api_key is not None else os.environ.get("CYXWIZ_API_KEY")
        self._metadata = bearer_metadata(api_key) if api_key else ()
        self._channel = grpc.insecure_channel(self.target)
        self._jobs = job_pb2_grpc.JobServiceStub(self._channel)
        self._nodes = node_pb2_grpc.NodeDiscoveryServiceStub(self._channel)

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    # --- jobs ------------------------------------------------------------------------------

    def submit(
        self,
        *,
        dataset_uri: str,
        model: dict | str | None = None,
        epochs: int = 10,
        batch_size: int = 64,
        hyperparameters: dict[str, Any] | None = None,
        priority: str = "normal",
        job_type: str = "training",
        device: str | None = None,
        job_id: str | None = None,
        name: str | None = None,
        estimated_memory: int = 0,
    ) -> str:
        """Submit a training job; returns its id. Hyperparameter values may be numbers.

        The id is chosen here (unless given), so a submit that failed on the way back
        (central or NATS restarting: UNAVAILABLE) is retried with the same id, and central
        answers the retry with that same job: it never makes a second one."""
        config = {
            "job_type": job_type,
            "priority": priority,
            "dataset_uri": dataset_uri,
            "epochs": epochs,
            "batch_size": batch_size,
            "model_definition": model if isinstance(model, str) else json.dumps(model or {"type": "mlp"}),
            "hyperparameters": {k: str(v) for k, v in (hyperparameters or {}).items()},
            "estimated_memory": estimated_memory,
        }
        if device:
            config["required_device"] = device
        config["job_id"] = job_id or uuid.uuid4().hex
        if name:
            config["hyperparameters"].setdefault("name", name)
        try:
            pb = dict_to_job_config(config)
        except ValueError as exc:
            raise InvalidRequest(str(exc)) from exc
        response = self._retrying(self._jobs.SubmitJob, job_pb2.SubmitJobRequest(config=pb))
        _raise_for(response)
        return response.job_id

    def status(self, job_id: str) -> JobInfo:
        response = self._call(self._jobs.GetJobStatus, job_pb2.GetJobStatusRequest(job_id=job_id))
        _raise_for(response)
        return JobInfo.from_proto(response.status)

    def follow(self, job_id: str) -> Iterator[JobInfo]:
        """Live updates of a job until it ends (one at least per epoch)."""
        stream = self._jobs.StreamJobUpdates(
            job_pb2.GetJobStatusRequest(job_id=job_id), metadata=self._metadata
        )
        try:
            for update in stream:
                info = JobInfo.from_proto(update.status)
                yield info
                if info.done:
                    return
        except grpc.RpcError as exc:
            raise _translate(exc, self.target) from None
        finally:
            stream.cancel()

    def wait(self, job_id: str) -> JobInfo:
        """Block until the job ends; returns its final status."""
        last = None
        for last in self.follow(job_id):
            pass
        return last if last is not None and last.done else self.status(job_id)

    def cancel(self, job_id: str, reason: str = "") -> None:
        response = self._call(self._jobs.CancelJob, job_pb2.CancelJobRequest(job_id=job_id, reason=reason))
        _raise_for(response)

    def jobs(self, *, limit: int = 100) -> list[JobInfo]:
        response = self._call(self._jobs.ListJobs, job_pb2.ListJobsRequest(page_size=limit))
        return [JobInfo.from_proto(job) for job in response.jobs]

    def iter_jobs(self, *, page_size: int = 1000) -> Iterator[JobInfo]:
        """Every job central knows, newest first, a page at a time."""
        token = ""
        while True:
            response = self._call(self._jobs.ListJobs, job_pb2.ListJobsRequest(page_size=page_size, page_token=token))
            yield from (JobInfo.from_proto(job) for job in response.jobs)
            token = response.next_page_token
            if not token:
                return

    # --- nodes -----------------------------------------------------------------------------

    def nodes(self, *, online_only: bool = False) -> list[NodeSummary]:
        response = self._call(self._nodes.ListNodes, node_pb2.ListNodesRequest(page_size=1000, online_only=online_only))
        return [NodeSummary.from_proto(info) for info in response.nodes]

    def _retrying(self, method, request, attempts: int = 5):
        """``_call`` again while a retry can help (central or its event store unavailable,
        busy), for calls that are idempotent."""
        for attempt in range(attempts):
            try:
                return self._call(method, request)
            except ClientError as exc:
                if not exc.retryable or attempt == attempts - 1:
                    raise
                time.sleep(min(2.0, 0.25 * 2**attempt))

    def _call(self, method, request):
        try:
            return method(request, timeout=self.timeout, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise _translate(exc, self.target) from None


def _state_from_code(code: int) -> str:
    return {
        common_pb2.STATUS_PENDING: "queued",
        common_pb2.STATUS_IN_PROGRESS: "running",
        common_pb2.STATUS_COMPLETED: "completed",
        common_pb2.STATUS_FAILED: "failed",
        common_pb2.STATUS_CANCELLED: "cancelled",
    }.get(code, "unknown")


def _raise_for(response) -> None:
    if response.HasField("error") and response.error.code >= 400:
        raise error_for(response.error.code, response.error.message)


def _translate(exc: grpc.RpcError, target: str) -> ClientError:
    code = code_of(exc) or 500
    if code in (503, 504) and exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED) \
            and not _from_central(exc):
        return CentralUnavailable(
            f"central is not reachable at {target}: start it with 'cyxwiz up' or 'cyxwiz central', "
            "or point CYXWIZ_CENTRAL / --central at it"
        )
    detail = exc.details() if hasattr(exc, "details") else str(exc)
    return error_for(code, detail or exc.code().name)


def _from_central(exc: grpc.RpcError) -> bool:
    """Whether central itself answered (with its code trailer), as opposed to the channel."""
    return any(key == CODE_TRAILER for key, _ in (exc.trailing_metadata() or ()))
