"""Central's gRPC servicers: JobService, NodeService (central half), NodeDiscoveryService,
JobStatusService. Each state-changing call validates, authorizes, decides and appends;
reads come from central's state (never from DuckDB).

Errors: a bad request answers with the protocol's ``Error`` (400/401/404/409/429/503)
AND the matching gRPC status (INVALID_ARGUMENT, UNAUTHENTICATED, NOT_FOUND,
FAILED_PRECONDITION, RESOURCE_EXHAUSTED, UNAVAILABLE). The response message with the
Error filled in travels serialized in the trailing metadata ``cyxwiz-error-bin``.
Two answers are not errors on purpose:
- Heartbeat from a node central does not know (or has declared lost): gRPC OK with
  ``keep_alive = false``, ``status = STATUS_ERROR`` and Error 404: the node registers again.
- A report for a job that is already cancelled: gRPC OK, ``continue_job`` /
  ``should_continue`` false.

For the node (how reports become events):
- ReportProgress / UpdateJobStatus: the first report of an attempt appends JobStarted;
  a report whose ``status.current_epoch`` (epochs completed) is past the last one appends
  EpochCompleted (metrics from ``current_metrics``; ``checkpoint_uri``, ``attempt``,
  ``epoch_seconds``, ``samples_per_second``). Repeating a report is harmless. The answer
  says ``continue_job = false`` once the job is to be cancelled: stop at the next step.
- Confirming a cancel: ReportCompletion with ``result.status = STATUS_CANCELLED``, or a
  ReportProgress whose ``status.status = STATUS_CANCELLED`` (UpdateJobStatus: ``status =
  STATUS_CANCELLED``); central then appends JobCancelled. Central also lists the job in
  HeartbeatResponse.jobs_to_cancel until it is confirmed.
- ReportCompletion / ReportJobResult: STATUS_COMPLETED appends JobCompleted;
  STATUS_FAILED appends JobFailed with ``error`` (102) — or, when ``retryable`` (103) and
  attempts remain, JobRequeued so the job runs again elsewhere. A retried completion
  report of the same attempt answers success again.
- A report from a node that does not hold the job (another node, or an older attempt)
  is refused with 409 / FAILED_PRECONDITION: stop that run. Unknown job: 404.
- HeartbeatResponse.jobs_to_cancel also names jobs in ``active_jobs`` that central has
  ended or moved to another node.
"""

from __future__ import annotations

import functools
import logging
import uuid

import grpc

from bus import BusError
from central.lifecycle.deciders import Cancel, Finish, Progress, Refused, Submit, jobs_to_cancel
from central.lifecycle.nodes import NodeState, Register, registration_id
from central.lifecycle.policy import fits
from central.adapters.specs import (
    ENUM_VALUES,
    DEVICE_NAMES,
    check_finite,
    check_id,
    check_metrics,
    job_status,
    node_info,
    registration_from_info,
    spec_from_config,
)
from central.adapters.auth import token_sha256
from events import CyxwizError, NodeHeartbeat, Requirements
from protos import common_pb2, job_pb2, job_pb2_grpc, node_pb2, node_pb2_grpc
from protos.convert import bearer_token, grpc_status, status_error

log = logging.getLogger("cyxwiz.central.grpc")

ERROR_TRAILER = "cyxwiz-error-bin"
MAX_PAGE = 1000
DEFAULT_PAGE = 100
MAX_TEXT = 65536


def _error_response(response_cls, code: int, message: str):
    response = response_cls()
    fields = response_cls.DESCRIPTOR.fields_by_name
    if "error" in fields:
        response.error.CopyFrom(status_error(code, message))
    if "status" in fields and fields["status"].enum_type is not None:
        response.status = common_pb2.STATUS_ERROR
    return response


def unary(response_cls):
    """Translate our errors into the Error answer plus the gRPC status of their code
    (``events.errors.CODES``); the bus's say the event store is away, retry."""

    def wrap(fn):
        @functools.wraps(fn)
        async def handler(self, request, context):
            try:
                return await fn(self, request, context)
            except Refused as exc:
                await _abort(context, response_cls, exc.code, exc.message,
                             grpc.StatusCode.ALREADY_EXISTS if exc.reason == "exists" else None)
            except BusError as exc:
                await _abort(context, response_cls, 409 if exc.code == 409 else 503,
                             f"event store unavailable, retry: {exc}" if exc.code != 409 else str(exc))
            except CyxwizError as exc:
                await _abort(context, response_cls, exc.code, str(exc))

        return handler

    return wrap


