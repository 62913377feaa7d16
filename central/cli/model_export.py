"""A trained model artifact as safetensors, for use outside cyxwiz: ``cyxwiz models get JOB
--format safetensors``.

The artifact (written by the node's trainer) is ``b"CYXTREE1"``, an 8-byte little-endian
header length, a JSON header (``meta`` and one entry per array: key path, dtype, shape,
offset, length) and the arrays' bytes. The safetensors file holds the same arrays named
``dense_0.w``, ``out.b``, ... and, in its string metadata, the model definition, sample
shape, output width, task and class names (JSON text each), so the model can be rebuilt
anywhere (README: "Using a trained model in plain Python").
"""

from __future__ import annotations

import json
import re
import struct

import numpy as np

__all__ = ["ArtifactError", "to_safetensors"]

MAGIC = b"CYXTREE1"
_PATH = re.compile(r"\['([^']+)'\]")


class ArtifactError(ValueError):
    """The bytes are not a cyxwiz model artifact."""


def _arrays(data: bytes) -> tuple[dict, dict[str, np.ndarray]]:
    if not data.startswith(MAGIC) or len(data) < 16:
        raise ArtifactError("not a cyxwiz model artifact (bad magic bytes)")
    (length,) = struct.unpack_from("<Q", data, 8)
    start = 16 + length
    try:
        header = json.loads(data[16:start])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"the artifact's header is corrupt: {exc}") from exc
    arrays = {}
    for entry in header["leaves"]:
        name = ".".join(_PATH.findall(entry["path"])) or entry["path"]
        dtype = np.dtype(entry["dtype"]).newbyteorder("<")
        flat = np.frombuffer(data, dtype=dtype, count=entry["nbytes"] // dtype.itemsize, offset=start + entry["offset"])
        arrays[name] = flat.reshape(entry["shape"])
    return header.get("meta", {}), arrays


def to_safetensors(data: bytes) -> bytes:
    """The artifact's parameters and model description as safetensors bytes."""
    from safetensors.numpy import save

    meta, arrays = _arrays(data)
    if meta.get("kind") != "model":
        raise ArtifactError("these bytes hold a training checkpoint, not a final model")
    keys = ("model_definition", "sample_shape", "output_dim", "task", "class_names")
    metadata = {"format": "cyxwiz-model", **{k: json.dumps(meta.get(k)) for k in keys}}
    return save({k: np.ascontiguousarray(v) for k, v in arrays.items()}, metadata=metadata)
