"""Central's DeploymentService (50051): the same calls as a node's, across the cluster
(its HTTP gateway on the REST port is ``central.adapters.gateway``).

Status on the wire: requested -> PENDING, placed -> LOADING, running -> RUNNING,
stopped -> STOPPED, failed and lost -> FAILED (``status_message`` says which).
"""

from __future__ import annotations

import logging
import uuid

import grpc

from central.adapters.grpc_base import unary
from central.adapters.specs import DEVICE_NAMES, ENUM_VALUES, check_id
from central.control.deployments import DeploymentControl, DeploymentRequest
from central.lifecycle.errors import Refused
from central.lifecycle.deployments import DeploymentState
from events import Requirements
from protos import common_pb2, deployment_pb2 as dp, deployment_pb2_grpc as dpg, node_pb2

__all__ = ["CentralDeploymentService", "TO_PROTO", "V1_STATUS", "add_deployment_service", "page", "requirements",
           "to_proto"]

log = logging.getLogger("cyxwiz.central.deployments")

TO_PROTO = {
    "requested": dp.DEPLOYMENT_STATUS_PENDING, "placed": dp.DEPLOYMENT_STATUS_LOADING,
    "running": dp.DEPLOYMENT_STATUS_RUNNING, "stopped": dp.DEPLOYMENT_STATUS_STOPPED,
    "failed": dp.DEPLOYMENT_STATUS_FAILED, "lost": dp.DEPLOYMENT_STATUS_FAILED,
}
V1_STATUS = {"requested": "pending", "placed": "loading", "running": "running", "stopped": "stopped",
             "failed": "failed", "lost": "failed"}


def page(page_size: int, page_token: str) -> tuple[int, int]:
    """Page size and offset of a list call (the tokens are offsets this server gave out)."""
    if not 0 <= page_size <= 1000:
        raise Refused(400, f"page_size must be 0..1000 (got {page_size}); 0 means 100")
    if page_token and not (page_token.isascii() and page_token.isdigit() and len(page_token) < 10):
        raise Refused(400, f"page_token {page_token[:40]!r} is not one this server gave out; start with ''")
    return page_size or 100, int(page_token or 0)


def to_proto(d: DeploymentState) -> dp.Deployment:
    message = d.error or {"placed": "loading on the node", "requested": "waiting for a node"}.get(d.status, d.status)
    if d.status == "lost":
        message = f"lost: {d.error}"
    answer = dp.Deployment(
        deployment_id=d.deployment_id, status=TO_PROTO[d.status], status_message=message,
        assigned_node=node_pb2.NodeInfo(node_id=d.node_id), created_at=int(d.requested_at),
        started_at=int(d.running_at), stopped_at=int(d.stopped_at), endpoint_url=d.http_endpoint,
        config=dp.DeploymentConfig(
            deployment_id=d.deployment_id, user_id=d.user_id, node_id=d.node_id, runtime_params=d.runtime_params,
            type=dp.DEPLOYMENT_TYPE_NETWORK,
            model=dp.ModelInfo(model_id=d.model_id, name=d.name, source_url=d.model_uri, metadata={"sha256": d.sha256,
                               "grpc_endpoint": d.grpc_endpoint}),
        ),
    )
    if d.status in ("failed", "lost"):
        answer.error.code, answer.error.message = 409, message
    return answer


def requirements(config: dp.DeploymentConfig) -> Requirements:
    """The device kind and memory a create asks for: ``config.requirements``, else
    ``config.model.requirements``; ``min_vram`` counts for an accelerator, ``min_ram`` for
    the CPU (the larger is taken when no device is named). Raises ``Refused(400)``."""
    where = "config.requirements"
    asked = config.requirements
    if not config.HasField("requirements") and config.model.HasField("requirements"):
        where, asked = "config.model.requirements", config.model.requirements
    if asked.required_device not in ENUM_VALUES["DeviceType"]:
        raise Refused(400, f"{where}.required_device {asked.required_device} is unknown; use a DeviceType")
    for name in ("min_vram", "min_ram"):
        if getattr(asked, name) < 0:
            raise Refused(400, f"{where}.{name} must be >= 0 bytes (got {getattr(asked, name)})")
    device = DEVICE_NAMES.get(asked.required_device)
    if device in (None, "cpu"):
        memory = asked.min_ram if device == "cpu" else max(asked.min_ram, asked.min_vram)
    else:
        memory = asked.min_vram
    return Requirements(device=device, min_memory_bytes=memory)