async def _abort(context, response_cls, code: int, message: str, status: grpc.StatusCode | None = None):
    response = _error_response(response_cls, code, message)
    await context.abort(status or grpc_status(code), message,
                        trailing_metadata=((ERROR_TRAILER, response.SerializeToString()),))


def _page(page_size: int, page_token: str) -> tuple[int, int]:
    if not 0 <= page_size <= MAX_PAGE:
        raise Refused(400, f"page_size must be 0..{MAX_PAGE} (got {page_size}); 0 means {DEFAULT_PAGE}")
    if page_token and not (page_token.isascii() and page_token.isdigit() and len(page_token) < 10):
        raise Refused(400, f"page_token {page_token[:40]!r} is not one this server gave out; start with ''")
    return page_size or DEFAULT_PAGE, int(page_token or 0)


def _text(what: str, value: str, limit: int = MAX_TEXT) -> str:
    if len(value) > limit:
        raise Refused(400, f"{what} is too long ({len(value)} characters, at most {limit})")
    return value


class Services:
    """What the servicers share: central's state, commands, auth, liveness, dispatcher."""

    def __init__(self, state, bus, commands, auth, liveness, dispatcher, scheduler=None) -> None:
        self.scheduler = scheduler
        self.state = state
        self.bus = bus
        self.commands = commands
        self.auth = auth
        self.liveness = liveness
        self.dispatcher = dispatcher

    def job(self, job_id: str):
        check_id("job_id", job_id)
        job = self.state.jobs.get(job_id)
        if job is None:
            raise Refused(404, f"unknown job {job_id!r}")
        return job

    def node(self, node_id: str, context) -> NodeState:
        """The calling node, authenticated by its session token."""
        check_id("node_id", node_id)
        node = self.state.nodes.get(node_id)
        if node is None:
            raise Refused(404, f"unknown node {node_id!r}: register first")
        self.auth.check_node(context.invocation_metadata(), node)
        return node

    def job_status(self, job) -> job_pb2.JobStatus:
        return job_status(job, self.scheduler.waiting.get(job.job_id, "") if self.scheduler else "")

    def node_info(self, node: NodeState) -> node_pb2.NodeInfo:
        return node_info(node, last_seen_unix=self.liveness.last_seen_unix(node.node_id),
                         completed=self.state.completed_by_node.get(node.node_id, 0),
                         running=self.state.running_on(node.node_id), reputation=self.state.reputation(node.node_id),
                         reported=self.liveness.reported.get(node.node_id))


# --------------------------------------------------------------------------- JobService


