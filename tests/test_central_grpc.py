"""Every RPC of central with arbitrary requests (hypothesis): never INTERNAL or UNKNOWN,
an error always carries the protocol's Error with the matching gRPC status, the server
stays up, and every event it appended applies cleanly to its state (nothing half-written).

Central runs in a thread with its own event loop; the test calls it with sync stubs.
"""

from __future__ import annotations


import grpc
import pytest
from google.protobuf import message_factory
from google.protobuf.descriptor import FieldDescriptor as F
from hypothesis import HealthCheck, given, settings, strategies as st

from protos.trailers import ERROR_TRAILER
from central.server import CentralConfig
from threaded_central import ThreadedCentral
from protos import common_pb2, job_pb2, job_pb2_grpc, node_pb2, node_pb2_grpc
from protos.convert import HTTP_TO_GRPC, bearer_metadata

NODE_TOKEN, API_KEY = "node-token", "api-key"
ALLOWED = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.UNAUTHENTICATED,
           grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.RESOURCE_EXHAUSTED}


@pytest.fixture
def world(nats_server, tmp_path):
    config = CentralConfig.load(env={}, home=tmp_path / "home", nats_url=nats_server.url, grpc_port=0, rest_port=0,
                                host="127.0.0.1", node_token=NODE_TOKEN, api_key=API_KEY, heartbeat_s=5, node_timeout_s=60)
    with ThreadedCentral(config) as central, grpc.insecure_channel(central.server.grpc_address) as channel:
        nodes = node_pb2_grpc.NodeServiceStub(channel)
        jobs = job_pb2_grpc.JobServiceStub(channel)
        info = node_pb2.NodeInfo(node_id="node-1", ip_address="127.0.0.1", port=1, slots=1)
        session = nodes.RegisterNode(node_pb2.RegisterNodeRequest(info=info, authentication_token=NODE_TOKEN)).session_token
        config = job_pb2.JobConfig(job_type=1, epochs=2, batch_size=4, dataset_uri="builtin://iris", job_id="job-1")
        jobs.SubmitJob(job_pb2.SubmitJobRequest(config=config), metadata=bearer_metadata(API_KEY))
        stubs = {
            "JobService": jobs,
            "NodeService": nodes,
            "NodeDiscoveryService": node_pb2_grpc.NodeDiscoveryServiceStub(channel),
            "JobStatusService": node_pb2_grpc.JobStatusServiceStub(channel),
        }
        yield central, stubs, session


# --- arbitrary protobuf messages from their descriptors -----------------------------------

ids = st.sampled_from(["job-1", "node-1", "", "nope", "a.b", "x" * 200, "ünï", "job-2"])
texts = st.one_of(ids, st.text(max_size=12), st.sampled_from([NODE_TOKEN, "builtin://iris", "{}", "[1]", "{bad"]))
int32s = st.one_of(st.integers(-3, 12), st.sampled_from([-(2**31), 2**31 - 1, 1000, 100_000]))
int64s = st.one_of(st.integers(-3, 12), st.sampled_from([-(2**63), 2**63 - 1, 1 << 40]))
doubles = st.one_of(st.floats(-10, 10), st.sampled_from([float("nan"), float("inf"), -float("inf"), 1e308]))


def scalar(field) -> st.SearchStrategy:
    return {
        F.TYPE_STRING: texts, F.TYPE_BYTES: st.binary(max_size=8), F.TYPE_BOOL: st.booleans(),
        F.TYPE_INT32: int32s, F.TYPE_INT64: int64s, F.TYPE_UINT32: st.integers(0, 2**32 - 1),
        F.TYPE_UINT64: st.integers(0, 2**64 - 1), F.TYPE_DOUBLE: doubles, F.TYPE_FLOAT: st.floats(-10, 10),
        F.TYPE_ENUM: st.integers(-2, 9),
    }[field.type]


# Fields named here mostly get values that pass validation, so calls reach deep paths.
BY_NAME = {
    "node_id": st.sampled_from(["node-1"] * 6 + ["nope", "", "a.b"]),
    "job_id": st.one_of(st.sampled_from(["job-1", "job-2", "job-3"]), texts),
    "job_type": st.sampled_from([1, 1, 1, 0, 2, 9]),
    "epochs": st.integers(-1, 4),
    "batch_size": st.integers(-1, 64),
    "dataset_uri": st.sampled_from(["builtin://iris"] * 3 + ["", "ftp://x"]),
    "ip_address": st.sampled_from(["127.0.0.1", "127.0.0.1", "", "::1"]),
    "authentication_token": st.sampled_from([NODE_TOKEN, NODE_TOKEN, "", "x"]),
    "current_epoch": st.integers(-1, 3),
    "model_definition": st.sampled_from(["", '{"type": "mlp"}', "{bad", "[1]"]),
}


