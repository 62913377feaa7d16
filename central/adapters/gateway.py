"""Central's HTTP serving gateway on the REST port: the original API's
``/v1/deployments`` and ``/v1/predict`` and the Open Inference Protocol's ``/v2/...``,
answered from central's deployments and forwarded to the node that holds the deployment,
so a client of the original API works at ``http://central:8080/v1/predict``.

Each protocol keeps its own error shape: ``{"error": {"message", "type", "code"}}`` on
``/v1``, ``{"error": "..."}`` on ``/v2``. Forwarded calls carry the node's session
token; the client's API key is checked here (``/v2`` metadata and health stay open).
"""

from __future__ import annotations

import logging

import aiohttp
import msgspec
from litestar import Request, Response, get, post
from litestar.params import FromPath

from central.adapters.deployments import V1_STATUS
from central.adapters.rest_context import API_KEY_MESSAGE, bearer_ok, json_response
from central.control.deployments import DeploymentControl
from central.lifecycle.deployments import DeploymentState
from central.lifecycle.errors import Refused

__all__ = ["Gateway", "gateway_handlers", "summary"]

log = logging.getLogger("cyxwiz.central.gateway")

FORWARD_TIMEOUT_S = 60
_FORWARDED = ("content-type", "inference-header-content-length")
_RETURNED = ("content-type", "inference-header-content-length", "retry-after")


def _v1_error(code: int, message: str) -> Response:
    kind = {400: "invalid_request", 401: "unauthenticated", 404: "not_found", 409: "conflict"}.get(code, "unavailable")
    return json_response({"error": {"message": message, "type": kind, "code": code}}, status=code)


def _v2_error(code: int, message: str) -> Response:
    return json_response({"error": message}, status=code)


def summary(d: DeploymentState) -> dict:
    return {"deployment_id": d.deployment_id, "model_id": d.model_id, "type": "network", "status": V1_STATUS[d.status],
            "name": d.name, "node_id": d.node_id, "message": d.error, "endpoint": d.http_endpoint}


class Gateway:
    def __init__(self, control: DeploymentControl, api_key: str | None) -> None:
        self.control = control
        self.api_key = api_key
        self._session: aiohttp.ClientSession | None = None

    def authorized(self, request: Request) -> bool:
        return bearer_ok(request.headers.get("Authorization", ""), self.api_key)

    async def forward(self, request: Request, deployment_id: str, path: str, body: bytes, error) -> Response:
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
        headers = {k: v for k, v in request.headers.items() if k.lower() in _FORWARDED}
        if node is not None:  # the node trusts central's session token for it
            headers["Authorization"] = self.control.metadata(node)[0][1]
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=FORWARD_TIMEOUT_S))
        try:
            async with self._session.request(request.method, d.http_endpoint + path, data=body or None,
                                             headers=headers) as upstream:
                payload = await upstream.read()
                keep = {k: v for k, v in upstream.headers.items() if k.lower() in _RETURNED}
        except aiohttp.ClientError as exc:
            return error(503, f"the node holding {deployment_id!r} did not answer ({type(exc).__name__}); retry")
        media_type = keep.pop("Content-Type", None) or keep.pop("content-type", None) or "application/octet-stream"
        return Response(content=payload, status_code=upstream.status, headers=keep, media_type=media_type)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


def _gateway(request: Request) -> Gateway:
    return request.app.state.api.gateway


@get("/v1/deployments", summary="deployments (the original serving API)", tags=["serving"], sync_to_thread=False)
def list_deployments(request: Request) -> Response[dict]:
    gateway = _gateway(request)
    if not gateway.authorized(request):
        return _v1_error(401, API_KEY_MESSAGE)
    found = [summary(d) for d in gateway.control.visible()]
    return json_response({"deployments": found, "count": len(found)})


@get("/v1/deployments/{deployment_id:str}", summary="one deployment", tags=["serving"], sync_to_thread=False)
def get_deployment(request: Request, deployment_id: FromPath[str]) -> Response[dict]:
    gateway = _gateway(request)
    if not gateway.authorized(request):
        return _v1_error(401, API_KEY_MESSAGE)
    try:
        return json_response(summary(gateway.control.get(deployment_id)))
    except Refused as exc:
        return _v1_error(exc.code, exc.message)


@post("/v1/predict", summary="predict: {deployment_id, input}, forwarded to the node", tags=["serving"],
      status_code=200)
async def predict(request: Request) -> Response[dict]:
    gateway = _gateway(request)
    if not gateway.authorized(request):
        return _v1_error(401, API_KEY_MESSAGE)
    body = await request.body()
    try:
        doc = msgspec.json.decode(body)
    except msgspec.DecodeError as exc:
        return _v1_error(400, f"body is not valid JSON: {exc}")
    deployment_id = doc.get("deployment_id") if isinstance(doc, dict) else None
    if not isinstance(deployment_id, str) or not deployment_id:
        return _v1_error(400, "deployment_id is required (a string; GET /v1/deployments lists them)")
    return await gateway.forward(request, deployment_id, "/v1/predict", body, _v1_error)


@get(["/v2", "/v2/health/live", "/v2/health/ready"], summary="Open Inference Protocol: server metadata and health",
     tags=["serving"], security=[{}], sync_to_thread=False)
def v2_server(request: Request) -> Response[dict]:
    path = request.url.path.rstrip("/")
    if path == "/v2":
        return json_response({"name": "cyxwiz-central", "version": "1", "extensions": ["binary_tensor_data"]})
    return json_response({"live" if path.endswith("live") else "ready": True})


_MODEL = ("/v2/models/{model:str}", "/v2/models/{model:str}/versions/{version:str}")


@get([*_MODEL, *(p + "/ready" for p in _MODEL)], summary="Open Inference Protocol: model metadata and readiness",
     tags=["serving"], security=[{}])
async def v2_model_open(request: Request, model: FromPath[str]) -> Response[dict]:
    return await _gateway(request).forward(request, model, request.url.path, await request.body(), _v2_error)


@post([p + "/infer" for p in _MODEL], summary="Open Inference Protocol: infer (JSON or binary tensors)",
      tags=["serving"], status_code=200)
async def v2_infer(request: Request, model: FromPath[str]) -> Response[dict]:
    gateway = _gateway(request)
    if not gateway.authorized(request):
        return _v2_error(401, API_KEY_MESSAGE)
    return await gateway.forward(request, model, request.url.path, await request.body(), _v2_error)


def gateway_handlers() -> list:
    return [list_deployments, get_deployment, predict, v2_server, v2_model_open, v2_infer]
