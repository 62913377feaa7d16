"""A trained model in plain Python, without a node or central:

    from node.serving.offline import load
    model, params = load("model.safetensors")      # or the artifact from `cyxwiz models get`
    logits = model.apply(params, x)                # x: float32 [batch, *model.sample_shape]

``load`` reads either format (the cyxwiz artifact, or safetensors written by ``cyxwiz
models get JOB --format safetensors``) and rebuilds the model from its definition with
:func:`node.models.build_model`; ``apply`` is a pure JAX function (jit it for speed).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["load"]


def load(path: str | Path) -> tuple[Any, dict]:
    """The model (``init``/``apply``, ``sample_shape``, ``output_dim``) and its trained parameters."""
    from node.models import build_model, load_model

    data = Path(path).read_bytes()
    if data.startswith(b"CYXTREE1"):
        return load_model(data)
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as f:
        meta = f.metadata() or {}
        if meta.get("format") != "cyxwiz-model":
            raise ValueError(f"{path}: not a cyxwiz model (safetensors metadata has no format=cyxwiz-model)")
        params: dict[str, dict] = {}
        for key in f.keys():
            layer, _, leaf = key.partition(".")
            params.setdefault(layer, {})[leaf] = f.get_tensor(key)
    model = build_model(json.loads(meta["model_definition"]), sample_shape=tuple(json.loads(meta["sample_shape"])),
                        output_dim=int(json.loads(meta["output_dim"])))
    return model, params
