"""The CyxWiz DeploymentService and InferenceService on the node's 50052.

Errors answer with the protocol's ``Error`` (HTTP-style code) AND the matching gRPC
status (INVALID_ARGUMENT, UNAUTHENTICATED, NOT_FOUND, FAILED_PRECONDITION,
RESOURCE_EXHAUSTED, UNAVAILABLE); the response with its Error travels serialized in
the trailing metadata ``cyxwiz-error-bin``, as central's errors do.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable

import grpc
import numpy as np

from node.serving import tensors
from node.serving.access import Access, bearer
from node.serving.deployments import Deployment, Deployments, Status
from node.serving.errors import InvalidRequest, NotReady, ServingError
from node.serving.spec import DeploymentSpec, check_deployment_id, new_deployment_id, serving_params
from protos import common_pb2, deployment_pb2, deployment_pb2_grpc, inference_pb2, inference_pb2_grpc, node_pb2
from protos.trailers import error_trailers

__all__ = ["DeploymentServicer", "InferenceServicer", "deployment_to_proto", "spec_from_config"]

log = logging.getLogger(__name__)

MAX_PAGE = 1000
DEFAULT_PAGE = 100

STATUS_TO_PROTO = {
    Status.PENDING: deployment_pb2.DEPLOYMENT_STATUS_PENDING,
    Status.LOADING: deployment_pb2.DEPLOYMENT_STATUS_LOADING,
    Status.RUNNING: deployment_pb2.DEPLOYMENT_STATUS_RUNNING,
    Status.STOPPED: deployment_pb2.DEPLOYMENT_STATUS_STOPPED,
    Status.FAILED: deployment_pb2.DEPLOYMENT_STATUS_FAILED,
}
PROTO_TO_STATUS = {v: k for k, v in STATUS_TO_PROTO.items()}


def _metadata_token(context: grpc.aio.ServicerContext) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization" and isinstance(value, str):
            return bearer(value)
    return None


def _error_response(response_cls, exc: ServingError):
    response = response_cls()
    fields = response_cls.DESCRIPTOR.fields_by_name
    if "error" in fields:
        response.error.code, response.error.message = exc.code, exc.message
    if "status" in fields and fields["status"].enum_type is not None and fields["status"].enum_type.name == "StatusCode":
        response.status = common_pb2.STATUS_ERROR
    return response


async def abort(context: grpc.aio.ServicerContext, response_cls, exc: ServingError):
    trailer = list(error_trailers(_error_response(response_cls, exc), exc.code))
    if isinstance(exc, NotReady):
        trailer.append(("retry-after", str(exc.retry_after)))
    await context.abort(exc.grpc_code, exc.message, trailing_metadata=tuple(trailer))


def guarded(response_cls, *, auth: bool = True):
    """Check the caller, then map ServingError (and any bug, as UNAVAILABLE) to an answer."""

    def wrap(fn):
        @functools.wraps(fn)
        async def handler(self, request, context):
            try:
                if auth and not self.access.open:  # reading the metadata costs a few µs a call
                    self.access.check(_metadata_token(context))
                return await fn(self, request, context)
            except ServingError as exc:
                await abort(context, response_cls, exc)
            except Exception as exc:  # a bug: never INTERNAL for a request, and the server goes on
                log.exception("%s failed", fn.__name__)
                await abort(context, response_cls, ServingError(f"the node could not answer: {type(exc).__name__}; retry"))

        return handler

    return wrap


# --- converters ------------------------------------------------------------------------


def spec_from_config(config: deployment_pb2.DeploymentConfig) -> DeploymentSpec:
    deployment_id = config.deployment_id.strip() or new_deployment_id()
    check_deployment_id(deployment_id, "config.deployment_id")
    model = config.model
    return DeploymentSpec(
        deployment_id=deployment_id, name=model.name or deployment_id, model_id=model.model_id.strip(),
        source_url=model.source_url.strip(), local_path=model.local_path.strip(), metadata=dict(model.metadata),
        params=serving_params(dict(config.runtime_params)), user_id=config.user_id,
    )


def deployment_to_proto(d: Deployment, node_id: str, endpoint_url: str, grpc_port: int = 0) -> deployment_pb2.Deployment:
    spec, p = d.spec, d.spec.params
    metadata = dict(spec.metadata)
    if d.loaded is not None:
        metadata.update(sha256=d.loaded.sha256, input_shape=",".join(map(str, d.loaded.sample_shape)),
                        output_dim=str(d.loaded.output_dim), task=str(d.loaded.meta.get("task", "")),
                        compiled_batch_sizes=",".join(map(str, d.compiled_sizes)),
                        executor="loop when idle, else worker thread" if d.inline else "worker thread")
    config = deployment_pb2.DeploymentConfig(
        deployment_id=spec.deployment_id, user_id=spec.user_id, type=deployment_pb2.DEPLOYMENT_TYPE_LOCAL,
        node_id=node_id,
        model=deployment_pb2.ModelInfo(
            model_id=d.source.model_id, name=spec.name, source_url=spec.source_url or (d.source.uri if d.source.path is None else ""),
            local_path=spec.local_path, size_bytes=d.loaded.size if d.loaded else 0, metadata=metadata,
            format=deployment_pb2.MODEL_FORMAT_UNKNOWN,
        ),
        port=grpc_port,  # where InferenceService and the OIP answer (the node's deploy port)
        runtime_params={
            "max_batch_size": str(p.max_batch), "batch_delay_ms": f"{p.max_delay_s * 1000:g}",
            "queue_size": str(p.queue_size), "batching": "on" if p.batching else "off",
        },
    )
    answer = deployment_pb2.Deployment(
        deployment_id=spec.deployment_id, config=config, status=STATUS_TO_PROTO[d.status],
        assigned_node=node_pb2.NodeInfo(node_id=node_id), status_message=d.message,
        created_at=int(d.created_at), started_at=int(d.started_at), stopped_at=int(d.stopped_at),
        endpoint_url=endpoint_url if d.status is Status.RUNNING else "", uptime_seconds=int(d.uptime_seconds),
        total_requests=d.stats.total_requests, avg_latency_ms=d.stats.avg_latency_ms,
    )
    if d.status is Status.FAILED:
        answer.error.code, answer.error.message = d.error_code, d.message
    return answer


def page(page_size: int, page_token: str) -> tuple[int, int]:
    if not 0 <= page_size <= MAX_PAGE:
        raise InvalidRequest(f"page_size must be 0..{MAX_PAGE} (got {page_size}); 0 means {DEFAULT_PAGE}")
    if page_token and not (page_token.isascii() and page_token.isdigit() and len(page_token) < 10):
        raise InvalidRequest(f"page_token {page_token[:40]!r} is not one this server gave out; start with ''")
    return page_size or DEFAULT_PAGE, int(page_token or 0)


# --- DeploymentService ------------------------------------------------------------------


class DeploymentServicer(deployment_pb2_grpc.DeploymentServiceServicer):
    def __init__(self, deployments: Deployments, access: Access, *, node_id: Callable[[], str],
                 endpoint_url: Callable[[], str], grpc_port: Callable[[], int] = lambda: 0) -> None:
        self.deployments = deployments
        self.access = access
        self.node_id = node_id
        self.endpoint_url = endpoint_url
        self.grpc_port = grpc_port

    def _proto(self, d: Deployment) -> deployment_pb2.Deployment:
        return deployment_to_proto(d, self.node_id(), self.endpoint_url(), self.grpc_port())

    @guarded(deployment_pb2.CreateDeploymentResponse)
    async def CreateDeployment(self, request, context):
        if not request.HasField("config"):
            raise InvalidRequest("config is missing: give config.model.model_id (a completed job's id)")
        d = self.deployments.create(spec_from_config(request.config))
        return deployment_pb2.CreateDeploymentResponse(status=common_pb2.STATUS_SUCCESS, deployment=self._proto(d))

    @guarded(deployment_pb2.GetDeploymentResponse)
    async def GetDeployment(self, request, context):
        return deployment_pb2.GetDeploymentResponse(deployment=self._proto(self.deployments.get(request.deployment_id)))

    @guarded(deployment_pb2.ListDeploymentsResponse)
    async def ListDeployments(self, request, context):
        size, offset = page(request.page_size, request.page_token)
        status = None
        if request.status_filter:
            status = PROTO_TO_STATUS.get(request.status_filter)
            if status is None:  # a protocol state this node never has (READY, ...): nothing matches
                return deployment_pb2.ListDeploymentsResponse(total_count=0)
        if request.type_filter not in (deployment_pb2.DEPLOYMENT_TYPE_UNKNOWN, deployment_pb2.DEPLOYMENT_TYPE_LOCAL):
            return deployment_pb2.ListDeploymentsResponse(total_count=0)
        found = self.deployments.list(status=status, user_id=request.user_id)
        chunk = found[offset : offset + size]
        next_token = str(offset + size) if offset + size < len(found) else ""
        return deployment_pb2.ListDeploymentsResponse(
            deployments=[self._proto(d) for d in chunk], next_page_token=next_token, total_count=len(found)
        )

    @guarded(deployment_pb2.StopDeploymentResponse)
    async def StopDeployment(self, request, context):
        d = await self.deployments.stop(request.deployment_id)
        return deployment_pb2.StopDeploymentResponse(status=common_pb2.STATUS_SUCCESS, deployment=self._proto(d))

    @guarded(deployment_pb2.DeleteDeploymentResponse)
    async def DeleteDeployment(self, request, context):
        self.deployments.delete(request.deployment_id)
        return deployment_pb2.DeleteDeploymentResponse(status=common_pb2.STATUS_SUCCESS)

    @guarded(deployment_pb2.GetDeploymentMetricsResponse)
    async def GetDeploymentMetrics(self, request, context):
        if request.start_time < 0 or request.end_time < 0:
            raise InvalidRequest("start_time and end_time must be >= 0 (Unix seconds; 0 = open-ended)")
        points = [
            deployment_pb2.DeploymentMetricPoint(
                timestamp=int(w.start), request_count=w.requests, avg_latency_ms=w.mean_ms,
                throughput_rps=w.throughput_rps,
            )
            for w in self.deployments.metrics(request.deployment_id, request.start_time, request.end_time)
        ]
        return deployment_pb2.GetDeploymentMetricsResponse(metrics=points)


# --- InferenceService ------------------------------------------------------------------


def input_spec(d: Deployment) -> tuple[list[int], list[int]]:
    """Input and output shapes with -1 for the batch."""
    assert d.loaded is not None
    return [-1, *d.loaded.sample_shape], [-1, d.loaded.output_dim]


class InferenceServicer(inference_pb2_grpc.InferenceServiceServicer):
    def __init__(self, deployments: Deployments, access: Access) -> None:
        self.deployments = deployments
        self.access = access

    @guarded(inference_pb2.InferResponse)
    async def Infer(self, request, context):
        d = self.deployments.serving(request.deployment_id)
        try:
            if len(request.inputs) != 1:
                raise InvalidRequest(f"inputs: this model takes exactly one input tensor (got {len(request.inputs)})")
            t = request.inputs[0]
            what = f"inputs[0] {t.name!r}" if t.name else "inputs[0]"
            dtype = tensors.cyxwiz_dtype(t.dtype, what)
            x = tensors.from_bytes(t.data, t.shape, dtype, d.loaded.sample_shape, what, max_samples=d.max_samples)
        except InvalidRequest:
            d.stats.error()
            raise
        out, latency_ms = await self.deployments.infer(d, x)
        out = np.ascontiguousarray(out, dtype=np.float32)
        return inference_pb2.InferResponse(
            status=common_pb2.STATUS_SUCCESS, latency_ms=latency_ms,
            outputs=[inference_pb2.TensorData(name="output", shape=out.shape, dtype=common_pb2.DATA_TYPE_FLOAT32,
                                              data=out.astype("<f4", copy=False).tobytes())],
        )

    @guarded(inference_pb2.GetModelInfoResponse, auth=False)
    async def GetModelInfo(self, request, context):
        d = self.deployments.get(request.deployment_id)
        if d.loaded is None:
            self.deployments.serving(request.deployment_id)  # says loading / failed
            raise NotReady(f"deployment {request.deployment_id!r} has no model loaded")
        shape_in, shape_out = input_spec(d)
        return inference_pb2.GetModelInfoResponse(
            status=common_pb2.STATUS_SUCCESS,
            input_specs=[common_pb2.TensorInfo(name="input", shape=shape_in, dtype=common_pb2.DATA_TYPE_FLOAT32)],
            output_specs=[common_pb2.TensorInfo(name="output", shape=shape_out, dtype=common_pb2.DATA_TYPE_FLOAT32)],
        )
