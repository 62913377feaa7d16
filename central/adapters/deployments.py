"""Central's DeploymentService (50051) and its HTTP gateway (REST port): the same calls
as a node's, across the cluster, and inference forwarded to the node that holds the
deployment, so a client of the original API works at ``http://central:8080/v1/predict``.

Status on the wire: requested -> PENDING, placed -> LOADING, running -> RUNNING,
stopped -> STOPPED, failed and lost -> FAILED (``status_message`` says which).
Forwarded calls carry the node's session token; the client's API key is checked here.
"""

from __future__ import annotations

import hmac
import logging
import uuid

import aiohttp
import grpc
import msgspec
from aiohttp import web

from central.adapters.grpc_base import unary
from central.adapters.specs import DEVICE_NAMES, ENUM_VALUES, check_id
from central.control.deployments import DeploymentControl, DeploymentRequest
from central.lifecycle.errors import Refused
from central.lifecycle.deployments import DeploymentState
from events import Requirements
from protos import common_pb2, deployment_pb2 as dp, deployment_pb2_grpc as dpg, node_pb2

__all__ = ["CentralDeploymentService", "add_deployment_routes", "add_deployment_service", "requirements"]

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


# --- the HTTP gateway ---------------------------------------------------------------------------


def _v1_error(code: int, message: str) -> web.Response:
    kind = {400: "invalid_request", 401: "unauthenticated", 404: "not_found", 409: "conflict"}.get(code, "unavailable")
    return web.json_response({"error": {"message": message, "type": kind, "code": code}}, status=code)


def _v2_error(code: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=code)


def summary(d: DeploymentState) -> dict:
    return {"deployment_id": d.deployment_id, "model_id": d.model_id, "type": "network", "status": V1_STATUS[d.status],
            "name": d.name, "node_id": d.node_id, "message": d.error, "endpoint": d.http_endpoint}


class Gateway:
    def __init__(self, control: DeploymentControl, api_key: str | None) -> None:
        self.control = control
        self.api_key = api_key
        self._session: aiohttp.ClientSession | None = None

    def _authorized(self, request: web.Request) -> bool:
        if not self.api_key:
            return True
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), self.api_key.encode())

    async def list(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return _v1_error(401, "missing or wrong API key: send 'Authorization: Bearer <key>'")
        found = [summary(d) for d in self.control.visible()]
        return web.json_response({"deployments": found, "count": len(found)})

    async def get(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return _v1_error(401, "missing or wrong API key: send 'Authorization: Bearer <key>'")
        try:
            return web.json_response(summary(self.control.get(request.match_info["id"])))
        except Refused as exc:
            return _v1_error(exc.code, exc.message)

    async def predict(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return _v1_error(401, "missing or wrong API key: send 'Authorization: Bearer <key>'")
        body = await request.read()
        try:
            doc = msgspec.json.decode(body)
        except msgspec.DecodeError as exc:
            return _v1_error(400, f"body is not valid JSON: {exc}")
        deployment_id = doc.get("deployment_id") if isinstance(doc, dict) else None
        if not isinstance(deployment_id, str) or not deployment_id:
            return _v1_error(400, "deployment_id is required (a string; GET /v1/deployments lists them)")
        return await self._forward(request, deployment_id, "/v1/predict", body, _v1_error)

    async def v2_model(self, request: web.Request) -> web.Response:
        public = request.method == "GET"  # metadata and readiness stay open
        if not public and not self._authorized(request):
            return _v2_error(401, "missing or wrong API key: send 'Authorization: Bearer <key>'")
        return await self._forward(request, request.match_info["model"], request.path, await request.read(), _v2_error)

    async def v2_server(self, request: web.Request) -> web.Response:
        if request.path == "/v2":
            return web.json_response({"name": "cyxwiz-central", "version": "1", "extensions": ["binary_tensor_data"]})
        key = "live" if request.path.endswith("live") else "ready"
        return web.json_response({key: True})

    async def _forward(self, request, deployment_id: str, path: str, body: bytes, error) -> web.StreamResponse:
        try:
            d = self.control.get(deployment_id)
        except Refused as exc:
            return error(exc.code, exc.message)
        if d.status in ("requested", "placed"):
            response = error(503, f"deployment {deployment_id!r} is still loading its model: retry shortly")
            response.headers["Retry-After"] = "1"
            return response
        if d.status != "running" or not d.http_endpoint:
            return error(409, f"deployment {deployment_id!r} is {d.status}" + (f": {d.error}" if d.error else ""))
        node = self.control.state.nodes.get(d.node_id)
        headers = {k: v for k, v in request.headers.items()
                   if k.lower() in ("content-type", "inference-header-content-length")}
        if node is not None:  # the node trusts central's session token for it
            headers["Authorization"] = self.control.metadata(node)[0][1]
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))
        try:
            async with self._session.request(request.method, d.http_endpoint + path, data=body or None,
                                             headers=headers) as upstream:
                payload = await upstream.read()
                keep = {k: v for k, v in upstream.headers.items()
                        if k.lower() in ("content-type", "inference-header-content-length", "retry-after")}
                return web.Response(body=payload, status=upstream.status, headers=keep)
        except aiohttp.ClientError as exc:
            return error(503, f"the node holding {deployment_id!r} did not answer ({type(exc).__name__}); retry")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


def add_deployment_routes(app: web.Application, control: DeploymentControl, api_key: str | None) -> Gateway:
    gateway = Gateway(control, api_key)
    r = app.router
    r.add_get("/v1/deployments", gateway.list)
    r.add_get("/v1/deployments/{id}", gateway.get)
    r.add_post("/v1/predict", gateway.predict)
    for path in ("/v2", "/v2/health/live", "/v2/health/ready"):
        r.add_get(path, gateway.v2_server)
    for prefix in ("/v2/models/{model}", "/v2/models/{model}/versions/{version}"):
        r.add_get(prefix, gateway.v2_model)
        r.add_get(prefix + "/ready", gateway.v2_model)
        r.add_post(prefix + "/infer", gateway.v2_model)
    return gateway