def messages(descriptor, depth: int = 0) -> st.SearchStrategy:
    cls = message_factory.GetMessageClass(descriptor)
    parts = {}
    for field in descriptor.fields:
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            key, value = field.message_type.fields_by_name["key"], field.message_type.fields_by_name["value"]
            parts[field.name] = st.dictionaries(scalar(key), scalar(value), max_size=3)
        elif field.message_type is not None:
            if depth >= 2:
                continue
            inner = messages(field.message_type, depth + 1)
            parts[field.name] = st.lists(inner, max_size=2) if _repeated(field) else inner
        else:
            value = BY_NAME.get(field.name, scalar(field)) if not _repeated(field) else None
            parts[field.name] = st.lists(scalar(field), max_size=3) if _repeated(field) else value
    return st.fixed_dictionaries({}, optional=parts).map(lambda values: _build(cls, values))


def _repeated(field) -> bool:
    return field.is_repeated


def _build(cls, values):
    msg = cls()
    for name, value in values.items():
        field = cls.DESCRIPTOR.fields_by_name[name]
        target = getattr(msg, name) if (_repeated(field) or field.message_type) else None
        if isinstance(value, dict):
            target.update(value)
        elif isinstance(value, list):
            target.extend(value)
        elif field.message_type is not None:
            target.CopyFrom(value)
        else:
            setattr(msg, name, value)
    return msg


RPCS = [
    ("JobService", "SubmitJob", job_pb2.SubmitJobRequest),
    ("JobService", "GetJobStatus", job_pb2.GetJobStatusRequest),
    ("JobService", "CancelJob", job_pb2.CancelJobRequest),
    ("JobService", "StreamJobUpdates", job_pb2.GetJobStatusRequest),
    ("JobService", "ListJobs", job_pb2.ListJobsRequest),
    ("JobService", "DeleteJob", job_pb2.DeleteJobRequest),
    ("NodeService", "RegisterNode", node_pb2.RegisterNodeRequest),
    ("NodeService", "Heartbeat", node_pb2.HeartbeatRequest),
    ("NodeService", "ReportProgress", node_pb2.ReportProgressRequest),
    ("NodeService", "ReportCompletion", node_pb2.ReportCompletionRequest),
    ("NodeService", "GetNodeMetrics", node_pb2.GetNodeMetricsRequest),
    ("NodeService", "AssignJob", node_pb2.AssignJobRequest),
    ("NodeDiscoveryService", "FindNodes", node_pb2.FindNodesRequest),
    ("NodeDiscoveryService", "ListNodes", node_pb2.ListNodesRequest),
    ("NodeDiscoveryService", "GetNodeInfo", node_pb2.GetNodeInfoRequest),
    ("JobStatusService", "UpdateJobStatus", node_pb2.UpdateJobStatusRequest),
    ("JobStatusService", "ReportJobResult", node_pb2.ReportJobResultRequest),
]
GRPC_OF_HTTP = {code: status for code, status in HTTP_TO_GRPC.items()}
VALID = {
    "SubmitJob": job_pb2.SubmitJobRequest(config=job_pb2.JobConfig(job_type=1, epochs=2, batch_size=4,
                                                                  dataset_uri="builtin://iris")),
    "RegisterNode": node_pb2.RegisterNodeRequest(info=node_pb2.NodeInfo(node_id="node-9", ip_address="127.0.0.1", port=2),
                                                 authentication_token=NODE_TOKEN),
    "Heartbeat": node_pb2.HeartbeatRequest(node_id="node-1"),
    "ReportProgress": node_pb2.ReportProgressRequest(node_id="node-1", job_id="job-1",
                                                     status=job_pb2.JobStatus(current_epoch=1)),
    "ReportCompletion": node_pb2.ReportCompletionRequest(node_id="node-1", job_id="job-1",
                                                         result=job_pb2.JobResult(status=common_pb2.STATUS_COMPLETED)),
    "UpdateJobStatus": node_pb2.UpdateJobStatusRequest(node_id="node-1", job_id="job-1", current_epoch=1,
                                                       status=common_pb2.STATUS_IN_PROGRESS),
    "ReportJobResult": node_pb2.ReportJobResultRequest(node_id="node-1", job_id="job-1",
                                                       final_status=common_pb2.STATUS_FAILED),
    "GetNodeMetrics": node_pb2.GetNodeMetricsRequest(node_id="node-1"),
    "GetNodeInfo": node_pb2.GetNodeInfoRequest(node_id="node-1"),
}


def nearly_valid(rpc: str, request_cls) -> st.SearchStrategy:
    """A valid request of ``rpc`` with one (possibly nested) field taken from an arbitrary one."""
    base = VALID.get(rpc, request_cls(job_id="job-1") if "job_id" in request_cls.DESCRIPTOR.fields_by_name
                     else request_cls())
    return st.tuples(messages(request_cls.DESCRIPTOR), st.randoms(use_true_random=False)).map(
        lambda pair: _graft(base, pair[0], pair[1]))


