"""Central's half of NodeService (RegisterNode, Heartbeat, ReportProgress,
ReportCompletion, GetNodeMetrics) and JobStatusService: how a node's reports become
events (see ``central.adapters.grpc_services`` for the contract)."""

from __future__ import annotations

import logging
import uuid

from central.adapters.auth import token_sha256
from central.adapters.grpc_base import Services, bounded_text, unary
from central.adapters.specs import check_finite, check_id, check_metrics, registration_from_info
from central.lifecycle.deciders import Finish, Progress, jobs_to_cancel
from central.lifecycle.errors import Refused
from central.lifecycle.nodes import Register, registration_id
from events import NodeHeartbeat
from protos import common_pb2, node_pb2, node_pb2_grpc
from protos.convert import status_error

__all__ = ["JobStatusService", "NodeService", "OUTCOMES", "PROGRESS_STATUSES"]

log = logging.getLogger("cyxwiz.central.grpc")

# --------------------------------------------------------------------------- NodeService


class NodeService(node_pb2_grpc.NodeServiceServicer):
    """The central half; AssignJob is left to the base class (UNIMPLEMENTED here)."""

    def __init__(self, services: Services) -> None:
        self.s = services

    @unary(node_pb2.RegisterNodeResponse)
    async def RegisterNode(self, request, context):
        """A node id belongs to whoever registered it first: registering it again needs
        that node's earlier session token (``authorization: Bearer``); without it the
        caller gets a fresh id and the holder of the id is untouched."""
        if not request.HasField("info"):
            raise Refused(400, "info is missing: a RegisterNodeRequest needs the node's NodeInfo")
        self.s.auth.check_registration(request.authentication_token)
        fields = registration_from_info(request.info)
        node_id = request.info.node_id or uuid.uuid4().hex
        old = self.s.state.nodes.get(node_id)
        if old is not None and not self.s.auth.holds_session(context.invocation_metadata(), old):
            log.warning("node id %s is taken and the caller did not prove to hold it; giving it a fresh id", node_id)
            node_id, old = uuid.uuid4().hex, None
        proven = old is not None

        def registration(version: int) -> Register:  # the token derives from the registration's id
            token = self.s.auth.session_token(node_id, registration_id(node_id, version))
            return Register(token_sha256=token_sha256(token), proven=proven, **fields)

        (event,) = await self.s.commands.node(node_id, registration)
        token = self.s.auth.session_token(node_id, event.event_id)
        if old is not None and old.endpoint != event.endpoint:
            await self.s.dispatcher.forget(old.endpoint)
        if self.s.state.node_jobs.get(node_id):
            await self.s.liveness.requeue_jobs_of(node_id, f"node {node_id} registered again")
        self.s.liveness.beat(node_id)
        log.info("node %s registered at %s with %d slot(s)", node_id, event.endpoint, event.slots)
        return node_pb2.RegisterNodeResponse(status=common_pb2.STATUS_SUCCESS, node_id=node_id, session_token=token)

    @unary(node_pb2.HeartbeatResponse)
    async def Heartbeat(self, request, context):
        check_id("node_id", request.node_id)
        node = self.s.state.nodes.get(request.node_id)
        if node is None or node.status != "online":
            why = "unknown" if node is None else node.status
            return node_pb2.HeartbeatResponse(
                status=common_pb2.STATUS_ERROR, keep_alive=False,
                error=status_error(404, f"node {request.node_id!r} is {why} here: register again"))
        self.s.auth.check_node(context.invocation_metadata(), node)
        if len(request.active_jobs) > 100_000:
            raise Refused(400, "active_jobs lists more than 100000 jobs")
        if request.free_slots < 0:
            raise Refused(400, f"free_slots must be >= 0 (got {request.free_slots})")
        point = request.metrics if request.HasField("metrics") else node_pb2.MetricPoint()
        for field in ("cpu_usage", "gpu_usage", "memory_usage", "network_throughput", "power_consumption"):
            check_finite(f"metrics.{field}", getattr(point, field), minimum=0.0)
        self.s.liveness.beat(node.node_id)
        self.s.liveness.record_metrics(node.node_id, point)
        if request.HasField("current_status"):
            self.s.liveness.reported[node.node_id] = request.current_status
        await self._publish(node.node_id, request, point)
        return node_pb2.HeartbeatResponse(status=common_pb2.STATUS_SUCCESS, keep_alive=True,
                                          jobs_to_cancel=jobs_to_cancel(
                                              node.node_id, self.s.state.node_jobs.get(node.node_id, frozenset()),
                                              request.active_jobs, self.s.state.jobs))

    async def _publish(self, node_id: str, request, point) -> None:
        info = request.current_status
        gpus = [d for d in info.devices if d.device_type != common_pb2.DEVICE_CPU]
        gpu_total = sum(d.memory_total for d in gpus)
        beat = NodeHeartbeat(
            node_id=node_id, active_jobs=list(request.active_jobs)[:1000],
            cpu_percent=point.cpu_usage * 100.0, gpu_percent=point.gpu_usage * 100.0,
            ram_total_bytes=max(0, info.ram_total), ram_used_bytes=max(0, info.ram_total - info.ram_available),
            gpu_memory_total_bytes=gpu_total if gpus else None,
            gpu_memory_used_bytes=sum(max(0, d.memory_total - d.memory_available) for d in gpus) if gpus else None)
        try:
            await self.s.bus.publish_telemetry(beat)
        except Exception as exc:  # telemetry is best effort; the beat itself counted
            log.debug("heartbeat telemetry of %s not published: %s", node_id, exc)

    @unary(node_pb2.ReportProgressResponse)
    async def ReportProgress(self, request, context):
        node = self.s.node(request.node_id, context)
        job = await self.s.reported_job(request.job_id)
        status = request.status
        metrics = check_metrics("current_metrics", request.current_metrics or status.metrics)
        command = Progress(
            node_id=node.node_id,
            attempt=_attempt(request.attempt),
            epoch=_epoch(status.current_epoch, job.epochs),
            metrics=metrics,
            checkpoint_uri=bounded_text("checkpoint_uri", request.checkpoint_uri, 4096) or None,
            seconds=check_finite("epoch_seconds", request.epoch_seconds, minimum=0.0),
            samples_per_s=check_finite("samples_per_second", request.samples_per_second, minimum=0.0),
            cancelled=status.status == common_pb2.STATUS_CANCELLED,
        )
        go_on = await self._progress(job.job_id, command)
        return node_pb2.ReportProgressResponse(status=common_pb2.STATUS_SUCCESS, continue_job=go_on)

    async def _progress(self, job_id: str, command: Progress) -> bool:
        await self.s.commands.job(job_id, command)
        job = self.s.state.jobs[job_id]
        return not (job.cancel_requested or job.status == "cancelled")

    @unary(node_pb2.ReportCompletionResponse)
    async def ReportCompletion(self, request, context):
        node = self.s.node(request.node_id, context)
        job = await self.s.reported_job(request.job_id)
        if not request.HasField("result"):
            raise Refused(400, "result is missing: a ReportCompletionRequest needs the JobResult")
        r = request.result
        if r.job_id and r.job_id != job.job_id:
            raise Refused(400, f"result.job_id {r.job_id[:80]!r} does not match job_id {job.job_id!r}")
        command = Finish(
            node_id=node.node_id,
            outcome=_outcome("result.status", r.status),
            attempt=_attempt(request.attempt),
            metrics=check_metrics("result.final_metrics", r.final_metrics),
            artifact_uri=bounded_text("result.model_weights_uri", r.model_weights_uri, 4096) or None,
            sha256=bounded_text("result.model_weights_hash", r.model_weights_hash, 128) or None,
            size_bytes=_non_negative("result.model_size", r.model_size),
            compute_seconds=_compute_seconds(r),
            error=bounded_text("error.message", request.error.message, 4096),
            error_code=_error_code(request.error.code),
            retryable=request.retryable,
        )
        await self.s.commands.job(job.job_id, command)
        return node_pb2.ReportCompletionResponse(status=common_pb2.STATUS_SUCCESS)

    @unary(node_pb2.GetNodeMetricsResponse)
    async def GetNodeMetrics(self, request, context):
        check_id("node_id", request.node_id)
        if request.node_id not in self.s.state.nodes:
            raise Refused(404, f"unknown node {request.node_id!r}")
        if request.start_time < 0 or request.end_time < 0:
            raise Refused(400, "start_time and end_time must be >= 0 (Unix seconds; 0: open)")
        if request.end_time and request.end_time < request.start_time:
            raise Refused(400, f"end_time {request.end_time} is before start_time {request.start_time}")
        points = [p for p in self.s.liveness.metrics.get(request.node_id, ())
                  if p.timestamp >= request.start_time and (not request.end_time or p.timestamp <= request.end_time)]
        return node_pb2.GetNodeMetricsResponse(metrics=points)


