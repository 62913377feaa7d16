"""Central as control plane and gateway, end to end (central and a node as processes):
a job trained on held-out-split digits is deployed through central's DeploymentService,
predicts through central's /v1/predict and /v2 (forwarded to the node), shows in SQL,
and is marked lost when its node is killed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request

import grpc
import numpy as np
import pytest
from serving_fixtures import MLP, accuracy, digits_split, write_npz
from waiting import wait_until

from central.cli.run import rest_sql
from central.client import Client
from central.cli.stack import Stack, StackConfig
from protos import deployment_pb2 as dp
from protos import deployment_pb2_grpc as dpg

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


def post(url: str, doc: dict) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=json.dumps(doc).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_deploy_through_central_predict_at_central_and_lose_the_node(tmp_path):
    x_train, y_train, x_test, y_test = digits_split()
    config = StackConfig(home=tmp_path / "home", grpc_port=0, rest_port=0, nodes=1, node_port=0, deploy_port=0,
                         terminal_port=0, fresh_nats=True, heartbeat_s=0.5, node_timeout_s=3.0)
    with Stack(config) as stack:
        data = write_npz(tmp_path / "home" / "node-0" / "data" / "digits-train.npz", x_train, y_train)
        with Client(stack.grpc) as client:
            job_id = client.submit(dataset_uri=f"file://{data}", model=json.loads(MLP), epochs=12,
                                   hyperparameters={"learning_rate": 0.003, "seed": 0})
            assert client.wait(job_id).state == "completed"
        with grpc.insecure_channel(stack.grpc) as channel:
            stub = dpg.DeploymentServiceStub(channel)
            with pytest.raises(grpc.RpcError) as caught:
                stub.CreateDeployment(dp.CreateDeploymentRequest(config=dp.DeploymentConfig(
                    model=dp.ModelInfo(model_id="no-such-job"))))
            assert caught.value.code() == grpc.StatusCode.NOT_FOUND
            created = stub.CreateDeployment(dp.CreateDeploymentRequest(config=dp.DeploymentConfig(
                deployment_id="dep-c", model=dp.ModelInfo(model_id=job_id))))
            assert created.deployment.status == dp.DEPLOYMENT_STATUS_LOADING
            running = wait_until(lambda: (d := stub.GetDeployment(dp.GetDeploymentRequest(deployment_id="dep-c"))
                                          .deployment).status == dp.DEPLOYMENT_STATUS_RUNNING and d, timeout=60)
            assert running.endpoint_url.startswith("http://") and running.assigned_node.node_id
            listed = stub.ListDeployments(dp.ListDeploymentsRequest())
            assert listed.total_count == 1 and listed.deployments[0].deployment_id == "dep-c"

            status, body = post(stack.rest + "/v1/predict", {"deployment_id": "dep-c", "input": x_test.tolist()})
            assert status == 200, body
            assert accuracy(np.asarray(body["output"]).reshape(-1, 10).argmax(1), y_test) >= 0.9
            status, one = post(stack.rest + "/v1/predict", {"deployment_id": "dep-c", "input": x_test[0].ravel().tolist()})
            assert status == 200 and one["shape"] == [1, 10]
            flat = x_test.reshape(len(x_test), -1)
            status, v2 = post(stack.rest + "/v2/models/dep-c/infer", {"inputs": [
                {"name": "input", "datatype": "FP32", "shape": list(flat.shape), "data": flat.ravel().tolist()}]})
            assert status == 200 and accuracy(np.asarray(v2["outputs"][0]["data"]).reshape(-1, 10).argmax(1), y_test) >= 0.9
            status, bad = post(stack.rest + "/v1/predict", {"deployment_id": "dep-c", "input": [1, 2]})
            assert status == 400 and "one sample of this model has 64 values" in bad["error"]["message"]
            status, missing = post(stack.rest + "/v1/predict", {"deployment_id": "nope", "input": [1]})
            assert status == 404
            with urllib.request.urlopen(stack.rest + "/v1/deployments", timeout=10) as r:
                assert json.loads(r.read())["deployments"][0]["status"] == "running"
            rows = wait_until(lambda: rest_sql(stack.rest, "SELECT status, model_id FROM deployments")["rows"], timeout=20)
            assert rows == [["running", job_id]]
            # the node's 5 s serving windows arrive as telemetry (telemetry.deployment.<id>)
            # three answered (a batch, one sample, one OIP call) and one refused (400)
            seen: list = []

            def windows_counted() -> bool:
                seen[:] = rest_sql(stack.rest, "SELECT sum(requests), sum(errors), count(*) FROM deployment_metrics "
                                               "WHERE deployment_id = 'dep-c'")["rows"]
                return seen[0][:2] == [3, 1]
            try:
                wait_until(windows_counted, timeout=60)
            except AssertionError:
                raise AssertionError(f"deployment_metrics of dep-c: [requests, errors, windows] = {seen}") from None

            for request, code, text in (
                (dp.CreateDeploymentRequest(config=dp.DeploymentConfig(deployment_id="a b", model=dp.ModelInfo(
                    model_id=job_id))), grpc.StatusCode.INVALID_ARGUMENT, "not a valid id"),
                (dp.CreateDeploymentRequest(config=dp.DeploymentConfig(model=dp.ModelInfo(model_id=job_id), node_id="nope")),
                 grpc.StatusCode.FAILED_PRECONDITION, "node 'nope' is not online"),
                (dp.CreateDeploymentRequest(), grpc.StatusCode.INVALID_ARGUMENT, "model_id is required"),
            ):
                with pytest.raises(grpc.RpcError) as caught:
                    stub.CreateDeployment(request)
                assert caught.value.code() == code and text in caught.value.details(), caught.value.details()
            with pytest.raises(grpc.RpcError) as caught:
                stub.DeleteDeployment(dp.DeleteDeploymentRequest(deployment_id="dep-c"))
            assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "stop it first" in caught.value.details()
            with pytest.raises(grpc.RpcError) as caught:
                stub.StopDeployment(dp.StopDeploymentRequest(deployment_id="nope"))
            assert caught.value.code() == grpc.StatusCode.NOT_FOUND

            with Client(stack.grpc) as client:  # the Python client and the CLI
                info = client.deploy(job_id, deployment_id="dep-py", max_batch=32)
                assert info.status == "running" and info.grpc_endpoint
                assert accuracy(client.predict("dep-py", x_test).argmax(1), y_test) >= 0.9
                assert {d.deployment_id for d in client.deployments()} == {"dep-c", "dep-py"}
            np.save(tmp_path / "x.npy", x_test[:5].reshape(5, -1))
            cli = subprocess.run([sys.executable, "-m", "central", "predict", "dep-py", "--input", str(tmp_path / "x.npy"),
                                  "--central", stack.grpc, "--json"], capture_output=True, text=True, timeout=60)
            assert cli.returncode == 0, cli.stderr
            assert json.loads(cli.stdout)["argmax"] == client_argmax(x_test[:5], stack.grpc)
            cli = subprocess.run([sys.executable, "-m", "central", "deployments", "show", "nope", "--central", stack.grpc],
                                 capture_output=True, text=True, timeout=60)
            assert cli.returncode == 4 and "unknown deployment 'nope'" in cli.stderr

            os.kill(stack.node_parts[0].process.pid, signal.SIGKILL)
            lost = wait_until(lambda: (d := stub.GetDeployment(dp.GetDeploymentRequest(deployment_id="dep-c"))
                                       .deployment).status == dp.DEPLOYMENT_STATUS_FAILED and d, timeout=60)
            assert lost.status_message.startswith("lost: node")
            status, gone = post(stack.rest + "/v1/predict", {"deployment_id": "dep-c", "input": [0] * 64})
            assert status == 409 and "lost" in gone["error"]["message"]
            stub.StopDeployment(dp.StopDeploymentRequest(deployment_id="dep-c"))
            stub.DeleteDeployment(dp.DeleteDeploymentRequest(deployment_id="dep-c"))
            assert [d.deployment_id for d in stub.ListDeployments(dp.ListDeploymentsRequest()).deployments] == ["dep-py"]
            wait_until(lambda: rest_sql(stack.rest, "SELECT deployment_id, status FROM deployments ORDER BY 1")["rows"]
                       == [["dep-c", "deleted"], ["dep-py", "lost"]], timeout=20)


def client_argmax(x, target) -> list[int]:
    with Client(target) as client:
        return client.predict("dep-py", x.reshape(len(x), -1)).argmax(1).tolist()