class CentralDeploymentService(dpg.DeploymentServiceServicer):
    def __init__(self, control: DeploymentControl, auth) -> None:
        self.control = control
        self.auth = auth

    @unary(dp.CreateDeploymentResponse)
    async def CreateDeployment(self, request, context):
        self.auth.check_client(context.invocation_metadata())
        c = request.config
        model_id = c.model.model_id or c.model.source_url.removeprefix("nats://cyxwiz-models/")
        if not model_id:
            raise Refused(400, "config.model.model_id is required: the id of a completed job")
        deployment_id = check_id("config.deployment_id", c.deployment_id or f"dep-{uuid.uuid4().hex[:12]}")
        check_id("config.model.model_id", model_id)
        params = dict(c.runtime_params)
        if c.enable_terminal:
            params["enable_terminal"] = "true"
        d = await self.control.create(DeploymentRequest(
            deployment_id=deployment_id, model_id=model_id, name=c.model.name, node=c.node_id or None,
            runtime_params=params, user_id=c.user_id, requirements=requirements(c)))
        return dp.CreateDeploymentResponse(status=common_pb2.STATUS_SUCCESS, deployment=to_proto(d))

    @unary(dp.GetDeploymentResponse)
    async def GetDeployment(self, request, context):
        self.auth.check_client(context.invocation_metadata())
        return dp.GetDeploymentResponse(deployment=to_proto(self.control.get(request.deployment_id)))

    @unary(dp.ListDeploymentsResponse)
    async def ListDeployments(self, request, context):
        self.auth.check_client(context.invocation_metadata())
        size, offset = page(request.page_size, request.page_token)
        found = [d for d in self.control.visible()
                 if (not request.status_filter or TO_PROTO[d.status] == request.status_filter)
                 and (not request.user_id or d.user_id == request.user_id)]
        chunk = found[offset: offset + size]
        return dp.ListDeploymentsResponse(
            deployments=[to_proto(d) for d in chunk], total_count=len(found),
            next_page_token=str(offset + size) if offset + size < len(found) else "")

    @unary(dp.StopDeploymentResponse)
    async def StopDeployment(self, request, context):
        self.auth.check_client(context.invocation_metadata())
        d = await self.control.stop(request.deployment_id)
        return dp.StopDeploymentResponse(status=common_pb2.STATUS_SUCCESS, deployment=to_proto(d))

    @unary(dp.DeleteDeploymentResponse)
    async def DeleteDeployment(self, request, context):
        self.auth.check_client(context.invocation_metadata())
        await self.control.delete(request.deployment_id)
        return dp.DeleteDeploymentResponse(status=common_pb2.STATUS_SUCCESS)

    @unary(dp.GetDeploymentMetricsResponse)
    async def GetDeploymentMetrics(self, request, context):
        self.auth.check_client(context.invocation_metadata())
        d = self.control.get(request.deployment_id)
        if d.status != "running":
            return dp.GetDeploymentMetricsResponse()
        node = self.control.node_of(d)
        answer = await self.control.on_node(node, "GetDeploymentMetrics", request)
        return answer if answer is not None else dp.GetDeploymentMetricsResponse()


def add_deployment_service(server: grpc.aio.Server, control: DeploymentControl, auth) -> None:
    dpg.add_DeploymentServiceServicer_to_server(CentralDeploymentService(control, auth), server)
