"""Shared parts of the serving tests: a held-out split of builtin://digits, training it
on a real node, waiting for a deployment, and small clients of each wire."""

from __future__ import annotations

import asyncio
import io
import time
from pathlib import Path

import grpc
import numpy as np

from node.datasets import load_dataset
from protos import common_pb2, deployment_pb2, deployment_pb2_grpc, inference_pb2, inference_pb2_grpc

MLP = '{"type": "mlp", "hidden": [128]}'


def digits_split(seed: int = 0, held_out: int = 300):
    """Train and held-out parts of builtin://digits (a fixed random split)."""
    d = load_dataset("builtin://digits", data_roots=[])
    order = np.random.default_rng(seed).permutation(len(d.x))
    test, train = order[:held_out], order[held_out:]
    return d.x[train], d.y[train], d.x[test], d.y[test]


def write_npz(path: Path, x: np.ndarray, y: np.ndarray) -> Path:
    buffer = io.BytesIO()
    np.savez(buffer, x=x.reshape(len(x), -1), y=y)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buffer.getvalue())
    return path


def create_request(deployment_id: str, model_id: str = "", **fields) -> deployment_pb2.CreateDeploymentRequest:
    runtime = fields.pop("runtime_params", {})
    model = deployment_pb2.ModelInfo(model_id=model_id, **fields)
    return deployment_pb2.CreateDeploymentRequest(
        config=deployment_pb2.DeploymentConfig(deployment_id=deployment_id, model=model, runtime_params=runtime)
    )


async def wait_status(stub: deployment_pb2_grpc.DeploymentServiceStub, deployment_id: str, metadata=None,
                      timeout: float = 60.0) -> deployment_pb2.Deployment:
    """The deployment once it has left PENDING/LOADING."""
    deadline = time.monotonic() + timeout
    while True:
        got = await stub.GetDeployment(deployment_pb2.GetDeploymentRequest(deployment_id=deployment_id), metadata=metadata)
        if got.deployment.status not in (deployment_pb2.DEPLOYMENT_STATUS_PENDING, deployment_pb2.DEPLOYMENT_STATUS_LOADING):
            return got.deployment
        assert time.monotonic() < deadline, f"deployment {deployment_id} still loading after {timeout}s"
        await asyncio.sleep(0.02)


def infer_request(deployment_id: str, x: np.ndarray, dtype=common_pb2.DATA_TYPE_FLOAT32, shape=None, data=None):
    tensor = inference_pb2.TensorData(
        name="input", shape=list(x.shape) if shape is None else shape, dtype=dtype,
        data=x.astype("<f4").tobytes() if data is None else data,
    )
    return inference_pb2.InferRequest(deployment_id=deployment_id, inputs=[tensor])


def stubs(endpoint: str):
    channel = grpc.aio.insecure_channel(endpoint)
    return channel, deployment_pb2_grpc.DeploymentServiceStub(channel), inference_pb2_grpc.InferenceServiceStub(channel)


def accuracy(predicted, y) -> float:
    return float((np.asarray(predicted) == np.asarray(y)).mean())


def quick_model(path: Path, epochs: int = 3) -> Path:
    """A small digits model trained in this process, written where a node can load it."""
    import json as _json

    from node.datasets import Dataset
    from node.trainer import TrainConfig, Trainer

    x, y, _, _ = digits_split()
    data = Dataset("builtin://digits", x.reshape(len(x), -1), y, "classification", 10)
    cfg = TrainConfig.from_job({"learning_rate": "0.003", "seed": "0"}, epochs=epochs, batch_size=64,
                               model_definition=_json.dumps({"type": "mlp", "hidden": [32]}))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(Trainer(cfg, data).run().model_bytes)
    return path
