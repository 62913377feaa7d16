"""Open Inference Protocol (KServe V2) pieces shared by its gRPC and REST forms: pure.

The model name is the deployment id; each deployment has one version, "1", one input
``input`` (FP32 ``[-1, *sample_shape]``) and one output ``output`` (FP32 ``[-1, width]``:
class probabilities for a classifier).
"""

from __future__ import annotations

from typing import Any

from node.serving.deployments import Deployment
from node.serving.errors import InvalidRequest, NotFound

__all__ = [
    "EXTENSIONS", "INPUT", "OUTPUT", "SERVER_NAME", "VERSION", "check_outputs", "check_version", "model_metadata",
    "server_metadata",
]

SERVER_NAME = "cyxwiz-node"
VERSION = "1"
INPUT, OUTPUT = "input", "output"
EXTENSIONS = ("binary_tensor_data",)


def server_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("cyxwiz")
    except PackageNotFoundError:
        return "0"


def server_metadata() -> dict[str, Any]:
    return {"name": SERVER_NAME, "version": server_version(), "extensions": list(EXTENSIONS)}


def check_version(d: Deployment, version: str) -> None:
    if version not in ("", VERSION):
        raise NotFound(f"model {d.deployment_id!r} has version {VERSION} only (asked for {version[:40]!r})")


def model_metadata(d: Deployment) -> dict[str, Any]:
    """The model's metadata; a model still loading has none yet (caller raises)."""
    assert d.loaded is not None
    return {
        "name": d.deployment_id, "versions": [VERSION], "platform": "jax",
        "inputs": [{"name": INPUT, "datatype": "FP32", "shape": [-1, *d.loaded.sample_shape]}],
        "outputs": [{"name": OUTPUT, "datatype": "FP32", "shape": [-1, d.loaded.output_dim]}],
    }


def check_input_name(name: str) -> None:
    if name != INPUT:
        raise InvalidRequest(f"inputs: unknown input {name[:80]!r}: this model has one input, named {INPUT!r}")


def check_outputs(names: list[str]) -> None:
    for name in names:
        if name != OUTPUT:
            raise InvalidRequest(f"outputs: unknown output {name[:80]!r}: this model has one output, named {OUTPUT!r}")
