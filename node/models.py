"""Models built from a job's JSON model definition: pure init/apply functions in JAX.

A definition is a JSON object with a ``type`` and that type's fields:

- ``{"type": "linear"}``: one dense layer (linear or logistic/softmax regression).
- ``{"type": "mlp", "hidden": [128, 64], "activation": "relu", "dropout": 0.0}``; ``"bias": false``
  leaves out the bias terms (fewer memory passes per step on a GPU)
- ``{"type": "cnn", "conv": [{"features": 16, "kernel": 3, "stride": 1, "pool": 1}, ...],
  "dense": [64], "activation": "relu", "dropout": 0.0, "input_shape": [8, 8, 1]}``:
  "same"-padded NHWC convolutions, each optionally followed by a max pool of
  ``pool`` x ``pool``, then dense layers. ``input_shape`` ([H, W] or [H, W, C])
  reshapes flat samples; it may be left out when the data is already image-shaped.

The output width comes from the data (classes, or regression targets), never from the
definition. The grammar's rules are ``events.jobspec.normalise_model`` (central checks the
same at submit); what depends on the data's shape is checked here. A definition that does
not fit raises ``ModelDefinitionError`` naming the field.
Parameters are nested dicts of float32 arrays; ``apply`` computes in the dtype asked
(bfloat16 casts parameters and inputs, the output is always float32).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from events.jobspec import MODEL_TYPES, ModelDefinitionError, normalise_model, parse_model_definition

__all__ = ["ACTIVATIONS", "MODEL_TYPES", "Model", "ModelDefinitionError", "build_model", "load_model",
           "parse_model_definition"]

Params = dict[str, dict[str, jax.Array]]

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": jax.nn.relu,
    "gelu": jax.nn.gelu,
    "silu": jax.nn.silu,
    "tanh": jnp.tanh,
    "sigmoid": jax.nn.sigmoid,
    "elu": jax.nn.elu,
    "leaky_relu": jax.nn.leaky_relu,
}
# He initialisation for the rectifier family, LeCun for the rest.
_INIT_GAIN = {"relu": 2.0, "gelu": 2.0, "silu": 2.0, "elu": 2.0, "leaky_relu": 2.0}



@dataclass(frozen=True)
class Model:
    """A model fitted to one data shape.

    ``init(key) -> params``; ``apply(params, x, key=None, dtype=jnp.float32) -> out``
    maps a batch ``x`` of shape ``[batch, *sample_shape]`` to float32 ``[batch,
    output_dim]``. ``key`` turns dropout on (training); ``None`` is evaluation.
    """

    definition: dict[str, Any]
    sample_shape: tuple[int, ...]
    output_dim: int
    init: Callable[[jax.Array], Params]
    apply: Callable[..., jax.Array]



def build_model(
    definition: str | Mapping[str, Any], *, sample_shape: tuple[int, ...], output_dim: int
) -> Model:
    """Check ``definition`` against the data and return its init/apply pair.

    ``sample_shape`` is the shape of one sample (``x.shape[1:]``); ``output_dim`` the
    number of classes or regression targets.
    """
    spec = normalise_model(definition)
    sample_shape = tuple(int(d) for d in sample_shape)
    features = math.prod(sample_shape)
    if spec["type"] == "cnn":
        image = _image_shape(spec, sample_shape, features)
        layers = _cnn_layers(spec, image)
        body_in = image
    else:
        layers = []
        body_in = (features,)
    widths = spec.get("hidden", spec.get("dense", []))
    gain = _INIT_GAIN.get(spec.get("activation", ""), 1.0)
    activation = ACTIVATIONS[spec.get("activation", "relu")]
    dropout = float(spec.get("dropout", 0.0))
    flat_in = math.prod(layers[-1]["out_shape"]) if layers else features
    use_bias = spec.get("bias", True)

    def init(key: jax.Array) -> Params:
        params: Params = {}
        for i, conv in enumerate(layers):
            kh, kw = conv["kernel"]
            fan_in = kh * kw * conv["in_features"]
            shape = (kh, kw, conv["in_features"], conv["features"])
            params[f"conv_{i}"] = _dense_init(jax.random.fold_in(key, i), shape, fan_in, gain)
        fan_in = flat_in
        for i, width in enumerate(widths):
            k = jax.random.fold_in(key, 1000 + i)
            params[f"dense_{i}"] = _dense_init(k, (fan_in, width), fan_in, gain)
            fan_in = width
        params["out"] = _dense_init(jax.random.fold_in(key, 2000), (fan_in, output_dim), fan_in, 1.0)
        if not use_bias:
            params = {name: {"w": layer["w"]} for name, layer in params.items()}
        return params

    def apply(params: Params, x: jax.Array, key: jax.Array | None = None, dtype: Any = jnp.float32) -> jax.Array:
        p = jax.tree.map(lambda a: a.astype(dtype), params)
        h = x.astype(dtype).reshape((x.shape[0], *body_in))
        for i, conv in enumerate(layers):
            h = lax.conv_general_dilated(
                h, p[f"conv_{i}"]["w"], window_strides=conv["stride"], padding="SAME",
                dimension_numbers=("NHWC", "HWIO", "NHWC"),
            )
            h = activation(h + p[f"conv_{i}"]["b"])
            if conv["pool"] > 1:
                window = (1, conv["pool"], conv["pool"], 1)
                h = lax.reduce_window(h, -jnp.inf, lax.max, window, window, "VALID")
        h = h.reshape((h.shape[0], -1))
        for i in range(len(widths)):
            h = activation(_dense(h, p[f"dense_{i}"]))
            if key is not None and dropout > 0.0:
                keep = jax.random.bernoulli(jax.random.fold_in(key, i), 1.0 - dropout, h.shape)
                h = jnp.where(keep, h / (1.0 - dropout), 0).astype(dtype)
        return _dense(h, p["out"]).astype(jnp.float32)

    return Model(dict(spec), sample_shape, int(output_dim), init, apply)


def _dense(h: jax.Array, layer: dict[str, jax.Array]) -> jax.Array:
    out = h @ layer["w"]
    return out + layer["b"] if "b" in layer else out


def load_model(model_bytes: bytes) -> tuple[Model, Params]:
    """The model and trained parameters in a ``TrainResult.model_bytes``."""
    from node import checkpoint

    meta = checkpoint.read_meta(model_bytes)
    if meta.get("kind") != "model":
        raise checkpoint.CheckpointError("these bytes hold a training checkpoint or other tree, not a model")
    model = build_model(
        meta["model_definition"], sample_shape=tuple(meta["sample_shape"]), output_dim=meta["output_dim"]
    )
    params, _ = checkpoint.from_bytes(model_bytes, jax.eval_shape(model.init, jax.random.PRNGKey(0)))
    return model, params


def _dense_init(key: jax.Array, shape: tuple[int, ...], fan_in: int, gain: float) -> dict[str, jax.Array]:
    std = math.sqrt(gain / max(fan_in, 1))
    w = std * jax.random.truncated_normal(key, -2.0, 2.0, shape, jnp.float32)
    return {"w": w, "b": jnp.zeros(shape[-1], jnp.float32)}



def _image_shape(spec: dict[str, Any], sample_shape: tuple[int, ...], features: int) -> tuple[int, int, int]:
    shape = spec.get("input_shape")
    if shape is None:
        if len(sample_shape) not in (2, 3):
            raise ModelDefinitionError(
                "model_definition.input_shape", f"is required for a cnn when the data is not "
                f"image-shaped (samples have shape {list(sample_shape)}): give [height, width, channels]"
            )
        shape = list(sample_shape)
    elif math.prod(shape) != features:
        raise ModelDefinitionError(
            "model_definition.input_shape", f"{shape} has {math.prod(shape)} values but the data has {features} features"
        )
    h, w, c = (*shape, 1) if len(shape) == 2 else shape
    return (h, w, c)


def _cnn_layers(spec: dict[str, Any], image: tuple[int, int, int]) -> list[dict[str, Any]]:
    h, w, c = image
    layers = []
    for i, conv in enumerate(spec["conv"]):
        h, w = -(-h // conv["stride"]), -(-w // conv["stride"])
        if conv["pool"] > min(h, w):
            raise ModelDefinitionError(
                f"model_definition.conv[{i}].pool", f"{conv['pool']} is larger than the "
                f"{h}x{w} feature map it pools: use a smaller pool or fewer layers"
            )
        h, w = h // conv["pool"], w // conv["pool"]
        layers.append({
            "kernel": (conv["kernel"], conv["kernel"]), "stride": (conv["stride"], conv["stride"]),
            "pool": conv["pool"], "in_features": c, "features": conv["features"], "out_shape": (h, w, conv["features"]),
        })
        c = conv["features"]
    return layers
