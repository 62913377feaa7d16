"""How big a job's model is, read from its JSON model definition alone. Pure, stdlib only.

    size = estimate('{"type": "mlp", "hidden": [256, 128]}', sample_shape=(64,), outputs=10)
    size.parameters, size.layers, size.training_bytes        # 50826, 3, 813216
    size.serving_bytes(batch=64)                             # 334376: weights + a batch's widest activations

The grammar is node/models.py's (``linear``, ``mlp`` with ``hidden``, ``cnn`` with ``conv``,
``dense`` and ``input_shape``), with its defaults; the count is exactly the number of
parameters ``build_model`` makes for the same data shape. The data shape is not known
at submit (the node reads the data set), so with ``sample_shape=None`` the estimate is a
lower bound: one input feature (a cnn: a 1x1 image with ``input_shape``'s channels, or
its whole ``input_shape`` when given) and one output. A refusal made on a lower bound is
never wrong.

It lives in ``events`` because it reads a field of ``JobSpec`` (the payload of
JobSubmitted) and needs nothing but the standard library, so central (at SubmitJob and
``cyxwiz events publish``) and the node may both import it without importing each other.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["ModelSize", "estimate", "optimizer_slots", "FLOAT_BYTES"]

FLOAT_BYTES = 4  # parameters, gradients and optimizer state are float32
# optimizer state per parameter: adam/adamw keep two moments, sgd one momentum trace
_SLOTS = {"adam": 2, "adamw": 2, "sgd": 1}
_DEFAULT_HIDDEN = [128, 64]
_DEFAULT_DENSE = [64]
_DEFAULT_CONV = [{"features": 16, "kernel": 3}]


@dataclass(frozen=True, slots=True)
class ModelSize:
    """``parameters`` (weights and biases), ``layers`` (conv and dense, the output layer
    included), ``widest`` (the largest layer width or feature count, with where it is)."""

    parameters: int
    layers: int
    widest: int
    widest_field: str
    optimizer: str = "adam"

    @property
    def training_bytes(self) -> int:
        """Parameters, their gradients and the optimizer's state, in float32."""
        return self.parameters * FLOAT_BYTES * (2 + optimizer_slots(self.optimizer))

    def serving_bytes(self, *, batch: int = 1, weights_bytes: int = 0) -> int:
        """What serving the model holds: its float32 weights (or ``weights_bytes``, the
        artifact's size, when larger: it is exact where the data shape is not known) and
        one batch of ``batch`` samples through its widest layer, in and out."""
        weights = max(self.parameters * FLOAT_BYTES, weights_bytes)
        return weights + max(1, batch) * self.widest * FLOAT_BYTES * 2


def optimizer_slots(optimizer: str) -> int:
    """State arrays the optimizer keeps per parameter (an unknown name counts as adam's)."""
    return _SLOTS.get(optimizer, 2)


def estimate(
    definition: str | Mapping[str, Any],
    *,
    sample_shape: tuple[int, ...] | None = None,
    outputs: int = 1,
    optimizer: str = "adam",
) -> ModelSize:
    """The size of the model ``definition`` builds for samples of ``sample_shape``.

    Raises ``ValueError`` naming the field when a size field is not what the grammar
    allows (the node's own checks of the other fields still apply when it builds it).
    """
    spec = _parse(definition)
    kind = spec.get("type")
    if kind not in ("linear", "mlp", "cnn"):
        raise ValueError(f"model_definition.type {kind!r} is not supported: choose linear, mlp, cnn")
    features = math.prod(sample_shape) if sample_shape is not None else 1
    widest, widest_field = features, "input features"
    parameters = layers = 0
    if kind == "cnn":
        convs = spec.get("conv", _DEFAULT_CONV)
        if not isinstance(convs, list) or not convs:
            raise ValueError(f"model_definition.conv must be a non-empty list of layers (got {_short(convs)})")
        h, w, c = _image(spec, sample_shape)
        for i, layer in enumerate(convs):
            features_i, kernel, stride, pool = _conv(layer, i)
            parameters += kernel * kernel * c * features_i + features_i
            h, w = max(1, -(-h // stride) // pool), max(1, -(-w // stride) // pool)
            c = features_i
            if features_i > widest:
                widest, widest_field = features_i, f"conv[{i}].features"
        layers += len(convs)
        fan_in = h * w * c
    else:
        fan_in = features
    field = {"mlp": "hidden", "cnn": "dense"}.get(kind)
    widths = _positive_ints(spec.get(field, _DEFAULT_HIDDEN if kind == "mlp" else _DEFAULT_DENSE), field) if field else []
    for i, width in enumerate(widths):
        parameters += fan_in * width + width
        fan_in = width
        if width > widest:
            widest, widest_field = width, f"{field}[{i}]"
    parameters += fan_in * outputs + outputs
    return ModelSize(parameters=parameters, layers=layers + len(widths) + 1, widest=widest,
                     widest_field=widest_field, optimizer=optimizer)


def _parse(definition: str | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(definition, Mapping):
        return dict(definition)
    try:
        value = json.loads(definition)
    except ValueError as exc:
        raise ValueError(f"model_definition is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ValueError(f"model_definition must be a JSON object (got {type(value).__name__})")
    return value


def _image(spec: dict[str, Any], sample_shape: tuple[int, ...] | None) -> tuple[int, int, int]:
    shape = spec.get("input_shape")
    if shape is not None:
        shape = _positive_ints(shape, "input_shape")
        if len(shape) not in (2, 3):
            raise ValueError(f"model_definition.input_shape {shape} must be [height, width] or [height, width, channels]")
    elif sample_shape is not None and len(sample_shape) in (2, 3):
        shape = list(sample_shape)
    else:
        shape = [1, 1, 1]  # unknown: the smallest image
    h, w, c = (*shape, 1) if len(shape) == 2 else shape
    return h, w, c


def _conv(layer: Any, i: int) -> tuple[int, int, int, int]:
    if not isinstance(layer, Mapping):
        raise ValueError(f"model_definition.conv[{i}] must be an object like {{\"features\": 16, \"kernel\": 3}}")
    values = []
    for name, default in (("features", None), ("kernel", 3), ("stride", 1), ("pool", 1)):
        value = layer.get(name, default)
        if not _positive_int(value):
            raise ValueError(f"model_definition.conv[{i}].{name} must be a positive integer (got {_short(value)})")
        values.append(value)
    return values[0], values[1], values[2], values[3]


def _positive_ints(value: Any, field: str) -> list[int]:
    if not isinstance(value, list) or not all(_positive_int(v) for v in value):
        raise ValueError(f"model_definition.{field} must be a list of positive integers (got {_short(value)})")
    return list(value)


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
