"""Serving refuses what is wrong with the right status and a message that names it, on
every wire; LOADING, STOPPED and a full queue; stop drains; delete; auth on and off."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import grpc
import numpy as np
import pytest
import pytest_asyncio
from fake_central import FakeCentral, running_node
from serving_fixtures import create_request, infer_request, quick_model, stubs, wait_status

from bus import CREDS_ENV, EventBus, start_server
from protos import common_pb2, deployment_pb2 as dp
from protos import open_inference_pb2 as oip
from protos import open_inference_pb2_grpc as oip_grpc

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(180)]
KEY = "s3cret-key"
ONE = [0.5] * 64


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def nodes(tmp_path_factory):
    """Two nodes on one NATS: ``open`` (no API key) and ``locked`` (API key); a model file each can load."""
    tmp = tmp_path_factory.mktemp("serving-errors")
    quick_model(tmp / "models" / "digits.cyx")
    nats = start_server(tmp / "nats", port=0)
    as_node = pytest.MonkeyPatch()
    as_node.setenv(CREDS_ENV, str(nats.seed("node")))  # the node in this process connects as a node
    await (await EventBus.connect(nats.url, credentials=nats.seed("central"))).close()  # central's streams and buckets
    central = await FakeCentral().start()
    try:
        async with running_node(central, nats.url, tmp / "a", model_roots=(tmp / "models",)) as open_node, \
                running_node(central, nats.url, tmp / "b", model_roots=(tmp / "models",), api_key=KEY) as locked:
            yield {"open": open_node, "locked": locked}
    finally:
        await central.stop()
        nats.kill()
        as_node.undo()


def http_url(node) -> str:
    return f"http://127.0.0.1:{node.ports['infer_http']}"


async def deploy(node, deployment_id: str, metadata=None, **runtime) -> dp.Deployment:
    channel, stub, _ = stubs(node.endpoint("deploy"))
    async with channel:
        request = create_request(deployment_id, local_path="digits.cyx",
                                 runtime_params={k: str(v) for k, v in runtime.items()})
        await stub.CreateDeployment(request, metadata=metadata)
        return await wait_status(stub, deployment_id, metadata=metadata)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def live(nodes):
    d = await deploy(nodes["open"], "dep-live")
    assert d.status == dp.DEPLOYMENT_STATUS_RUNNING, d
    return nodes["open"]


V1_BAD = [
    (b"{not json", 400, "body is not valid JSON"),
    (b"[1, 2]", 400, "body must be a JSON object"),
    (json.dumps({"input": ONE}).encode(), 400, "deployment_id is required"),
    (json.dumps({"deployment_id": "nope", "input": ONE}).encode(), 404, "no deployment 'nope'"),
    (json.dumps({"deployment_id": "dep-live"}).encode(), 400, "input is required"),
    (json.dumps({"deployment_id": "dep-live", "input": [1, 2, 3]}).encode(), 400,
     "input: 3 values; one sample of this model has 64 values (shape [64])"),
    (json.dumps({"deployment_id": "dep-live", "input": [[1, 2], [3]]}).encode(), 400, "ragged or non-numeric"),
    (json.dumps({"deployment_id": "dep-live", "input": ["a"] * 64}).encode(), 400, "ragged or non-numeric"),
    (json.dumps({"deployment_id": "dep-live", "input": 5}).encode(), 400, "expected a list of numbers"),
    (json.dumps({"deployment_id": "dep-live", "input": []}).encode(), 400, "input: 0 values"),
    (json.dumps({"deployment_id": "dep-live", "input": [[0.0] * 63] * 2}).encode(), 400,
     "shape [2, 63] is neither one sample nor a batch"),
]


async def test_v1_predict_refuses_bad_requests_naming_the_problem(live):
    async with aiohttp.ClientSession() as http:
        for body, status, text in V1_BAD:
            async with http.post(http_url(live) + "/v1/predict", data=body) as r:
                answer = await r.json()
            assert r.status == status, (body, answer)
            assert text in answer["error"]["message"], (body, answer)
            assert answer["error"]["code"] == status and answer["error"]["type"]
        async with http.get(http_url(live) + "/v1/deployments/nope") as r:
            assert r.status == 404


GRPC_BAD = [
    (lambda x: infer_request("nope", x), grpc.StatusCode.NOT_FOUND, "no deployment 'nope'"),
    (lambda x: infer_request("dep-live", x, dtype=99), grpc.StatusCode.INVALID_ARGUMENT, "dtype 99 is not supported"),
    (lambda x: infer_request("dep-live", x, data=b"\0" * 10), grpc.StatusCode.INVALID_ARGUMENT,
     "10 bytes do not match shape [2, 64] of float32 (128 values x 4 bytes = 512 bytes)"),
    (lambda x: infer_request("dep-live", x, shape=[-2, 64]), grpc.StatusCode.INVALID_ARGUMENT, "negative dimension"),
    (lambda x: infer_request("dep-live", x, shape=[]), grpc.StatusCode.INVALID_ARGUMENT, "shape must not be empty"),
    (lambda x: infer_request("dep-live", x[:0]), grpc.StatusCode.INVALID_ARGUMENT, "the batch is empty"),
    (lambda x: infer_request("dep-live", x, shape=[4, 32]), grpc.StatusCode.INVALID_ARGUMENT,
     "shape [4, 32] is neither one sample nor a batch"),
]


async def test_grpc_infer_refuses_bad_tensors(live):
    x = np.zeros((2, 64), np.float32)
    channel, _, infer = stubs(live.endpoint("deploy"))
    async with channel:
        for build, code, text in GRPC_BAD:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await infer.Infer(build(x))
            assert caught.value.code() == code and text in caught.value.details(), caught.value
        none = infer_request("dep-live", x)
        del none.inputs[:]
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await infer.Infer(none)
        assert "exactly one input tensor (got 0)" in caught.value.details()
        as64 = infer_request("dep-live", x, dtype=common_pb2.DATA_TYPE_FLOAT64, data=x.astype("<f8").tobytes())
        assert list((await infer.Infer(as64)).outputs[0].shape) == [2, 10]  # float64 is converted


async def test_oip_refuses_bad_requests(live):
    url = http_url(live) + "/v2/models/dep-live/infer"

    def doc(**tensor):
        return {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64], "data": ONE, **tensor}]}

    cases = [
        (doc(name="x"), {}, 400, "unknown input 'x'"),
        (doc(datatype="BYTES"), {}, 400, "datatype 'BYTES' is not supported"),
        (doc(shape=[2, 64]), {}, 400, "64 values do not match shape [2, 64]"),
        ({"inputs": []}, {}, 400, "inputs must be a list with one tensor"),
        ({**doc(), "outputs": [{"name": "probs"}]}, {}, 400, "unknown output 'probs'"),
        (doc(parameters={"binary_data_size": 999}), {}, 400, "binary_data_size 999 does not match"),
    ]
    async with aiohttp.ClientSession() as http:
        for body, headers, status, text in cases:
            async with http.post(url, json=body, headers=headers) as r:
                answer = await r.json()
            assert r.status == status and text in answer["error"], (body, answer)
        async with http.post(url, data=b"{}", headers={"Inference-Header-Content-Length": "99"}) as r:
            assert r.status == 400 and "Inference-Header-Content-Length" in (await r.json())["error"]
        for path, status in (("/v2/models/nope/infer", 404), ("/v2/models/dep-live/versions/2/infer", 404)):
            async with http.post(http_url(live) + path, json=doc()) as r:
                assert r.status == status, path
        async with http.get(http_url(live) + "/v2/models/nope/ready") as r:
            assert r.status == 404
    async with grpc.aio.insecure_channel(live.endpoint("deploy")) as channel:
        stub = oip_grpc.GRPCInferenceServiceStub(channel)
        tensor = oip.ModelInferRequest.InferInputTensor(name="input", datatype="FP32", shape=[1, 64])
        for request, text in (
            (oip.ModelInferRequest(model_name="dep-live", inputs=[tensor]), "no data"),
            (oip.ModelInferRequest(model_name="dep-live", inputs=[tensor], raw_input_contents=[b"", b""]),
             "expected one entry per input"),
            (oip.ModelInferRequest(model_name="dep-live", inputs=[tensor], raw_input_contents=[b"\0" * 12]),
             "12 bytes do not match shape [1, 64]"),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.ModelInfer(request)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT and text in caught.value.details()
        assert not (await stub.ModelReady(oip.ModelReadyRequest(name="nope"))).ready


async def test_loading_is_503_with_retry_after_then_running_then_stopped_is_409(nodes):
    node = nodes["open"]
    channel, stub, infer = stubs(node.endpoint("deploy"))
    async with channel, aiohttp.ClientSession() as http:
        created = await stub.CreateDeployment(create_request("dep-cycle", local_path="digits.cyx"))
        assert created.deployment.status == dp.DEPLOYMENT_STATUS_LOADING
        async with http.post(http_url(node) + "/v1/predict", json={"deployment_id": "dep-cycle", "input": ONE}) as r:
            assert r.status == 503 and r.headers["Retry-After"] == "1"
            assert "still loading" in (await r.json())["error"]["message"]
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await infer.Infer(infer_request("dep-cycle", np.zeros((1, 64), np.float32)))
        assert caught.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.OK)
        assert (await wait_status(stub, "dep-cycle")).status == dp.DEPLOYMENT_STATUS_RUNNING
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.DeleteDeployment(dp.DeleteDeploymentRequest(deployment_id="dep-cycle"))
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "stop it first" in caught.value.details()
        stopped = await stub.StopDeployment(dp.StopDeploymentRequest(deployment_id="dep-cycle"))
        assert stopped.deployment.status == dp.DEPLOYMENT_STATUS_STOPPED and stopped.deployment.stopped_at > 0
        async with http.post(http_url(node) + "/v1/predict", json={"deployment_id": "dep-cycle", "input": ONE}) as r:
            assert r.status == 409 and "stopped" in (await r.json())["error"]["message"]
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await infer.Infer(infer_request("dep-cycle", np.zeros((1, 64), np.float32)))
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        await stub.DeleteDeployment(dp.DeleteDeploymentRequest(deployment_id="dep-cycle"))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.GetDeployment(dp.GetDeploymentRequest(deployment_id="dep-cycle"))
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_a_full_queue_is_429_and_stop_answers_every_accepted_request(nodes):
    node = nodes["open"]
    await deploy(node, "dep-small-queue", queue_size=1, batching="off", max_batch_size=1)
    url = http_url(node) + "/v1/predict"
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        async def call(deployment_id):
            async with http.post(url, json={"deployment_id": deployment_id, "input": [ONE] * 8}) as r:
                return r.status
        statuses = await asyncio.gather(*(call("dep-small-queue") for _ in range(200)))
        assert set(statuses) <= {200, 429} and statuses.count(429) > 0 and statuses.count(200) > 0
        await deploy(node, "dep-drain")
        channel, stub, _ = stubs(node.endpoint("deploy"))
        async with channel:
            calls = [asyncio.create_task(call("dep-drain")) for _ in range(200)]
            await asyncio.sleep(0.05)
            await stub.StopDeployment(dp.StopDeploymentRequest(deployment_id="dep-drain"))
            statuses = await asyncio.gather(*calls)
        assert set(statuses) <= {200, 409}, statuses  # accepted: answered; after the stop: 409


async def test_api_key_guards_deployments_and_inference_not_health(nodes):
    node = nodes["locked"]
    good = (("authorization", f"Bearer {KEY}"),)
    channel, stub, infer = stubs(node.endpoint("deploy"))
    async with channel:
        for metadata in (None, (("authorization", "Bearer wrong"),)):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.CreateDeployment(create_request("dep-k", local_path="digits.cyx"), metadata=metadata)
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.ListDeployments(dp.ListDeploymentsRequest())
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED and "API key" in caught.value.details()
        d = await deploy(node, "dep-k", metadata=good)
        assert d.status == dp.DEPLOYMENT_STATUS_RUNNING
        x = np.zeros((1, 64), np.float32)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await infer.Infer(infer_request("dep-k", x))
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert (await infer.Infer(infer_request("dep-k", x), metadata=good)).status == common_pb2.STATUS_SUCCESS
        assert len((await infer.GetModelInfo(_info("dep-k"))).input_specs) == 1  # metadata: open
        oip_stub = oip_grpc.GRPCInferenceServiceStub(channel)
        assert (await oip_stub.ModelReady(oip.ModelReadyRequest(name="dep-k"))).ready
        tensor = oip.ModelInferRequest.InferInputTensor(name="input", datatype="FP32", shape=[1, 64])
        request = oip.ModelInferRequest(model_name="dep-k", inputs=[tensor], raw_input_contents=[x.tobytes()])
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await oip_stub.ModelInfer(request)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert (await oip_stub.ModelInfer(request, metadata=good)).outputs[0].name == "output"
    base = http_url(node)
    async with aiohttp.ClientSession() as http:
        body = {"deployment_id": "dep-k", "input": ONE}
        async with http.post(base + "/v1/predict", json=body) as r:
            assert r.status == 401 and r.headers.get("Access-Control-Allow-Origin") is None
        async with http.get(base + "/v1/deployments", headers={"Authorization": "Bearer nope"}) as r:
            assert r.status == 401
        async with http.post(base + "/v1/predict", json=body, headers={"Authorization": f"Bearer {KEY}"}) as r:
            assert r.status == 200
        for path in ("/v2/health/live", "/v2/health/ready", "/v2", "/v2/models/dep-k", "/v2/models/dep-k/ready"):
            async with http.get(base + path) as r:
                assert r.status == 200, path
        async with http.post(base + "/v2/models/dep-k/infer", json={"inputs": []}) as r:
            assert r.status == 401
        async with http.options(base + "/v1/predict", headers={"Origin": "http://evil.example"}) as r:
            assert r.headers.get("Access-Control-Allow-Origin") is None


def _info(deployment_id: str):
    from protos import inference_pb2

    return inference_pb2.GetModelInfoRequest(deployment_id=deployment_id)