class JobService(job_pb2_grpc.JobServiceServicer):
    def __init__(self, services: Services) -> None:
        self.s = services

    @unary(job_pb2.SubmitJobResponse)
    async def SubmitJob(self, request, context):
        self.s.auth.check_client(context.invocation_metadata())
        if not request.HasField("config"):
            raise Refused(400, "config is missing: a SubmitJobRequest needs a JobConfig")
        if request.initial_data:
            raise Refused(400, "initial_data is not supported: upload the data set and name it in config.dataset_uri")
        config = request.config
        job_id = check_id("config.job_id", config.job_id) if config.job_id else uuid.uuid4().hex
        spec = spec_from_config(config, nodes=self.s.state.online_nodes())
        await self.s.commands.job(job_id, Submit(job_id, spec))
        return job_pb2.SubmitJobResponse(job_id=job_id, status=common_pb2.STATUS_SUCCESS)

    @unary(job_pb2.GetJobStatusResponse)
    async def GetJobStatus(self, request, context):
        self.s.auth.check_client(context.invocation_metadata())
        return job_pb2.GetJobStatusResponse(status=self.s.job_status(self.s.job(request.job_id)))

    @unary(job_pb2.CancelJobResponse)
    async def CancelJob(self, request, context):
        self.s.auth.check_client(context.invocation_metadata())
        self.s.job(request.job_id)
        await self.s.commands.job(request.job_id, Cancel(_text("reason", request.reason, 1024)))
        return job_pb2.CancelJobResponse(status=common_pb2.STATUS_SUCCESS)

    @unary(job_pb2.DeleteJobResponse)
    async def DeleteJob(self, request, context):
        """Cancels a job that has not ended; an ended job's history is kept (events are never deleted)."""
        self.s.auth.check_client(context.invocation_metadata())
        job = self.s.job(request.job_id)
        if not job.done:
            await self.s.commands.job(job.job_id, Cancel("deleted"))
        return job_pb2.DeleteJobResponse(status=common_pb2.STATUS_SUCCESS)

    @unary(job_pb2.ListJobsResponse)
    async def ListJobs(self, request, context):
        self.s.auth.check_client(context.invocation_metadata())
        size, offset = _page(request.page_size, request.page_token)
        if request.filter_type not in ENUM_VALUES["JobType"]:
            raise Refused(400, f"filter_type {request.filter_type} is unknown; use a JobType")
        if request.filter_status not in ENUM_VALUES["StatusCode"]:
            raise Refused(400, f"filter_status {request.filter_status} is unknown; use a StatusCode")
        _text("user_id", request.user_id, 256)
        jobs = [j for j in reversed(self.s.state.jobs.values()) if _listed(j, request)]
        page = jobs[offset:offset + size]
        more = offset + size < len(jobs)
        return job_pb2.ListJobsResponse(jobs=[self.s.job_status(j) for j in page], total_count=len(jobs),
                                        next_page_token=str(offset + size) if more else "")

    async def StreamJobUpdates(self, request, context):
        """The job's status now, then on every change, until it ends; live from the bus."""
        try:
            self.s.auth.check_client(context.invocation_metadata())
            job = self.s.job(request.job_id)
        except Refused as exc:
            await _abort(context, job_pb2.JobUpdateStream, exc.code, exc.message)
            return
        queue = self.s.state.watch(job.job_id)
        try:
            yield _update(job, "status")
            while not job.done:
                event, job = await queue.get()
                yield _update(job, type(event).__name__)
        finally:
            self.s.state.unwatch(job.job_id, queue)


def _listed(job, request) -> bool:
    if request.user_id and job.owner != request.user_id:
        return False
    if request.filter_type not in (0, job_pb2.JOB_TYPE_TRAINING):
        return False
    if request.filter_status:
        from central.adapters.specs import STATUS_OF_STATE

        return STATUS_OF_STATE.get(job.status) == request.filter_status
    return True


