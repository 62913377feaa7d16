"""The node's NodeService (AssignJob, GetNodeMetrics) on 50054. Deployments (50052)
are ``node.serving``'s, the terminal (50053) is ``node.terminal``'s.

AssignJob answers as the seed's node did: ``STATUS_FAILED`` with Error 400 for an
invalid job (the message names the field), 429 when no slot is free, 409 when another
attempt of the job runs here; ``accepted = true`` otherwise. The call must carry the
session token central gave this node (``authorization_token``): a node takes work
only from the central it registered with; anything else is UNAUTHENTICATED (401).
"""

from __future__ import annotations

import datetime
import hmac
import logging
from collections.abc import Callable

import grpc

from events.jobspec import InvalidJobSpec, check_job
from node.executor import Assignment, Busy, Conflict, Executor
from node.metrics import MetricsHistory
from protos import common_pb2, job_pb2, node_pb2, node_pb2_grpc
from protos.convert import bearer_token, status_error

__all__ = ["NodeServicer", "to_assignment", "validate_job"]

log = logging.getLogger(__name__)


def validate_job(job: job_pb2.JobConfig) -> str | None:
    """The first thing wrong with ``job``, as a message naming the field; None if fine."""
    if not job.job_id.strip():
        return "job.job_id must not be empty"
    who = f"job {job.job_id!r}"
    if job.job_type == job_pb2.JOB_TYPE_UNKNOWN:
        return f"{who}: job_type must be set (this node runs JOB_TYPE_TRAINING)"
    if job.job_type != job_pb2.JOB_TYPE_TRAINING:
        name = job_pb2.JobType.Name(job.job_type) if job.job_type in job_pb2.JobType.values() else str(job.job_type)
        return f"{who}: job_type {name} is not supported by this node; it runs JOB_TYPE_TRAINING"
    try:  # the rules central checks at submit: one module for both (events.jobspec)
        check_job(dataset_uri=job.dataset_uri, model_definition=job.model_definition,
                  hyperparameters=job.hyperparameters, epochs=job.epochs, batch_size=job.batch_size)
    except InvalidJobSpec as exc:
        return f"{who}: {exc}"
    if job.attempt < 0 or job.resume_from_epoch < 0:
        return f"{who}: attempt and resume_from_epoch must be >= 0 (got {job.attempt}, {job.resume_from_epoch})"
    if job.resume_from_epoch and not job.resume_checkpoint_uri:
        return f"{who}: resume_from_epoch {job.resume_from_epoch} needs a resume_checkpoint_uri"
    return None


def to_assignment(job: job_pb2.JobConfig) -> Assignment:
    return Assignment(
        job_id=job.job_id, attempt=job.attempt or 1, model_definition=job.model_definition,
        hyperparameters=dict(job.hyperparameters), dataset_uri=job.dataset_uri, epochs=job.epochs,
        batch_size=job.batch_size, resume_checkpoint_uri=job.resume_checkpoint_uri,
        resume_from_epoch=job.resume_from_epoch,
    )


def _refused(job_id: str, code: int, message: str) -> node_pb2.AssignJobResponse:
    return node_pb2.AssignJobResponse(
        status=common_pb2.STATUS_FAILED, job_id=job_id, accepted=False, error=status_error(code, message)
    )


class NodeServicer(node_pb2_grpc.NodeServiceServicer):
    """The node's half of NodeService; central's half (RegisterNode, ...) is UNIMPLEMENTED here.

    ``node_id()`` and ``session_token()`` give the current registration (they change
    when the node registers again).
    """

    def __init__(
        self,
        *,
        executor: Executor,
        metrics: MetricsHistory,
        node_id: Callable[[], str],
        session_token: Callable[[], str],
    ) -> None:
        self.executor = executor
        self.metrics = metrics
        self.node_id = node_id
        self.session_token = session_token

    async def AssignJob(self, request: node_pb2.AssignJobRequest, context: grpc.aio.ServicerContext):
        job = request.job
        if not self._from_central(request.authorization_token):
            await context.abort(
                grpc.StatusCode.UNAUTHENTICATED,
                "401: authorization_token is not the session token of this node's registration; "
                "a node takes work only from the central it registered with",
            )
        me = self.node_id()
        if request.node_id != me:
            return _refused(job.job_id, 400, f"node_id {request.node_id!r} is not this node ({me!r})")
        if not request.HasField("job"):
            return _refused("", 400, "job is missing")
        problem = validate_job(job)
        if problem:
            log.info("refused job %r: %s", job.job_id, problem)
            return _refused(job.job_id, 400, problem)
        try:
            started = self.executor.submit(to_assignment(job))
        except Busy as exc:
            return _refused(job.job_id, 429, str(exc))
        except Conflict as exc:
            return _refused(job.job_id, 409, str(exc))
        if started:
            log.info("accepted job %s (attempt %d)", job.job_id, job.attempt or 1)
        now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        return node_pb2.AssignJobResponse(
            status=common_pb2.STATUS_SUCCESS, job_id=job.job_id, accepted=True, estimated_start_time=now
        )

    def _from_central(self, presented: str | None) -> bool:
        """True when ``presented`` is this node's session token (constant-time)."""
        token = self.session_token()
        return bool(token) and presented is not None and hmac.compare_digest(presented.encode(), token.encode())

    async def GetNodeMetrics(self, request: node_pb2.GetNodeMetricsRequest, context: grpc.aio.ServicerContext):
        """Like AssignJob, only for the central this node registered with: its session
        token as ``authorization: Bearer`` metadata."""
        if not self._from_central(bearer_token(context.invocation_metadata())):
            await context.abort(
                grpc.StatusCode.UNAUTHENTICATED,
                "401: send this node's session token as 'authorization: Bearer <token>'; "
                "a node answers only the central it registered with",
            )
        me = self.node_id()
        if request.node_id and request.node_id != me:
            return node_pb2.GetNodeMetricsResponse(
                error=status_error(404, f"node_id {request.node_id!r} is not this node ({me!r})")
            )
        if request.start_time < 0 or request.end_time < 0:
            return node_pb2.GetNodeMetricsResponse(error=status_error(400, "start_time and end_time must be >= 0"))
        points = [
            node_pb2.MetricPoint(
                timestamp=int(p.timestamp), cpu_usage=p.cpu, gpu_usage=p.gpu, memory_usage=p.memory,
            )
            for p in self.metrics.between(request.start_time, request.end_time)
        ]
        return node_pb2.GetNodeMetricsResponse(metrics=points)