def _compute_seconds(result) -> float:
    """``compute_seconds`` (ours, exact) where the node sent it, else the protocol's whole seconds."""
    whole = float(_non_negative("result.total_compute_time", result.total_compute_time))
    exact = check_finite("result.compute_seconds", result.compute_seconds, minimum=0.0)
    return exact or whole


def _error_code(code: int) -> int:
    if code and not 400 <= code <= 599:
        raise Refused(400, f"error.code must be an HTTP-style code 400..599, or 0 (got {code})")
    return code


def _attempt(value: int) -> int:
    if value < 0:
        raise Refused(400, f"attempt must be >= 0 (got {value}); send JobConfig.attempt, or 0")
    return value


def _epoch(value: int, total: int) -> int:
    if not 0 <= value <= max(total, 0):
        raise Refused(400, f"status.current_epoch must be 0..{total} (epochs completed; got {value})")
    return value


def _non_negative(what: str, value: int) -> int:
    if value < 0:
        raise Refused(400, f"{what} must be >= 0 (got {value})")
    return value


OUTCOMES = {
    common_pb2.STATUS_COMPLETED: "completed",
    common_pb2.STATUS_SUCCESS: "completed",
    common_pb2.STATUS_FAILED: "failed",
    common_pb2.STATUS_ERROR: "failed",
    common_pb2.STATUS_CANCELLED: "cancelled",
}


