"""How big a job's model is, read from its JSON model definition alone. Pure, stdlib only.

    size = estimate('{"type": "mlp", "hidden": [256, 128]}', sample_shape=(64,), outputs=10)
    size.parameters, size.layers, size.training_bytes        # 50826, 3, 813216
    size.serving_bytes(batch=64)                             # 334376: weights + a batch's widest activations

The grammar is ``events.jobspec.normalise_model``'s (``linear``, ``mlp`` with ``hidden``, ``cnn``
with ``conv``, ``dense`` and ``input_shape``), with its defaults; the count is exactly the number of
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

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from events.jobspec import normalise_model

__all__ = ["ModelSize", "estimate", "optimizer_slots", "FLOAT_BYTES"]

FLOAT_BYTES = 4  # parameters, gradients and optimizer state are float32
# optimizer state per parameter: adam/adamw keep two moments, sgd one momentum trace
_SLOTS = {"adam": 2, "adamw": 2, "sgd": 1}


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

    Raises ``events.jobspec.ModelDefinitionError`` (a ``ValueError``) naming the field
    when the definition is not what the grammar allows.
    """
    spec = normalise_model(definition)
    kind = spec["type"]
    features = math.prod(sample_shape) if sample_shape is not None else 1
    widest, widest_field = features, "input features"
    parameters = layers = 0
    if kind == "cnn":
        convs = spec["conv"]
        h, w, c = _image(spec, sample_shape)
        for i, layer in enumerate(convs):
            features_i, kernel, stride, pool = (layer[k] for k in ("features", "kernel", "stride", "pool"))
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
    widths = spec[field] if field else []
    for i, width in enumerate(widths):
        parameters += fan_in * width + width
        fan_in = width
        if width > widest:
            widest, widest_field = width, f"{field}[{i}]"
    parameters += fan_in * outputs + outputs
    return ModelSize(parameters=parameters, layers=layers + len(widths) + 1, widest=widest,
                     widest_field=widest_field, optimizer=optimizer)


def _image(spec: dict[str, Any], sample_shape: tuple[int, ...] | None) -> tuple[int, int, int]:
    shape = spec.get("input_shape")
    if shape is None:  # from the data when it is image-shaped, else unknown: the smallest image
        shape = list(sample_shape) if sample_shape is not None and len(sample_shape) in (2, 3) else [1, 1, 1]
    h, w, c = (*shape, 1) if len(shape) == 2 else shape
    return h, w, c
