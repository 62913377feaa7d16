"""JobService on central: submit (idempotent on ``job_id``), status, cancel, delete,
list, and the live update stream; reads come from central's state, never DuckDB."""

from __future__ import annotations

import uuid

from central.adapters.grpc_base import Services, abort_with, bounded_text, paging, unary
from central.adapters.specs import ENUM_VALUES, STATUS_OF_STATE, check_id, spec_from_config
from central.lifecycle.deciders import Cancel, Submit
from central.lifecycle.errors import Refused
from protos import common_pb2, job_pb2, job_pb2_grpc

__all__ = ["JobService"]

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
        spec = spec_from_config(config, largest_memory=self.s.state.largest_online_memory)
        await self.s.commands.job(job_id, Submit(job_id, spec))
        if self.s.scheduler is not None:
            self.s.scheduler.passed_checks(job_id)  # the scheduler need not check its spec again
        return job_pb2.SubmitJobResponse(job_id=job_id, status=common_pb2.STATUS_SUCCESS)

    @unary(job_pb2.GetJobStatusResponse)
    async def GetJobStatus(self, request, context):
        self.s.auth.check_client(context.invocation_metadata())
        return job_pb2.GetJobStatusResponse(status=self.s.job_status(self.s.job(request.job_id)))

    @unary(job_pb2.CancelJobResponse)
    async def CancelJob(self, request, context):
        self.s.auth.check_client(context.invocation_metadata())
        self.s.job(request.job_id)
        await self.s.commands.job(request.job_id, Cancel(bounded_text("reason", request.reason, 1024)))
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
        size, offset = paging(request.page_size, request.page_token)
        if request.filter_type not in ENUM_VALUES["JobType"]:
            raise Refused(400, f"filter_type {request.filter_type} is unknown; use a JobType")
        if request.filter_status not in ENUM_VALUES["StatusCode"]:
            raise Refused(400, f"filter_status {request.filter_status} is unknown; use a StatusCode")
        bounded_text("user_id", request.user_id, 256)
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
            await abort_with(context, job_pb2.JobUpdateStream, exc.code, exc.message)
            return
        queue = self.s.state.watch(job.job_id)
        try:
            yield self._update(job, "status")
            while not job.done:
                event, job = await queue.get()
                yield self._update(job, type(event).__name__)
        finally:
            self.s.state.unwatch(job.job_id, queue)

    def _update(self, job, message: str) -> job_pb2.JobUpdateStream:
        return _update(self.s.job_status(job), job, message)


def _listed(job, request) -> bool:
    if request.user_id and job.owner != request.user_id:
        return False
    if request.filter_type not in (0, job_pb2.JOB_TYPE_TRAINING):
        return False
    if request.filter_status:
        return STATUS_OF_STATE.get(job.status) == request.filter_status
    return True


def _update(status: job_pb2.JobStatus, job, message: str) -> job_pb2.JobUpdateStream:
    return job_pb2.JobUpdateStream(job_id=job.job_id, status=status, live_metrics=status.metrics, log_message=message)
