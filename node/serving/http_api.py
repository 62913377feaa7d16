"""HTTP inference on the node (default port 8082): the original CyxWiz routes and the
Open Inference Protocol's REST form, with Triton's binary tensor data extension.

    GET  /v1/deployments            {"deployments": [{deployment_id, model_id, type, status, ...}], "count"}
    GET  /v1/deployments/{id}
    POST /v1/predict                {"deployment_id", "input"} -> {"deployment_id", "output", "shape", "latency_ms"}
    GET  /v2  /v2/health/live  /v2/health/ready
    GET  /v2/models/{id}[/versions/1]            model metadata
    GET  /v2/models/{id}[/versions/1]/ready
    POST /v2/models/{id}[/versions/1]/infer

v1 errors are ``{"error": {"message", "type", "code"}}``, v2 errors ``{"error": "..."}``;
503 (still loading) carries ``Retry-After``. With an API key configured, /v1 calls and
/v2 infer need ``authorization: Bearer <key>``; health and metadata stay open. No CORS
headers are sent (browsers on other origins are not served).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import msgspec
import numpy as np
from aiohttp import web

from node.serving import oip, tensors
from node.serving.access import Access, bearer
from node.serving.deployments import Deployment, Deployments, Status
from node.serving.errors import InvalidRequest, NotReady, ServingError

__all__ = ["HttpApi", "deployment_summary", "start_http"]

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024 * 1024
HEADER_LENGTH = "Inference-Header-Content-Length"
_json = msgspec.json.Encoder()
_decode = msgspec.json.Decoder()


def deployment_summary(d: Deployment) -> dict[str, Any]:
    """A deployment as the original API listed it, plus what helps a person."""
    info: dict[str, Any] = {
        "deployment_id": d.deployment_id, "model_id": d.source.model_id, "type": "local", "status": d.status.value,
        "name": d.spec.name, "message": d.message, "created_at": int(d.created_at),
        "total_requests": d.stats.total_requests, "avg_latency_ms": round(d.stats.avg_latency_ms, 4),
    }
    if d.loaded is not None:
        info.update(input_shape=list(d.loaded.sample_shape), output_dim=d.loaded.output_dim, sha256=d.loaded.sha256)
    return info


def _response(doc: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=_json.encode(doc), status=status, content_type="application/json", headers=headers)


def _v1_error(exc: ServingError) -> web.Response:
    headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, NotReady) else None
    return _response({"error": {"message": exc.message, "type": exc.kind, "code": exc.code}}, exc.code, headers)


def _v2_error(exc: ServingError) -> web.Response:
    headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, NotReady) else None
    return _response({"error": exc.message}, exc.code, headers)


def _guard(render: Callable[[ServingError], web.Response]):
    def wrap(fn):
        async def handler(self: HttpApi, request: web.Request) -> web.StreamResponse:
            try:
                return await fn(self, request)
            except ServingError as exc:
                return render(exc)
            except Exception as exc:  # a bug: answer 503 (retry), never 500, and keep serving
                log.exception("%s %s failed", request.method, request.path)
                return render(ServingError(f"the node could not answer: {type(exc).__name__}; retry"))

        handler.__name__ = fn.__name__
        return handler

    return wrap


def _document(body: bytes, what: str = "body") -> dict[str, Any]:
    try:
        doc = _decode.decode(body)
    except msgspec.DecodeError as exc:
        raise InvalidRequest(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise InvalidRequest(f"{what} must be a JSON object (got {type(doc).__name__})")
    return doc


class HttpApi:
    def __init__(self, deployments: Deployments, access: Access) -> None:
        self.deployments = deployments
        self.access = access

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY)
        r = app.router
        r.add_get("/v1/deployments", self.list_deployments)
        r.add_get("/v1/deployments/{id}", self.get_deployment)
        r.add_post("/v1/predict", self.predict)
        r.add_get("/v2", self.server_metadata)
        r.add_get("/v2/health/live", self.live)
        r.add_get("/v2/health/ready", self.ready)
        for prefix in ("/v2/models/{model}", "/v2/models/{model}/versions/{version}"):
            r.add_get(prefix, self.model_metadata)
            r.add_get(prefix + "/ready", self.model_ready)
            r.add_post(prefix + "/infer", self.infer)
        return app

    def _auth(self, request: web.Request) -> None:
        if not self.access.open:
            self.access.check(bearer(request.headers.get("Authorization")))

    # --- v1 ------------------------------------------------------------------------------

    @_guard(_v1_error)
    async def list_deployments(self, request: web.Request) -> web.Response:
        self._auth(request)
        found = [deployment_summary(d) for d in self.deployments.list()]
        return _response({"deployments": found, "count": len(found)})

    @_guard(_v1_error)
    async def get_deployment(self, request: web.Request) -> web.Response:
        self._auth(request)
        return _response(deployment_summary(self.deployments.get(request.match_info["id"])))

    @_guard(_v1_error)
    async def predict(self, request: web.Request) -> web.Response:
        self._auth(request)
        doc = _document(await request.read())
        deployment_id = doc.get("deployment_id")
        if not isinstance(deployment_id, str) or not deployment_id:
            raise InvalidRequest('deployment_id is required (a string; GET /v1/deployments lists them)')
        d = self.deployments.serving(deployment_id)
        if "input" not in doc:
            d.stats.error()
            raise InvalidRequest('input is required: a flat list of one sample\'s numbers, or a list of samples')
        try:
            x = tensors.from_values(doc["input"], None, d.loaded.sample_shape, "input", max_samples=d.max_samples)
        except InvalidRequest:
            d.stats.error()
            raise
        out, latency_ms = await self.deployments.infer(d, x)
        return _response({
            "deployment_id": deployment_id, "output": out.ravel().tolist(), "shape": list(out.shape),
            "latency_ms": latency_ms,
        })

    # --- v2 ------------------------------------------------------------------------------

    @_guard(_v2_error)
    async def server_metadata(self, request: web.Request) -> web.Response:
        return _response(oip.server_metadata())

    @_guard(_v2_error)
    async def live(self, request: web.Request) -> web.Response:
        return _response({"live": True})

    @_guard(_v2_error)
    async def ready(self, request: web.Request) -> web.Response:
        return _response({"ready": True})

    def _model(self, request: web.Request) -> Deployment:
        d = self.deployments.get(request.match_info["model"])
        oip.check_version(d, request.match_info.get("version", ""))
        return d

    @_guard(_v2_error)
    async def model_metadata(self, request: web.Request) -> web.Response:
        d = self._model(request)
        if d.loaded is None:
            self.deployments.serving(d.deployment_id)
            raise NotReady(f"model {d.deployment_id!r} is not loaded")
        return _response(oip.model_metadata(d))

    @_guard(_v2_error)
    async def model_ready(self, request: web.Request) -> web.Response:
        d = self._model(request)
        ready = d.status is Status.RUNNING
        return _response({"name": d.deployment_id, "ready": ready}, 200 if ready else 400)

    @_guard(_v2_error)
    async def infer(self, request: web.Request) -> web.Response:
        self._auth(request)
        d = self._model(request)
        self.deployments.serving(d.deployment_id)
        body = await request.read()
        try:
            doc, x, binary_out = _infer_request(request, body, d)
        except InvalidRequest:
            d.stats.error()
            raise
        out, _ = await self.deployments.infer(d, x)
        return _infer_response(doc, d, np.ascontiguousarray(out, dtype="<f4"), binary_out)


def _split_binary(request: web.Request, body: bytes) -> tuple[bytes, bytes]:
    text = request.headers.get(HEADER_LENGTH)
    if text is None:
        return body, b""
    if not (text.isascii() and text.isdigit()) or int(text) > len(body):
        raise InvalidRequest(f"{HEADER_LENGTH} {text[:20]!r} must be the JSON header's length in bytes (body has {len(body)})")
    n = int(text)
    return body[:n], body[n:]


def _infer_request(request: web.Request, body: bytes, d: Deployment) -> tuple[dict[str, Any], np.ndarray, bool]:
    head, binary = _split_binary(request, body)
    doc = _document(head, "the inference request")
    inputs = doc.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise InvalidRequest(f"inputs must be a list with one tensor object, {oip.INPUT!r}")
    t = inputs[0]
    name, datatype, shape = t.get("name"), t.get("datatype"), t.get("shape")
    if not isinstance(name, str):
        raise InvalidRequest("inputs[0].name is required")
    oip.check_input_name(name)
    what = f"input {name!r}"
    if not isinstance(datatype, str):
        raise InvalidRequest(f"{what}: datatype is required (FP32)")
    dtype = tensors.oip_dtype(datatype, what)
    if not isinstance(shape, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in shape):
        raise InvalidRequest(f"{what}: shape must be a list of whole numbers")
    params = t.get("parameters") or {}
    sample_shape, limit = d.loaded.sample_shape, d.max_samples
    size = params.get("binary_data_size") if isinstance(params, dict) else None
    if size is not None:
        if not isinstance(size, int) or isinstance(size, bool) or size != len(binary):
            raise InvalidRequest(f"{what}: binary_data_size {size!r} does not match the {len(binary)} binary bytes sent")
        x = tensors.from_bytes(binary, shape, dtype, sample_shape, what, max_samples=limit)
    else:
        if binary:
            raise InvalidRequest(f"{what}: binary data was sent but the input has no binary_data_size parameter")
        x = tensors.from_values(t.get("data"), shape, sample_shape, what, max_samples=limit)
    outputs = doc.get("outputs") or []
    if not isinstance(outputs, list) or not all(isinstance(o, dict) for o in outputs):
        raise InvalidRequest("outputs must be a list of {\"name\": ...} objects")
    oip.check_outputs([str(o.get("name")) for o in outputs])
    request_params = doc.get("parameters") or {}
    binary_out = bool(isinstance(request_params, dict) and request_params.get("binary_data_output")) or any(
        isinstance(o.get("parameters"), dict) and o["parameters"].get("binary_data") for o in outputs
    )
    return doc, x, binary_out


def _infer_response(doc: dict[str, Any], d: Deployment, out: np.ndarray, binary: bool) -> web.Response:
    tensor: dict[str, Any] = {"name": oip.OUTPUT, "datatype": "FP32", "shape": list(out.shape)}
    answer: dict[str, Any] = {"model_name": d.deployment_id, "model_version": oip.VERSION, "outputs": [tensor]}
    if isinstance(doc.get("id"), str):
        answer["id"] = doc["id"]
    if not binary:
        tensor["data"] = out.ravel().tolist()
        return _response(answer)
    raw = out.tobytes()
    tensor["parameters"] = {"binary_data_size": len(raw)}
    head = _json.encode(answer)
    return web.Response(
        body=head + raw, content_type="application/octet-stream", headers={HEADER_LENGTH: str(len(head))}
    )


async def start_http(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Serve ``app`` on ``host:port`` (0 = any free port); the runner and the bound port."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    sockets = site._server.sockets if site._server is not None else ()  # aiohttp has no public getter
    return runner, sockets[0].getsockname()[1]
