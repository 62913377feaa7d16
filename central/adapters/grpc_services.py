"""Central's gRPC services, put on a server by ``add_services``: JobService
(``job_service``), NodeService's central half and JobStatusService (``node_service``),
NodeDiscoveryService (``discovery``); what they share is in ``grpc_base``. Each state-changing call validates, authorizes, decides and appends;
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

import grpc

from central.adapters.discovery import NodeDiscoveryService
from central.adapters.grpc_base import Services
from central.adapters.job_service import JobService
from central.adapters.node_service import JobStatusService, NodeService
from protos import job_pb2_grpc, node_pb2_grpc

__all__ = ["add_services"]


def add_services(server: grpc.aio.Server, services: Services) -> None:
    nodes = NodeService(services)
    job_pb2_grpc.add_JobServiceServicer_to_server(JobService(services), server)
    node_pb2_grpc.add_NodeServiceServicer_to_server(nodes, server)
    node_pb2_grpc.add_NodeDiscoveryServiceServicer_to_server(NodeDiscoveryService(services), server)
    node_pb2_grpc.add_JobStatusServiceServicer_to_server(JobStatusService(services, nodes), server)