def _outcome(what: str, status: int) -> str:
    if status not in OUTCOMES:
        raise Refused(400, f"{what} must be STATUS_COMPLETED, STATUS_FAILED or STATUS_CANCELLED (got {status})")
    return OUTCOMES[status]


# --------------------------------------------------------------------------- JobStatusService


PROGRESS_STATUSES = {common_pb2.STATUS_UNKNOWN, common_pb2.STATUS_PENDING, common_pb2.STATUS_IN_PROGRESS,
                     common_pb2.STATUS_SUCCESS, common_pb2.STATUS_CANCELLED}


class JobStatusService(node_pb2_grpc.JobStatusServiceServicer):
    def __init__(self, services: Services, nodes: NodeService) -> None:
        self.s = services
        self.nodes = nodes

    @unary(node_pb2.UpdateJobStatusResponse)
    async def UpdateJobStatus(self, request, context):
        node = self.s.node(request.node_id, context)
        job = await self.s.reported_job(request.job_id)
        if request.status not in PROGRESS_STATUSES:
            raise Refused(400, f"status {request.status} is not a progress status: report the end with ReportJobResult")
        check_finite("progress", request.progress, minimum=0.0)
        bounded_text("log_message", request.log_message)
        command = Progress(node_id=node.node_id, epoch=_epoch(request.current_epoch, job.epochs),
                           metrics=check_metrics("metrics", request.metrics),
                           cancelled=request.status == common_pb2.STATUS_CANCELLED)
        go_on = await self.nodes._progress(job.job_id, command)
        return node_pb2.UpdateJobStatusResponse(status=common_pb2.STATUS_SUCCESS, should_continue=go_on)

    @unary(node_pb2.ReportJobResultResponse)
    async def ReportJobResult(self, request, context):
        node = self.s.node(request.node_id, context)
        job = await self.s.reported_job(request.job_id)
        command = Finish(
            node_id=node.node_id,
            outcome=_outcome("final_status", request.final_status),
            metrics=check_metrics("final_metrics", request.final_metrics),
            artifact_uri=bounded_text("model_weights_uri", request.model_weights_uri, 4096) or None,
            sha256=bounded_text("model_weights_hash", request.model_weights_hash, 128) or None,
            size_bytes=_non_negative("model_size", request.model_size),
            compute_seconds=_non_negative("total_compute_time", request.total_compute_time) / 1000.0,
            error=bounded_text("error_message", request.error_message, 4096),
        )
        await self.s.commands.job(job.job_id, command)
        return node_pb2.ReportJobResultResponse(status=common_pb2.STATUS_SUCCESS)