def _graft(base, donor, rnd, depth: int = 0):
    out = type(base)()
    out.CopyFrom(base)
    present = [f for f, _ in donor.ListFields()]
    if not present:
        return out
    field = rnd.choice(present)
    if field.message_type is not None and not field.is_repeated and depth < 1 and rnd.random() < 0.7:
        getattr(out, field.name).CopyFrom(_graft(getattr(base, field.name), getattr(donor, field.name), rnd, depth + 1))
    else:
        out.ClearField(field.name)
        if field.is_repeated or field.message_type is not None:
            getattr(out, field.name).MergeFrom(getattr(donor, field.name))
        else:
            setattr(out, field.name, getattr(donor, field.name))
    return out


calls = st.one_of(*[st.tuples(st.just((svc, rpc)), messages(req.DESCRIPTOR) | nearly_valid(rpc, req))
                    for svc, rpc, req in RPCS])
auths = st.sampled_from(["right"] * 4 + ["none", "wrong"])
NODE_SERVICES = ("NodeService", "JobStatusService")


def call(stub, rpc: str, request, metadata):
    method = getattr(stub, rpc)
    if rpc == "StreamJobUpdates":
        stream = method(request, metadata=metadata, timeout=5)
        try:
            return next(stream)
        finally:
            stream.cancel()
    return method(request, metadata=metadata, timeout=10)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(rpc_request=calls, auth=auths)
def test_arbitrary_requests_never_break_central(world, rpc_request, auth):
    central, stubs, session = world
    (service, rpc), request = rpc_request
    right = session if service in NODE_SERVICES else API_KEY
    metadata = {"none": (), "right": bearer_metadata(right), "wrong": bearer_metadata("wrong")}[auth]
    try:
        call(stubs[service], rpc, request, metadata)
    except grpc.RpcError as exc:
        code = exc.code()
        if rpc == "AssignJob":
            assert code == grpc.StatusCode.UNIMPLEMENTED
            return
        assert code in ALLOWED, f"{rpc}: {code} {exc.details()}"
        trailer = dict(exc.trailing_metadata() or ()).get(ERROR_TRAILER)
        assert trailer is not None, f"{rpc}: {code} without the Error trailer"
        error = _error_in(trailer, rpc)
        if error is not None:
            assert GRPC_OF_HTTP[error.code] == code and error.message == exc.details()
    assert central.server.state.anomaly_count == 0, list(central.server.state.anomalies)
    alive = stubs["JobService"].GetJobStatus(job_pb2.GetJobStatusRequest(job_id="job-1"),
                                             metadata=bearer_metadata(API_KEY), timeout=5)
    assert alive.status.job_id == "job-1"


RESPONSES = {
    "SubmitJob": job_pb2.SubmitJobResponse, "GetJobStatus": job_pb2.GetJobStatusResponse,
    "CancelJob": job_pb2.CancelJobResponse, "DeleteJob": job_pb2.DeleteJobResponse,
    "ListJobs": job_pb2.ListJobsResponse, "StreamJobUpdates": job_pb2.JobUpdateStream,
    "RegisterNode": node_pb2.RegisterNodeResponse, "Heartbeat": node_pb2.HeartbeatResponse,
    "ReportProgress": node_pb2.ReportProgressResponse, "ReportCompletion": node_pb2.ReportCompletionResponse,
    "GetNodeMetrics": node_pb2.GetNodeMetricsResponse, "FindNodes": node_pb2.FindNodesResponse,
    "ListNodes": node_pb2.ListNodesResponse, "GetNodeInfo": node_pb2.GetNodeInfoResponse,
    "UpdateJobStatus": node_pb2.UpdateJobStatusResponse, "ReportJobResult": node_pb2.ReportJobResultResponse,
}


def _error_in(trailer: bytes, rpc: str) -> common_pb2.Error | None:
    response = RESPONSES[rpc].FromString(trailer)
    return response.error if "error" in response.DESCRIPTOR.fields_by_name else None


def test_errors_name_the_field(world):
    central, stubs, session = world
    bad = job_pb2.JobConfig(job_type=1, epochs=-3, batch_size=4, dataset_uri="builtin://iris")
    with pytest.raises(grpc.RpcError) as info:
        stubs["JobService"].SubmitJob(job_pb2.SubmitJobRequest(config=bad), metadata=bearer_metadata(API_KEY))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details() == "config.epochs must be 1..1000000 (got -3)"
    response = job_pb2.SubmitJobResponse.FromString(dict(info.value.trailing_metadata())[ERROR_TRAILER])
    assert (response.error.code, response.status) == (400, common_pb2.STATUS_ERROR)