def _update(job, message: str) -> job_pb2.JobUpdateStream:
    status = job_status(job)
    return job_pb2.JobUpdateStream(job_id=job.job_id, status=status, live_metrics=status.metrics, log_message=message)


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
        job = self.s.job(request.job_id)
        status = request.status
        metrics = check_metrics("current_metrics", request.current_metrics or status.metrics)
        command = Progress(
            node_id=node.node_id,
            attempt=_attempt(request.attempt),
            epoch=_epoch(status.current_epoch, job.epochs),
            metrics=metrics,
            checkpoint_uri=_text("checkpoint_uri", request.checkpoint_uri, 4096) or None,
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
        job = self.s.job(request.job_id)
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
            artifact_uri=_text("result.model_weights_uri", r.model_weights_uri, 4096) or None,
            sha256=_text("result.model_weights_hash", r.model_weights_hash, 128) or None,
            size_bytes=_non_negative("result.model_size", r.model_size),
            compute_seconds=_compute_seconds(r),
            error=_text("error.message", request.error.message, 4096),
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


# --------------------------------------------------------------------------- discovery


class NodeDiscoveryService(node_pb2_grpc.NodeDiscoveryServiceServicer):
    def __init__(self, services: Services) -> None:
        self.s = services

    @unary(node_pb2.FindNodesResponse)
    async def FindNodes(self, request, context):
        self.s.auth.check_client(context.invocation_metadata())
        if request.required_device not in ENUM_VALUES["DeviceType"]:
            raise Refused(400, f"required_device {request.required_device} is unknown; use a DeviceType")
        if request.min_memory < 0:
            raise Refused(400, f"min_memory must be >= 0 bytes (got {request.min_memory})")
        min_reputation = check_finite("min_reputation", request.min_reputation)
        region = _text("preferred_region", request.preferred_region, 256)
        if not 0 <= request.max_results <= MAX_PAGE:
            raise Refused(400, f"max_results must be 0..{MAX_PAGE} (got {request.max_results}); 0 means {DEFAULT_PAGE}")
        need = Requirements(device=DEVICE_NAMES.get(request.required_device), min_memory_bytes=request.min_memory)
        found = [n for n in self.s.state.online_nodes() if fits(need, n.devices, n.ram_bytes)
                 and self.s.state.reputation(n.node_id) >= min_reputation]
        found.sort(key=lambda n: (bool(region) and n.region != region,  # the preferred region first
                                  self.s.state.running_on(n.node_id) / n.slots, n.node_id))
        limit = request.max_results or DEFAULT_PAGE
        return node_pb2.FindNodesResponse(nodes=[self.s.node_info(n) for n in found[:limit]])

    @unary(node_pb2.ListNodesResponse)
    async def ListNodes(self, request, context):
        self.s.auth.check_client(context.invocation_metadata())
        size, offset = _page(request.page_size, request.page_token)
        nodes = [n for n in self.s.state.nodes.values() if n.status == "online" or not request.online_only]
        page = nodes[offset:offset + size]
        more = offset + size < len(nodes)
        return node_pb2.ListNodesResponse(nodes=[self.s.node_info(n) for n in page], total_count=len(nodes),
                                          next_page_token=str(offset + size) if more else "")

    @unary(node_pb2.GetNodeInfoResponse)
    async def GetNodeInfo(self, request, context):
        self.s.auth.check_client(context.invocation_metadata())
        check_id("node_id", request.node_id)
        node = self.s.state.nodes.get(request.node_id)
        if node is None:
            raise Refused(404, f"unknown node {request.node_id!r}")
        return node_pb2.GetNodeInfoResponse(info=self.s.node_info(node))


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
        job = self.s.job(request.job_id)
        if request.status not in PROGRESS_STATUSES:
            raise Refused(400, f"status {request.status} is not a progress status: report the end with ReportJobResult")
        check_finite("progress", request.progress, minimum=0.0)
        _text("log_message", request.log_message)
        command = Progress(node_id=node.node_id, epoch=_epoch(request.current_epoch, job.epochs),
                           metrics=check_metrics("metrics", request.metrics),
                           cancelled=request.status == common_pb2.STATUS_CANCELLED)
        go_on = await self.nodes._progress(job.job_id, command)
        return node_pb2.UpdateJobStatusResponse(status=common_pb2.STATUS_SUCCESS, should_continue=go_on)

    @unary(node_pb2.ReportJobResultResponse)
    async def ReportJobResult(self, request, context):
        node = self.s.node(request.node_id, context)
        job = self.s.job(request.job_id)
        command = Finish(
            node_id=node.node_id,
            outcome=_outcome("final_status", request.final_status),
            metrics=check_metrics("final_metrics", request.final_metrics),
            artifact_uri=_text("model_weights_uri", request.model_weights_uri, 4096) or None,
            sha256=_text("model_weights_hash", request.model_weights_hash, 128) or None,
            size_bytes=_non_negative("model_size", request.model_size),
            compute_seconds=_non_negative("total_compute_time", request.total_compute_time) / 1000.0,
            error=_text("error_message", request.error_message, 4096),
        )
        await self.s.commands.job(job.job_id, command)
        return node_pb2.ReportJobResultResponse(status=common_pb2.STATUS_SUCCESS)


def add_services(server: grpc.aio.Server, services: Services) -> None:
    nodes = NodeService(services)
    job_pb2_grpc.add_JobServiceServicer_to_server(JobService(services), server)
    node_pb2_grpc.add_NodeServiceServicer_to_server(nodes, server)
    node_pb2_grpc.add_NodeDiscoveryServiceServicer_to_server(NodeDiscoveryService(services), server)
    node_pb2_grpc.add_JobStatusServiceServicer_to_server(JobStatusService(services, nodes), server)
