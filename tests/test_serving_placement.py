"""Central's DeploymentService against a real central (NATS, gRPC on port 0):

- placement: a deployment goes only to a node with the device kind asked for and the
  memory serving the model takes, held against what the node's latest heartbeat says is
  available (less what its deployments still loading will take); when none fits the
  answer is FAILED_PRECONDITION naming what is missing;
- hypothesis-built requests to every RPC of the service never answer INTERNAL or
  UNKNOWN, an error always carries the protocol's Error, and central keeps serving.

The nodes are registered through NodeService and heartbeat their memory; their endpoint
is a TCP listener that never answers, so a placed deployment stays loading (a slow
node) for the whole test.
"""

from __future__ import annotations

import socket

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from waiting import wait_until

from central.server import CentralConfig
from threaded_central import ThreadedCentral
from events import EpochCompleted, JobAssigned, JobCompleted, JobSpec, JobStarted, JobSubmitted
from protos import common_pb2, node_pb2, node_pb2_grpc
from protos import deployment_pb2 as dp
from protos import deployment_pb2_grpc as dpg
from protos.convert import HTTP_TO_GRPC, bearer_metadata
from protos.trailers import ERROR_TRAILER

pytestmark = pytest.mark.timeout(300)
NODE_TOKEN, API_KEY = "node-token", "api-key"
JOB = "job-big"
BIG = '{"type": "mlp", "hidden": [4096, 4096]}'  # its artifact: 65 MiB of weights
MiB, GiB = 1 << 20, 1 << 30
ALLOWED = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.NOT_FOUND,
           grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE}


