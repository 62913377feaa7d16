"""Serving processes (``--serving-processes``): more processes answer inference on the
node's deploy port (SO_REUSEPORT), each with its own copy of every deployment, and
forward everything else to the node. Against a real node with two of them, real NATS,
real gRPC servers and a model trained here: every connection gets the same answers,
the node's records count what they served, the lifecycle waits for them, auth holds on
each, and a killed one is started again and serves again."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from types import SimpleNamespace

import grpc
import numpy as np
import pytest
import pytest_asyncio
from fake_central import FakeCentral, running_node
from grpc_health.v1 import health_pb2, health_pb2_grpc
from serving_fixtures import accuracy, create_request, digits_split, infer_request, quick_model, stubs, wait_status
from waiting import eventually

from bus import CREDS_ENV, EventBus, start_server
from node.config import ConfigError, parse_config
from node.serving.processes import ServingProcesses
from protos import deployment_pb2 as dp
from protos import open_inference_pb2 as oip
from protos import open_inference_pb2_grpc as oip_grpc

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(240)]
KEY = "serving-processes-test-key"
AUTH = (("authorization", f"Bearer {KEY}"),)
CONNECTIONS = 30  # the kernel spreads connections over 3 listeners: each gets some (all but surely)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def node(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serving-processes")
    nats = start_server(tmp / "nats", port=0)
    as_node = pytest.MonkeyPatch()
    as_node.setenv(CREDS_ENV, str(nats.seed("node")))
    await (await EventBus.connect(nats.url, credentials=nats.seed("central"))).close()
    central = await FakeCentral().start()
    quick_model(tmp / "models" / "digits.cyx", epochs=12)
    try:
        async with running_node(central, nats.url, tmp, model_roots=(tmp / "models",), api_key=KEY,
                                serving_processes=2) as n:
            yield n
    finally:
        await central.stop()
        nats.kill()
        as_node.undo()


async def deploy(node, deployment_id: str) -> dp.Deployment:
    channel, deploy_stub, _ = stubs(node.endpoint("deploy"))
    async with channel:
        created = await deploy_stub.CreateDeployment(create_request(deployment_id, local_path="digits.cyx"), metadata=AUTH)
        assert created.deployment.status == dp.DEPLOYMENT_STATUS_LOADING, created
        return await wait_status(deploy_stub, deployment_id, metadata=AUTH)


async def on_many_connections(node, call):
    """``call(channel)`` on CONNECTIONS connections of their own; the answers."""
    results = []
    for _ in range(CONNECTIONS):
        # a channel of its own each: no subchannel sharing, so a new TCP connection each
        channel = grpc.aio.insecure_channel(node.endpoint("deploy"), options=[("grpc.use_local_subchannel_pool", 1)])
        async with channel:
            results.append(await call(channel))
    return results


async def test_every_connection_is_answered_and_the_node_counts_what_each_process_served(node):
    _, _, x, y = digits_split()
    d = await deploy(node, "dep-spread")
    assert d.status == dp.DEPLOYMENT_STATUS_RUNNING, d
    processes = node.serving.processes
    before = dict(processes.requests_by_process)

    async def infer(channel):
        from protos import inference_pb2_grpc

        answer = await inference_pb2_grpc.InferenceServiceStub(channel).Infer(infer_request("dep-spread", x), metadata=AUTH)
        out = answer.outputs[0]
        return np.frombuffer(out.data, "<f4").reshape(out.shape).argmax(1)

    answers = await on_many_connections(node, infer)
    assert min(accuracy(a, y) for a in answers) >= 0.9, [accuracy(a, y) for a in answers]
    assert all((a == answers[0]).all() for a in answers), "every process serves the same model"
    # both serving processes answered some of them, and the node's record counts every request
    await eventually(lambda: all(processes.requests_by_process.get(i, 0) > before.get(i, 0) for i in (1, 2)),
                     timeout=10, message=f"requests by process: {processes.requests_by_process}")
    record = node.serving.deployments.get("dep-spread")
    await eventually(lambda: record.stats.total_requests == CONNECTIONS, timeout=10,
                     message=f"the node counted {record.stats.total_requests} of {CONNECTIONS}")


async def test_control_health_and_auth_hold_on_every_connection(node):
    await deploy(node, "dep-control")

    async def calls(channel):
        got = await dp_stub(channel).GetDeployment(dp.GetDeploymentRequest(deployment_id="dep-control"), metadata=AUTH)
        listed = await dp_stub(channel).ListDeployments(dp.ListDeploymentsRequest(), metadata=AUTH)
        health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        with pytest.raises(grpc.aio.AioRpcError) as no_key:
            await oip_grpc.GRPCInferenceServiceStub(channel).ModelInfer(oip_request("dep-control"))
        with pytest.raises(grpc.aio.AioRpcError) as wrong_key:
            await dp_stub(channel).GetDeployment(dp.GetDeploymentRequest(deployment_id="dep-control"),
                                                 metadata=(("authorization", "Bearer nope"),))
        ready = await oip_grpc.GRPCInferenceServiceStub(channel).ModelReady(oip.ModelReadyRequest(name="dep-control"))
        return (got.deployment.status, "dep-control" in {d.deployment_id for d in listed.deployments},
                health.status, no_key.value.code(), wrong_key.value.code(), ready.ready)

    expected = (dp.DEPLOYMENT_STATUS_RUNNING, True, health_pb2.HealthCheckResponse.SERVING,
                grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.UNAUTHENTICATED, True)
    assert set(await on_many_connections(node, calls)) == {expected}


async def test_stop_and_delete_reach_every_process(node):
    await deploy(node, "dep-stop")
    channel, deploy_stub, _ = stubs(node.endpoint("deploy"))
    async with channel:
        await deploy_stub.StopDeployment(dp.StopDeploymentRequest(deployment_id="dep-stop"), metadata=AUTH)

    async def infer_code(channel):
        try:
            await oip_grpc.GRPCInferenceServiceStub(channel).ModelInfer(oip_request("dep-stop"), metadata=AUTH)
        except grpc.aio.AioRpcError as exc:
            return exc.code()
        return grpc.StatusCode.OK

    # the stop returned once every process let go of it: none serves it any more
    assert set(await on_many_connections(node, infer_code)) == {grpc.StatusCode.FAILED_PRECONDITION}
    channel, deploy_stub, _ = stubs(node.endpoint("deploy"))
    async with channel:
        await deploy_stub.DeleteDeployment(dp.DeleteDeploymentRequest(deployment_id="dep-stop"), metadata=AUTH)
    codes: set = set()

    async def all_not_found():
        codes.clear()
        codes.update(await on_many_connections(node, infer_code))
        return codes == {grpc.StatusCode.NOT_FOUND}

    await eventually(all_not_found, timeout=10, message=f"after the delete: {codes}")


async def test_a_job_model_from_the_object_store_and_an_id_deleted_and_created_again(node):
    """By job id the node fetches the bytes and stages them for the serving processes;
    an id deleted and created again at once is a new deployment everywhere."""
    await node.store.put_model("job-quick", (node.config.model_roots[0] / "digits.cyx").read_bytes())
    channel, deploy_stub, _ = stubs(node.endpoint("deploy"))
    async with channel:
        await deploy_stub.CreateDeployment(create_request("dep-again", "job-quick"), metadata=AUTH)
        first = await wait_status(deploy_stub, "dep-again", metadata=AUTH)
        assert first.status == dp.DEPLOYMENT_STATUS_RUNNING, first

    async def ok(channel):
        answer = await oip_grpc.GRPCInferenceServiceStub(channel).ModelInfer(oip_request("dep-again"), metadata=AUTH)
        return answer.model_name

    assert set(await on_many_connections(node, ok)) == {"dep-again"}
    channel, deploy_stub, _ = stubs(node.endpoint("deploy"))
    async with channel:
        await deploy_stub.StopDeployment(dp.StopDeploymentRequest(deployment_id="dep-again"), metadata=AUTH)
        await deploy_stub.DeleteDeployment(dp.DeleteDeploymentRequest(deployment_id="dep-again"), metadata=AUTH)
        await deploy_stub.CreateDeployment(create_request("dep-again", local_path="digits.cyx"), metadata=AUTH)
        again = await wait_status(deploy_stub, "dep-again", metadata=AUTH)
        assert again.status == dp.DEPLOYMENT_STATUS_RUNNING, again
    assert set(await on_many_connections(node, ok)) == {"dep-again"}


async def test_a_killed_serving_process_is_started_again_and_serves(node):
    await deploy(node, "dep-kill")
    processes = node.serving.processes
    old = processes.pids()
    assert len(old) == 2
    os.kill(old[0], signal.SIGKILL)
    await eventually(lambda: len(processes.pids()) == 2 and old[0] not in processes.pids(), timeout=30,
                     message="the serving process started again")
    fresh = next(p for p in processes._procs if p.pid not in old)
    await eventually(lambda: fresh.listening, timeout=120, message="the new serving process listens")
    assert "dep-kill" in fresh.ready  # it loaded what runs before it listened

    async def ok(channel):
        answer = await oip_grpc.GRPCInferenceServiceStub(channel).ModelInfer(oip_request("dep-kill"), metadata=AUTH)
        return answer.model_name

    assert set(await on_many_connections(node, ok)) == {"dep-kill"}


async def test_serving_processes_setting_is_checked():
    assert parse_config(["--serving-processes", "3"], env={}).serving_processes == 3
    assert parse_config([], env={"CYXWIZ_SERVING_PROCESSES": "2"}).serving_processes == 2
    with pytest.raises(ConfigError, match="--serving-processes / CYXWIZ_SERVING_PROCESSES: must be 0..64"):
        parse_config(["--serving-processes", "-1"], env={})
    with pytest.raises(ConfigError, match="--serving-processes: expected an integer"):
        parse_config(["--serving-processes", "many"], env={})


def dp_stub(channel):
    from protos import deployment_pb2_grpc

    return deployment_pb2_grpc.DeploymentServiceStub(channel)


def oip_request(model: str) -> oip.ModelInferRequest:
    _, _, x, _ = digits_split()
    sample = x[:4].reshape(4, -1).astype("<f4")
    tensor = oip.ModelInferRequest.InferInputTensor(name="input", datatype="FP32", shape=list(sample.shape))
    return oip.ModelInferRequest(model_name=model, inputs=[tensor], raw_input_contents=[sample.tobytes()])


async def test_the_gate_waits_for_every_live_process_and_says_which_could_not_load():
    gate = ServingProcesses(2, model_roots=(), api_key=None, session_token=lambda: None)
    try:
        for p in gate._procs:
            p.proc, p.seen = SimpleNamespace(returncode=None), time.monotonic()
        d = SimpleNamespace(deployment_id="d")
        waiting = asyncio.create_task(gate.ready(d))
        gate._procs[0].ready.add("d")
        gate._changed.set()
        await asyncio.sleep(0.05)
        assert not waiting.done(), "one of two has it: not RUNNING yet"
        gate._procs[1].failed["d"] = "out of memory"
        gate._changed.set()
        assert await asyncio.wait_for(waiting, 5) == "serving process 2 could not load it: out of memory"
        # a process that died does not hold the lifecycle up
        gate._procs[1].failed.clear()
        gate._procs[1].proc = SimpleNamespace(returncode=-9)
        assert await asyncio.wait_for(gate.ready(d), 5) is None
        # a stop waits for those that still hold it, up to its timeout
        gate._procs[0].held.add("d")
        started = time.monotonic()
        await gate.released(d, 0.3)
        assert time.monotonic() - started >= 0.3
        gate._procs[0].held.clear()
        gate._changed.set()
        await asyncio.wait_for(gate.released(d, 30), 5)
    finally:
        for p in gate._procs:
            p.proc = None
        await gate.close()
