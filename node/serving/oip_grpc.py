"""The Open Inference Protocol's gRPC service (``inference.GRPCInferenceService``).

Health (ServerLive, ServerReady, ModelReady) and metadata stay open; ModelInfer needs
the API key when one is configured. Inputs come as ``raw_input_contents`` (what
tritonclient sends) or typed ``contents``; the output goes back raw, as Triton does.
:func:`add_to_server` registers the service with ModelInfer's requests parsed by
:mod:`node.serving.oip_wire` (the raw tensor bytes are not copied on the way in).
"""

from __future__ import annotations

import grpc
import numpy as np

from node.serving import oip, tensors
from node.serving.access import Access
from node.serving.deployments import Deployments, Status
from node.serving.errors import InvalidRequest, NotFound, NotReady
from node.serving.grpc_api import guarded
from node.serving.oip_wire import InferRequest, InferRequestParser
from protos import open_inference_pb2 as pb
from protos import open_inference_pb2_grpc as pb_grpc

__all__ = ["OipServicer", "add_to_server"]

SERVICE = "inference.GRPCInferenceService"

# Which typed contents field holds each datatype's values.
_CONTENTS = {
    "FP32": "fp32_contents", "FP64": "fp64_contents", "INT8": "int_contents", "INT16": "int_contents",
    "INT32": "int_contents", "INT64": "int64_contents", "UINT8": "uint_contents", "UINT16": "uint_contents",
    "UINT32": "uint_contents", "UINT64": "uint64_contents",
}


def _tensor_meta(items) -> list[pb.ModelMetadataResponse.TensorMetadata]:
    return [pb.ModelMetadataResponse.TensorMetadata(name=i["name"], datatype=i["datatype"], shape=i["shape"])
            for i in items]


class OipServicer(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, deployments: Deployments, access: Access) -> None:
        self.deployments = deployments
        self.access = access

    @guarded(pb.ServerLiveResponse, auth=False)
    async def ServerLive(self, request, context):
        return pb.ServerLiveResponse(live=True)

    @guarded(pb.ServerReadyResponse, auth=False)
    async def ServerReady(self, request, context):
        return pb.ServerReadyResponse(ready=True)

    @guarded(pb.ModelReadyResponse, auth=False)
    async def ModelReady(self, request, context):
        try:
            d = self.deployments.get(request.name)
        except NotFound:
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=d.status is Status.RUNNING and request.version in ("", oip.VERSION))

    @guarded(pb.ServerMetadataResponse, auth=False)
    async def ServerMetadata(self, request, context):
        meta = oip.server_metadata()
        return pb.ServerMetadataResponse(name=meta["name"], version=meta["version"], extensions=meta["extensions"])

    @guarded(pb.ModelMetadataResponse, auth=False)
    async def ModelMetadata(self, request, context):
        d = self.deployments.get(request.name)
        oip.check_version(d, request.version)
        if d.loaded is None:
            self.deployments.serving(request.name)
            raise NotReady(f"model {request.name!r} is not loaded")
        meta = oip.model_metadata(d)
        return pb.ModelMetadataResponse(
            name=meta["name"], versions=meta["versions"], platform=meta["platform"],
            inputs=_tensor_meta(meta["inputs"]), outputs=_tensor_meta(meta["outputs"]),
        )

    @guarded(pb.ModelInferResponse)
    async def ModelInfer(self, request, context):
        if type(request) is InferRequest:  # as add_to_server registers it
            request, raw = request.message, request.raw
        else:  # a ModelInferRequest parsed by protobuf (the generated registration)
            raw = request.raw_input_contents
        d = self.deployments.serving(request.model_name)
        try:
            oip.check_version(d, request.model_version)
            x = _input(request, raw, d.loaded.sample_shape, d.max_samples)
            oip.check_outputs([o.name for o in request.outputs])
        except InvalidRequest:
            d.stats.error()
            raise
        out, _ = await self.deployments.infer(d, x)
        out = np.ascontiguousarray(out, dtype="<f4")
        return pb.ModelInferResponse(
            model_name=request.model_name, model_version=oip.VERSION, id=request.id,
            outputs=[pb.ModelInferResponse.InferOutputTensor(name=oip.OUTPUT, datatype="FP32", shape=out.shape)],
            raw_output_contents=[out.tobytes()],
        )


def add_to_server(servicer: OipServicer, server) -> None:
    """``servicer`` on ``server`` as the generated ``add_GRPCInferenceServiceServicer_to_server``
    adds it, but with ModelInfer's requests parsed by :class:`InferRequestParser`."""
    handlers = {}
    for method in pb.DESCRIPTOR.services_by_name[SERVICE.split(".")[-1]].methods:
        request_cls, response_cls = getattr(pb, method.input_type.name), getattr(pb, method.output_type.name)
        parse = InferRequestParser().FromString if method.name == "ModelInfer" else request_cls.FromString
        handlers[method.name] = grpc.unary_unary_rpc_method_handler(
            getattr(servicer, method.name), request_deserializer=parse,
            response_serializer=response_cls.SerializeToString,
        )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    server.add_registered_method_handlers(SERVICE, handlers)


def _input(request: pb.ModelInferRequest, raw, sample_shape: tuple[int, ...], max_samples: int) -> np.ndarray:
    if len(request.inputs) != 1:
        raise InvalidRequest(f"inputs: this model takes exactly one input, {oip.INPUT!r} (got {len(request.inputs)})")
    t = request.inputs[0]
    oip.check_input_name(t.name)
    what = f"input {t.name!r}"
    dtype = tensors.oip_dtype(t.datatype, what)
    if raw:
        if len(raw) != 1:
            raise InvalidRequest(f"raw_input_contents: expected one entry per input (1), got {len(raw)}")
        return tensors.from_bytes(raw[0], t.shape, dtype, sample_shape, what, max_samples=max_samples)
    values = getattr(t.contents, _CONTENTS[t.datatype]) if t.datatype in _CONTENTS else ()
    if not values:
        raise InvalidRequest(
            f"{what}: no data: send raw_input_contents, or contents.{_CONTENTS.get(t.datatype, 'fp32_contents')}"
        )
    return tensors.from_values(list(values), t.shape, sample_shape, what, max_samples=max_samples)