class SilentNode:
    """A TCP port that accepts and never answers: central's calls to it wait."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.endpoint_port = self.sock.getsockname()[1]

    def close(self) -> None:
        self.sock.close()


async def _completed_job(bus, job_id: str, definition: str, size: int) -> None:
    await bus.append(JobSubmitted(job_id=job_id, spec=JobSpec(dataset_uri="builtin://digits", epochs=1,
                                                              model_definition=definition)))
    await bus.append(JobAssigned(job_id=job_id, node_id="trainer"))
    await bus.append(JobStarted(job_id=job_id, node_id="trainer"))
    await bus.append(EpochCompleted(job_id=job_id, node_id="trainer", epoch=1, total_epochs=1, loss=0.5))
    await bus.append(JobCompleted(job_id=job_id, node_id="trainer", artifact_uri=f"nats://cyxwiz-models/{job_id}",
                                  sha256="0" * 64, size_bytes=size))


def _device(kind: int, total: int, available: int) -> common_pb2.DeviceCapabilities:
    return common_pb2.DeviceCapabilities(device_type=kind, memory_total=total, memory_available=available)


@pytest.fixture
def world(nats_server, tmp_path):
    config = CentralConfig.load(env={}, home=tmp_path / "home", nats_url=nats_server.url, grpc_port=0, rest_port=0,
                                host="127.0.0.1", node_token=NODE_TOKEN, api_key=API_KEY, heartbeat_s=5,
                                node_timeout_s=600)
    silent = SilentNode()
    with ThreadedCentral(config) as central, grpc.insecure_channel(central.server.grpc_address) as channel:
        central.call(_completed_job(central.server.bus, JOB, BIG, 65 * MiB))
        central.call(_completed_job(central.server.bus, "job-small", '{"type": "mlp", "hidden": [16]}', 8192))
        wait_until(lambda: all((j := central.server.state.jobs.get(i)) is not None and j.status == "completed"
                               for i in (JOB, "job-small")), timeout=30)
        nodes = node_pb2_grpc.NodeServiceStub(channel)

        def register(node_id: str, ram: int, ram_free: int, devices: list[tuple[int, int, int]]) -> None:
            caps = [_device(kind, total, 0) for kind, total, _ in devices]
            info = node_pb2.NodeInfo(node_id=node_id, name=node_id, ip_address="127.0.0.1", port=silent.endpoint_port,
                                     slots=1, ram_total=ram, devices=caps)
            token = nodes.RegisterNode(node_pb2.RegisterNodeRequest(info=info, authentication_token=NODE_TOKEN)
                                       ).session_token
            status = node_pb2.NodeInfo(node_id=node_id, ram_total=ram, ram_available=ram_free,
                                       devices=[_device(kind, total, free) for kind, total, free in devices])
            nodes.Heartbeat(node_pb2.HeartbeatRequest(node_id=node_id, current_status=status),
                            metadata=bearer_metadata(token))

        yield central, dpg.DeploymentServiceStub(channel), register
    silent.close()


def create(stub, deployment_id: str, *, model: str = JOB, device: int = 0, min_vram: int = 0, node: str = "",
           params: dict | None = None):
    config = dp.DeploymentConfig(deployment_id=deployment_id, model=dp.ModelInfo(model_id=model), node_id=node,
                                 runtime_params=params or {},
                                 requirements=dp.HardwareRequirements(required_device=device, min_vram=min_vram))
    return stub.CreateDeployment(dp.CreateDeploymentRequest(config=config), metadata=bearer_metadata(API_KEY),
                                 timeout=30).deployment


def refused(stub, deployment_id: str, **kwargs) -> str:
    with pytest.raises(grpc.RpcError) as caught:
        create(stub, deployment_id, **kwargs)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION, caught.value.details()
    return caught.value.details()


def test_a_deployment_goes_only_where_its_device_and_memory_fit(world):
    central, stub, register = world
    cpu, cuda = common_pb2.DEVICE_CPU, common_pb2.DEVICE_CUDA
    # 8 GiB of RAM in all, but its latest heartbeat says 32 MiB are available
    register("node-small", 8 * GiB, 32 * MiB, [(cpu, 8 * GiB, 32 * MiB)])
    assert refused(stub, "d-none") == (
        "no online node can hold deployment 'd-none': needs 65.0 MiB of memory; "
        "the largest online node has 32.0 MiB available")
    assert refused(stub, "d-cuda", device=cuda) == (
        "no online node can hold deployment 'd-cuda': no online node has a cuda device")
    small = create(stub, "d-small", model="job-small")  # a small model fits the small node
    assert small.assigned_node.node_id == "node-small" and small.status == dp.DEPLOYMENT_STATUS_LOADING

    # 100 MiB available hold one deployment of the big model; while it loads there (the
    # node's heartbeat may not show it yet) its estimate is held against the node
    register("node-mid", 8 * GiB, 100 * MiB, [(cpu, 8 * GiB, 100 * MiB)])
    assert create(stub, "d-mid1").assigned_node.node_id == "node-mid"
    assert refused(stub, "d-mid2") == (
        "no online node can hold deployment 'd-mid2': needs 65.0 MiB of memory; "
        "the largest online node has 35.0 MiB available")
    # a node asked for by name must fit too
    assert refused(stub, "d-named", node="node-small") == (
        "node 'node-small' cannot hold deployment 'd-named': needs 65.0 MiB of memory; "
        "the largest online node has 32.0 MiB available")
    # a larger batch takes more: 4096 samples x 4096 wide x 4 bytes, in and out = 128 MiB more
    assert "needs 193.0 MiB of memory" in refused(stub, "d-batch", params={"max_batch_size": "4096"})

    register("node-gpu", 16 * GiB, 100 * MiB, [(cpu, 16 * GiB, 100 * MiB), (cuda, 80 * GiB, 70 * GiB)])
    assert "needs 90.0 GiB of memory; the largest cuda device online has 70.0 GiB available" in refused(
        stub, "d-huge", device=cuda, min_vram=90 * GiB)
    assert create(stub, "d-gpu", device=cuda).assigned_node.node_id == "node-gpu"
    assert create(stub, "d-mid2").assigned_node.node_id == "node-gpu"  # no device named: the GPU holds it
    need = 65 * MiB + 2 * 4096 * 4  # the artifact's weights, and one sample through the 4096-wide layer
    assert central.server.state.deployments["d-gpu"].memory_bytes == need
    view = central.server.deployments.available(central.server.state.nodes["node-gpu"])
    assert view.devices[1].memory_bytes == 70 * GiB - 2 * need and view.ram_bytes == 0  # 100 MiB less 130: none
    assert central.server.state.anomaly_count == 0


# --- every RPC, arbitrary requests ----------------------------------------------------------

text = st.one_of(st.sampled_from(["", "d-1", "d-small", JOB, "job-small", "node-small", "a b", "x" * 200, "ünï"]),
                 st.text(max_size=20))
ints = st.one_of(st.integers(-3, 9), st.sampled_from([-(2**31), 2**31 - 1]))  # int32 fields and enums
longs = st.one_of(st.integers(-3, 9), st.sampled_from([-(2**63), 2**63 - 1, 1 << 40, 90 << 30]))
params = st.dictionaries(st.one_of(st.sampled_from(["max_batch_size", "batching", "enable_terminal"]), text),
                         st.one_of(st.sampled_from(["", "1", "64", "4096", "99999999999", "-1", "on"]), text), max_size=4)
hardware = st.builds(dp.HardwareRequirements, min_vram=longs, min_ram=longs, min_cpu_cores=ints, required_device=ints,
                     gpu_name_preference=text)
model_infos = st.builds(dp.ModelInfo, model_id=st.one_of(st.sampled_from([JOB, "job-small", "nope"]), text),
                        name=text, source_url=st.one_of(st.just("nats://cyxwiz-models/job-small"), text),
                        local_path=text, size_bytes=longs, format=ints, source=ints, metadata=params,
                        requirements=st.one_of(st.none(), hardware))
configs = st.builds(dp.DeploymentConfig, deployment_id=text, user_id=text, type=ints, model=model_infos,
                    node_id=st.one_of(st.sampled_from(["", "node-small", "nope"]), text),
                    requirements=st.one_of(st.none(), hardware), preferred_region=text, environment_vars=params,
                    runtime_params=params, port=ints, enable_terminal=st.booleans())
requests = st.one_of(
    st.builds(lambda c: ("CreateDeployment", dp.CreateDeploymentRequest(config=c) if c else dp.CreateDeploymentRequest()),
              st.one_of(st.none(), configs)),
    st.builds(lambda i, u: ("GetDeployment", dp.GetDeploymentRequest(deployment_id=i, user_id=u)), text, text),
    st.builds(lambda u, t, s, n, p: ("ListDeployments", dp.ListDeploymentsRequest(
        user_id=u, type_filter=t, status_filter=s, page_size=n, page_token=p)), text, ints, ints, ints, text),
    st.builds(lambda i: ("StopDeployment", dp.StopDeploymentRequest(deployment_id=i)), text),
    st.builds(lambda i: ("DeleteDeployment", dp.DeleteDeploymentRequest(deployment_id=i)), text),
    st.builds(lambda i, a, b: ("GetDeploymentMetrics", dp.GetDeploymentMetricsRequest(
        deployment_id=i, start_time=a, end_time=b)), text, longs, longs),
)
RESPONSES = {
    "CreateDeployment": dp.CreateDeploymentResponse, "GetDeployment": dp.GetDeploymentResponse,
    "ListDeployments": dp.ListDeploymentsResponse, "StopDeployment": dp.StopDeploymentResponse,
    "DeleteDeployment": dp.DeleteDeploymentResponse, "GetDeploymentMetrics": dp.GetDeploymentMetricsResponse,
}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(call=requests, auth=st.sampled_from(["right"] * 4 + ["none", "wrong"]))
def test_arbitrary_requests_to_every_deployment_rpc(world, call, auth):
    central, stub, register = world
    if "node-small" not in central.server.state.nodes:
        register("node-small", 8 * GiB, 4 * GiB, [(common_pb2.DEVICE_CPU, 8 * GiB, 4 * GiB)])
    rpc, request = call
    metadata = {"none": (), "right": bearer_metadata(API_KEY), "wrong": bearer_metadata("wrong")}[auth]
    try:
        getattr(stub, rpc)(request, metadata=metadata, timeout=30)
    except grpc.RpcError as exc:
        code = exc.code()
        assert code in ALLOWED, f"{rpc}: {code} {exc.details()}"
        trailer = dict(exc.trailing_metadata() or ()).get(ERROR_TRAILER)
        assert trailer is not None, f"{rpc}: {code} without the Error trailer"
        response = RESPONSES[rpc].FromString(trailer)
        if "error" in response.DESCRIPTOR.fields_by_name:
            assert HTTP_TO_GRPC[response.error.code] == code and response.error.message == exc.details()
    assert central.server.state.anomaly_count == 0, list(central.server.state.anomalies)
    alive = stub.ListDeployments(dp.ListDeploymentsRequest(), metadata=bearer_metadata(API_KEY), timeout=10)
    assert alive.total_count >= 0


def test_client_deploy_device_asks_central_for_that_kind_of_node(world):
    from central.client import Client, ClientError

    central, stub, register = world
    cpu, cuda = common_pb2.DEVICE_CPU, common_pb2.DEVICE_CUDA
    register("node-cpu", 8 * GiB, 4 * GiB, [(cpu, 8 * GiB, 4 * GiB)])
    register("node-gpu", 8 * GiB, 4 * GiB, [(cpu, 8 * GiB, 4 * GiB), (cuda, 80 * GiB, 70 * GiB)])
    with Client(central.server.grpc_address, api_key=API_KEY) as client:
        for i in range(3):  # whichever node has the most room, a cuda deployment goes to the GPU
            got = client.deploy("job-small", deployment_id=f"d-cuda-{i}", device="cuda", wait=False)
            assert got.node_id == "node-gpu" and got.status == "loading"
        with pytest.raises(ClientError) as caught:
            client.deploy("job-small", deployment_id="d-tpu", device="tpu", wait=False)
        assert caught.value.code == 400 and "cpu, cuda" in str(caught.value)
    assert "d-tpu" not in central.server.state.deployments
