"""Deployments for :class:`central.client.Client`: deploy a completed job's model, follow
it, and predict with it (through the node's InferenceService that central names).

    with Client() as client:
        d = client.deploy(job_id)                  # waits for RUNNING
        probs = client.predict(d.deployment_id, x) # x: [n, features] or one sample
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import grpc
import numpy as np

from protos import common_pb2, deployment_pb2 as dp, deployment_pb2_grpc as dpg, inference_pb2, inference_pb2_grpc
from protos.trailers import code_of

__all__ = ["DeploymentCalls", "DeploymentInfo"]

STATUS_NAMES = {v: k.removeprefix("DEPLOYMENT_STATUS_").lower() for k, v in dp.DeploymentStatus.items()}


@dataclass(frozen=True)
class DeploymentInfo:
    deployment_id: str
    status: str  # pending, loading, running, stopped, failed
    model_id: str
    node_id: str
    http_endpoint: str
    grpc_endpoint: str
    message: str

    @classmethod
    def from_proto(cls, d: dp.Deployment) -> "DeploymentInfo":
        return cls(d.deployment_id, STATUS_NAMES.get(d.status, "unknown"), d.config.model.model_id,
                   d.assigned_node.node_id, d.endpoint_url, d.config.model.metadata.get("grpc_endpoint", ""),
                   d.status_message)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


class DeploymentCalls:
    """Mixed into Client: needs ``_channel``, ``_call``, ``_metadata``, ``timeout``."""

    @property
    def _deploy_stub(self) -> dpg.DeploymentServiceStub:
        return dpg.DeploymentServiceStub(self._channel)

    def deploy(self, job_id: str, *, deployment_id: str = "", name: str = "", node: str = "",
               max_batch: int | None = None, runtime_params: dict[str, str] | None = None, wait: bool = True,
               timeout: float = 300.0, device: str | None = None) -> DeploymentInfo:
        """Deploy job ``job_id``'s model; with ``wait`` return once it is RUNNING (or raise if it failed).
        ``device`` (``cpu``, ``cuda``, ...): place it on a node with that kind of device
        (``config.requirements.required_device``); the node serves on its first device."""
        from central.client import ClientError

        params = dict(runtime_params or {})
        if max_batch is not None:
            params["max_batch_size"] = str(max_batch)
        config = dp.DeploymentConfig(deployment_id=deployment_id, node_id=node, runtime_params=params,
                                     model=dp.ModelInfo(model_id=job_id, name=name))
        if device is not None:
            kinds = [n.removeprefix("DEVICE_").lower() for n in common_pb2.DeviceType.keys() if n != "DEVICE_UNKNOWN"]
            if device.strip().lower() not in kinds:
                raise ClientError(f"device {device[:40]!r} is unknown: use one of {', '.join(kinds)}", 400)
            config.requirements.required_device = common_pb2.DeviceType.Value("DEVICE_" + device.strip().upper())
        info = DeploymentInfo.from_proto(self._call(self._deploy_stub.CreateDeployment,
                                                    dp.CreateDeploymentRequest(config=config)).deployment)
        deadline = time.monotonic() + timeout
        while wait and info.status in ("pending", "loading"):
            if time.monotonic() > deadline:
                raise ClientError(f"deployment {info.deployment_id} is still {info.status} after {timeout:.0f}s")
            time.sleep(0.1)
            info = self.deployment(info.deployment_id)
        if wait and info.status != "running":
            raise ClientError(f"deployment {info.deployment_id} {info.status}: {info.message}", 409)
        return info

    def deployment(self, deployment_id: str) -> DeploymentInfo:
        got = self._call(self._deploy_stub.GetDeployment, dp.GetDeploymentRequest(deployment_id=deployment_id))
        return DeploymentInfo.from_proto(got.deployment)

    def deployments(self) -> list[DeploymentInfo]:
        got = self._call(self._deploy_stub.ListDeployments, dp.ListDeploymentsRequest(page_size=1000))
        return [DeploymentInfo.from_proto(d) for d in got.deployments]

    def stop_deployment(self, deployment_id: str) -> DeploymentInfo:
        got = self._call(self._deploy_stub.StopDeployment, dp.StopDeploymentRequest(deployment_id=deployment_id))
        return DeploymentInfo.from_proto(got.deployment)

    def delete_deployment(self, deployment_id: str) -> None:
        self._call(self._deploy_stub.DeleteDeployment, dp.DeleteDeploymentRequest(deployment_id=deployment_id))

    def predict(self, deployment_id: str, x) -> np.ndarray:
        """The model's output for ``x`` (one sample, or a batch with a leading dimension): class
        probabilities for a classifier. Sent to the node's InferenceService with the API key."""
        from central.client import ClientError, error_for

        info = self.deployment(deployment_id)
        if info.status != "running" or not info.grpc_endpoint:
            raise ClientError(f"deployment {deployment_id} is {info.status}: {info.message}", 409)
        array = np.ascontiguousarray(np.asarray(x, dtype="<f4"))
        tensor = inference_pb2.TensorData(name="input", shape=list(array.shape) or [1],
                                          dtype=common_pb2.DATA_TYPE_FLOAT32, data=array.tobytes())
        with grpc.insecure_channel(info.grpc_endpoint) as channel:
            try:
                answer = inference_pb2_grpc.InferenceServiceStub(channel).Infer(
                    inference_pb2.InferRequest(deployment_id=deployment_id, inputs=[tensor]),
                    timeout=self.timeout, metadata=self._metadata)
            except grpc.RpcError as exc:
                raise error_for(code_of(exc) or 503, f"{info.grpc_endpoint}: {exc.details() or exc.code().name}") from None
        out = answer.outputs[0]
        return np.frombuffer(out.data, "<f4").reshape(tuple(out.shape))
