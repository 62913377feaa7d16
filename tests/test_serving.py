"""Serving on a real node (real NATS, real gRPC and HTTP servers): a model trained on the
node from builtin://digits is deployed and predicts held-out digits through every wire;
the lifecycle, bad inputs, stop and delete, auth."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import aiohttp
import grpc
import numpy as np
import pytest
import pytest_asyncio
from fake_central import FakeCentral, assign, job_config, running_node
from serving_fixtures import MLP, accuracy, create_request, digits_split, infer_request, stubs, wait_status, write_npz
from waiting import eventually

from bus import CREDS_ENV, EventBus, start_server
from protos import common_pb2, deployment_pb2 as dp
from protos import open_inference_pb2 as oip
from protos import open_inference_pb2_grpc as oip_grpc

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(180)]
SCRIPTS = Path(__file__).parent / "scripts"
JOB = "job-digits"


@pytest.fixture(scope="module")
def split():
    return digits_split()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def cluster(tmp_path_factory, split):
    """One NATS, a fake central, one node; a digits model trained on that node."""
    tmp = tmp_path_factory.mktemp("serving")
    nats = start_server(tmp / "nats", port=0)
    as_node = pytest.MonkeyPatch()
    as_node.setenv(CREDS_ENV, str(nats.seed("node")))  # the node in this process connects as a node
    await (await EventBus.connect(nats.url, credentials=nats.seed("central"))).close()  # central's streams and buckets
    central = await FakeCentral().start()
    x_train, y_train, _, _ = split
    data = write_npz(tmp / "train.npz", x_train, y_train)
    (tmp / "models").mkdir()
    try:
        async with running_node(central, nats.url, tmp, model_roots=(tmp / "models",)) as node:
            job = job_config(JOB, dataset_uri=f"file://{data}", model_definition=MLP, epochs=12, batch_size=64)
            assert (await assign(node, central.record, job)).accepted
            done = await eventually(lambda: central.record.completion_of(JOB), timeout=120, message="training")
            assert done.result.status == common_pb2.STATUS_COMPLETED, done
            yield {"node": node, "sha256": done.result.model_weights_hash, "tmp": tmp}
    finally:
        await central.stop()
        nats.kill()
        as_node.undo()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def running(cluster):
    """A RUNNING deployment of the trained model, by job id and hash."""
    node = cluster["node"]
    channel, deploy, _ = stubs(node.endpoint("deploy"))
    async with channel:
        created = await deploy.CreateDeployment(create_request("dep-main", JOB, metadata={"sha256": cluster["sha256"]}))
        assert created.status == common_pb2.STATUS_SUCCESS
        assert created.deployment.status == dp.DEPLOYMENT_STATUS_LOADING
        d = await wait_status(deploy, "dep-main")
        assert d.status == dp.DEPLOYMENT_STATUS_RUNNING, d
    return {**cluster, "deployment": d, "http": f"http://127.0.0.1:{node.ports['infer_http']}"}


async def test_grpc_infer_predicts_held_out_digits(running, split):
    _, _, x, y = split
    channel, _, infer = stubs(running["node"].endpoint("deploy"))
    async with channel:
        answer = await infer.Infer(infer_request("dep-main", x))
        info = await infer.GetModelInfo(dp_model_info("dep-main"))
    out = answer.outputs[0]
    assert answer.status == common_pb2.STATUS_SUCCESS and answer.latency_ms > 0
    assert list(out.shape) == [len(x), 10] and out.dtype == common_pb2.DATA_TYPE_FLOAT32
    probs = np.frombuffer(out.data, "<f4").reshape(out.shape)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    assert accuracy(probs.argmax(1), y) >= 0.9
    assert [list(s.shape) for s in info.input_specs] == [[-1, 64]]
    assert [list(s.shape) for s in info.output_specs] == [[-1, 10]]


def dp_model_info(deployment_id: str):
    from protos import inference_pb2

    return inference_pb2.GetModelInfoRequest(deployment_id=deployment_id)


async def test_v1_predict_one_flat_sample_per_request_like_the_original_client(running, split):
    _, _, x, y = split
    async with aiohttp.ClientSession() as http:
        async with http.get(running["http"] + "/v1/deployments") as r:
            listed = await r.json()
        assert r.status == 200 and listed["count"] == len(listed["deployments"]) >= 1
        first = next(d for d in listed["deployments"] if d["deployment_id"] == "dep-main")
        assert (first["model_id"], first["type"], first["status"]) == (JOB, "local", "running")
        predicted = []
        for sample in x:
            async with http.post(running["http"] + "/v1/predict",
                                 json={"deployment_id": "dep-main", "input": sample.ravel().tolist()}) as r:
                body = await r.json()
            assert r.status == 200, body
            predicted.append(int(np.argmax(body["output"])))
        assert body["deployment_id"] == "dep-main" and body["shape"] == [1, 10] and body["latency_ms"] > 0
        # a nested batch in one request gives the same answers
        async with http.post(running["http"] + "/v1/predict", json={"deployment_id": "dep-main", "input": x.tolist()}) as r:
            batch = await r.json()
        assert batch["shape"] == [len(x), 10]
        assert np.asarray(batch["output"]).reshape(-1, 10).argmax(1).tolist() == predicted
        async with http.get(running["http"] + "/v1/deployments/dep-main") as r:
            one = await r.json()
        assert one["total_requests"] >= len(x) and one["sha256"] == running["sha256"]
    assert accuracy(predicted, y) >= 0.9


async def test_oip_rest_json_and_binary_and_grpc(running, split):
    _, _, x, y = split
    flat = x.reshape(len(x), -1).astype(np.float32)
    url = running["http"] + "/v2/models/dep-main/infer"
    async with aiohttp.ClientSession() as http:
        doc = {"id": "req-7", "inputs": [{"name": "input", "datatype": "FP32", "shape": list(flat.shape),
                                          "data": flat.ravel().tolist()}]}
        async with http.post(url, json=doc) as r:
            body = await r.json()
        assert r.status == 200 and body["id"] == "req-7" and body["model_name"] == "dep-main"
        out = body["outputs"][0]
        assert (out["name"], out["datatype"], out["shape"]) == ("output", "FP32", [len(x), 10])
        assert accuracy(np.asarray(out["data"]).reshape(-1, 10).argmax(1), y) >= 0.9
        header = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": list(flat.shape),
                                         "parameters": {"binary_data_size": flat.nbytes}}],
                             "parameters": {"binary_data_output": True}}).encode()
        async with http.post(url, data=header + flat.tobytes(),
                             headers={"Inference-Header-Content-Length": str(len(header))}) as r:
            raw = await r.read()
            n = int(r.headers["Inference-Header-Content-Length"])
        meta = json.loads(raw[:n])
        assert meta["outputs"][0]["parameters"]["binary_data_size"] == len(raw) - n
        probs = np.frombuffer(raw[n:], "<f4").reshape(meta["outputs"][0]["shape"])
        assert accuracy(probs.argmax(1), y) >= 0.9
        for path in ("/v2", "/v2/health/live", "/v2/health/ready", "/v2/models/dep-main", "/v2/models/dep-main/ready"):
            async with http.get(running["http"] + path) as r:
                assert r.status == 200, path
    async with grpc.aio.insecure_channel(running["node"].endpoint("deploy")) as channel:
        stub = oip_grpc.GRPCInferenceServiceStub(channel)
        assert (await stub.ServerLive(oip.ServerLiveRequest())).live
        assert (await stub.ModelReady(oip.ModelReadyRequest(name="dep-main"))).ready
        meta = await stub.ModelMetadata(oip.ModelMetadataRequest(name="dep-main"))
        assert [list(t.shape) for t in meta.inputs] == [[-1, 64]]
        tensor = oip.ModelInferRequest.InferInputTensor(name="input", datatype="FP32", shape=flat.shape)
        answer = await stub.ModelInfer(oip.ModelInferRequest(model_name="dep-main", id="g", inputs=[tensor],
                                                             raw_input_contents=[flat.tobytes()]))
        assert answer.id == "g" and list(answer.outputs[0].shape) == [len(x), 10]
        probs = np.frombuffer(answer.raw_output_contents[0], "<f4").reshape(-1, 10)
        assert accuracy(probs.argmax(1), y) >= 0.9
        typed = oip.ModelInferRequest.InferInputTensor(name="input", datatype="FP32", shape=flat[:5].shape)
        typed.contents.fp32_contents.extend(flat[:5].ravel().tolist())
        answer = await stub.ModelInfer(oip.ModelInferRequest(model_name="dep-main", inputs=[typed]))
        assert np.frombuffer(answer.raw_output_contents[0], "<f4").reshape(-1, 10).argmax(1).tolist() == \
            probs[:5].argmax(1).tolist()


async def test_tritonclient_unchanged_over_http_and_grpc(running, split, tmp_path):
    _, _, x, y = split
    np.save(tmp_path / "x.npy", x.reshape(len(x), -1).astype(np.float32))
    http = running["http"].removeprefix("http://")
    cmd = [sys.executable, str(SCRIPTS / "triton_client.py"), http, running["node"].endpoint("deploy"), "dep-main",
           str(tmp_path / "x.npy"), str(tmp_path / "out.json")]
    proc = await asyncio.create_subprocess_exec(*cmd, stderr=subprocess.PIPE)
    _, err = await asyncio.wait_for(proc.communicate(), 90)
    assert proc.returncode == 0, err.decode()[-3000:]
    result = json.loads((tmp_path / "out.json").read_text())
    for key in ("http_binary", "http_json", "grpc"):
        assert accuracy(result[key], y) >= 0.9, key
    assert result["http_id"] == "r-1"
    assert result["http_metadata"]["inputs"][0]["name"] == "input"
    assert result["grpc_error"][0] == "StatusCode.INVALID_ARGUMENT"
    assert "unknown input 'nope'" in result["grpc_error"][1]


async def test_list_filters_pages_and_counts_and_metrics_are_measured(running):
    channel, deploy, _ = stubs(running["node"].endpoint("deploy"))
    async with channel:
        for i in range(3):  # models that do not exist: FAILED, listed all the same
            await deploy.CreateDeployment(create_request(f"dep-missing-{i}", f"no-such-job-{i}"))
        failed = await wait_status(deploy, "dep-missing-2")
        assert failed.status == dp.DEPLOYMENT_STATUS_FAILED and failed.error.code == 404
        assert "no model nats://cyxwiz-models/no-such-job-2" in failed.status_message
        everything = await deploy.ListDeployments(dp.ListDeploymentsRequest())
        ids = [d.deployment_id for d in everything.deployments]
        assert everything.total_count == len(ids) >= 4 and "dep-main" in ids
        first = await deploy.ListDeployments(dp.ListDeploymentsRequest(page_size=2))
        assert len(first.deployments) == 2 and first.next_page_token and first.total_count == everything.total_count
        rest = await deploy.ListDeployments(dp.ListDeploymentsRequest(page_size=1000, page_token=first.next_page_token))
        assert [d.deployment_id for d in [*first.deployments, *rest.deployments]] == ids and not rest.next_page_token
        running_only = await deploy.ListDeployments(dp.ListDeploymentsRequest(status_filter=dp.DEPLOYMENT_STATUS_RUNNING))
        assert all(d.status == dp.DEPLOYMENT_STATUS_RUNNING for d in running_only.deployments)
        failed_only = await deploy.ListDeployments(dp.ListDeploymentsRequest(status_filter=dp.DEPLOYMENT_STATUS_FAILED))
        assert failed_only.total_count >= 3
        got = await deploy.GetDeployment(dp.GetDeploymentRequest(deployment_id="dep-main"))
        assert got.deployment.total_requests > 0 and got.deployment.avg_latency_ms > 0
        assert got.deployment.config.model.metadata["sha256"] == running["sha256"]
        assert got.deployment.endpoint_url == running["http"]
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await deploy.ListDeployments(dp.ListDeploymentsRequest(page_token="abc"))
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_hash_mismatch_and_local_paths(running):
    channel, deploy, _ = stubs(running["node"].endpoint("deploy"))
    tmp = running["tmp"]
    async with channel:
        await deploy.CreateDeployment(create_request("dep-badhash", JOB, metadata={"sha256": "0" * 64}))
        bad = await wait_status(deploy, "dep-badhash")
        assert bad.status == dp.DEPLOYMENT_STATUS_FAILED and bad.error.code == 409
        assert f"expected {'0' * 64}" in bad.status_message
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await deploy.CreateDeployment(create_request("dep-dots", local_path="../train.npz"))
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "'..' is not allowed" in caught.value.details()
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await deploy.CreateDeployment(create_request("dep-outside", local_path=str(tmp / "train.npz")))
        assert "is not under the node's model roots" in caught.value.details()
        (tmp / "models" / "notamodel.bin").write_bytes(b"hello")
        await deploy.CreateDeployment(create_request("dep-junk", local_path="notamodel.bin"))
        junk = await wait_status(deploy, "dep-junk")
        assert junk.status == dp.DEPLOYMENT_STATUS_FAILED and "not a cyxwiz model artifact" in junk.status_message
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await deploy.CreateDeployment(create_request("dep-url", source_url="https://example.com/model.bin"))
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    async with aiohttp.ClientSession() as http:
        async with http.post(running["http"] + "/v1/predict", json={"deployment_id": "dep-badhash", "input": [0] * 64}) as r:
            assert r.status == 409 and "failed" in (await r.json())["error"]["message"]
