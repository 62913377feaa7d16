"""Our inference protos keep their wire contracts: the CyxWiz InferenceService (field
numbers and types of the public inference.proto) and the Open Inference Protocol's
GRPCInferenceService, compared message by message with tritonclient's own descriptors."""

from __future__ import annotations

import json
import subprocess
import sys

from google.protobuf.descriptor import FieldDescriptor

from protos import inference_pb2
from protos import open_inference_pb2 as oip

T = FieldDescriptor
# cyxwiz-protocol/proto/inference.proto: message -> field -> (number, type, repeated)
CYXWIZ = {
    "TensorData": {"name": (1, T.TYPE_STRING, False), "shape": (2, T.TYPE_INT64, True),
                   "dtype": (3, T.TYPE_ENUM, False), "data": (4, T.TYPE_BYTES, False)},
    "InferRequest": {"deployment_id": (1, T.TYPE_STRING, False), "inputs": (2, T.TYPE_MESSAGE, True)},
    "InferResponse": {"status": (1, T.TYPE_ENUM, False), "outputs": (2, T.TYPE_MESSAGE, True),
                      "latency_ms": (3, T.TYPE_DOUBLE, False), "error": (4, T.TYPE_MESSAGE, False)},
    "GetModelInfoRequest": {"deployment_id": (1, T.TYPE_STRING, False)},
    "GetModelInfoResponse": {"status": (1, T.TYPE_ENUM, False), "input_specs": (2, T.TYPE_MESSAGE, True),
                             "output_specs": (3, T.TYPE_MESSAGE, True), "error": (4, T.TYPE_MESSAGE, False)},
}


def _fields(message) -> dict[str, tuple]:
    return {f.name: (f.number, f.type, f.is_repeated) for f in message.fields}


def test_cyxwiz_inference_messages_and_service():
    pool = inference_pb2.DESCRIPTOR
    assert pool.package == "cyxwiz.protocol"
    for name, fields in CYXWIZ.items():
        assert _fields(pool.message_types_by_name[name]) == fields, name
    service = pool.services_by_name["InferenceService"]
    assert {m.name: (m.input_type.name, m.output_type.name) for m in service.methods} == {
        "Infer": ("InferRequest", "InferResponse"), "GetModelInfo": ("GetModelInfoRequest", "GetModelInfoResponse"),
    }


_DUMP = """
import json
from tritonclient.grpc import service_pb2 as s
from google.protobuf.descriptor import FieldDescriptor as T
def walk(m, prefix, out):
    out[prefix + m.name] = {f.name: [f.number, f.type, f.is_repeated,
                                     f.message_type.full_name if f.message_type else ""] for f in m.fields}
    for n in m.nested_types:
        walk(n, prefix + m.name + ".", out)
out = {}
for m in s.DESCRIPTOR.message_types_by_name.values():
    walk(m, "", out)
svc = s.DESCRIPTOR.services_by_name["GRPCInferenceService"]
print(json.dumps({"messages": out, "methods": {m.name: [m.input_type.full_name, m.output_type.full_name]
                                               for m in svc.methods}}))
"""


def _ours() -> dict[str, dict]:
    out: dict[str, dict] = {}

    def walk(m, prefix):
        out[prefix + m.name] = {f.name: [f.number, f.type, f.is_repeated,
                                         f.message_type.full_name if f.message_type else ""] for f in m.fields}
        for n in m.nested_types:
            walk(n, prefix + m.name + ".")

    for m in oip.DESCRIPTOR.message_types_by_name.values():
        walk(m, "")
    return out


def test_open_inference_protocol_matches_tritonclient():
    # tritonclient's package `inference` cannot share our process's descriptor pool: read it in a child
    theirs = json.loads(subprocess.run([sys.executable, "-c", _DUMP], capture_output=True, text=True, check=True).stdout)
    ours = _ours()
    assert oip.DESCRIPTOR.package == "inference"
    for name, fields in ours.items():
        assert name in theirs["messages"], name
        for field, spec in fields.items():
            assert theirs["messages"][name].get(field) == spec, (name, field)
    service = oip.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    for method in service.methods:
        assert theirs["methods"][method.name] == [method.input_type.full_name, method.output_type.full_name]
    assert {m.name for m in service.methods} == {
        "ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata", "ModelInfer"}
