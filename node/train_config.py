"""A training run's settings: built from a job's fields, validated on construction with
errors that name the field ("unknown optimizer 'foo': choose adam, adamw or sgd")."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from events.devices import ALL, DEVICES, batch_problem, requested_devices
from node.models import parse_model_definition

OPTIMIZERS = ("adam", "adamw", "sgd")
DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16"}
_DEFAULT_LR = {"adam": 1e-3, "adamw": 1e-3, "sgd": 1e-2}
_HYPERPARAMETERS = (
    "optimizer", "learning_rate", "weight_decay", "momentum", "seed", "dtype",
    "validation_split", "steps_per_chunk", DEVICES,
)


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Everything that decides a training run, validated on construction.

    ``learning_rate`` None means the optimizer's default (adam/adamw 1e-3, sgd 1e-2);
    ``weight_decay`` None means 1e-4 for adamw and 0 otherwise (L2 added to the
    gradient for adam and sgd, decoupled for adamw). ``steps_per_chunk`` None sizes
    chunks to about ``chunk_seconds``. ``checkpoint_interval_s`` skips a due checkpoint
    until that many seconds of training have passed since the last one (or the start):
    a short job may end with none, its final model being stored anyway.
    ``checkpoint_every`` > 0 attaches a checkpoint
    to every that-many-th epoch (and the last). ``devices``: how many of the process's
    devices train data parallel (``events.devices.ALL``, 0: all of them); the global
    batch ``batch_size`` must divide by it.
    """

    model_definition: Mapping[str, Any]
    epochs: int
    batch_size: int
    optimizer: str = "adam"
    learning_rate: float | None = None
    weight_decay: float | None = None
    momentum: float = 0.9
    seed: int = 0
    dtype: str = "float32"
    validation_split: float = 0.1
    steps_per_chunk: int | None = None
    chunk_seconds: float = 0.1
    checkpoint_every: int = 0
    checkpoint_interval_s: float = 0.0
    devices: int = 1

    def __post_init__(self) -> None:
        _check_int("epochs", self.epochs, 1)
        _check_int("batch_size", self.batch_size, 1)
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}: choose adam, adamw or sgd")
        lr = _DEFAULT_LR[self.optimizer] if self.learning_rate is None else self.learning_rate
        if not (_is_real(lr) and lr > 0 and math.isfinite(lr)):
            raise ValueError(f"learning_rate must be a number > 0 (got {lr!r})")
        wd = (1e-4 if self.optimizer == "adamw" else 0.0) if self.weight_decay is None else self.weight_decay
        if not (_is_real(wd) and wd >= 0 and math.isfinite(wd)):
            raise ValueError(f"weight_decay must be a number >= 0 (got {wd!r})")
        if not (_is_real(self.momentum) and 0 <= self.momentum < 1):
            raise ValueError(f"momentum must be a number in [0, 1) (got {self.momentum!r})")
        _check_int("seed", self.seed, 0, 2**32 - 1)
        if self.dtype not in DTYPES:
            raise ValueError(f"unknown dtype {self.dtype!r}: choose float32 or bfloat16")
        if not (_is_real(self.validation_split) and 0 <= self.validation_split < 1):
            raise ValueError(f"validation_split must be a number in [0, 1) (got {self.validation_split!r})")
        if self.steps_per_chunk is not None:
            _check_int("steps_per_chunk", self.steps_per_chunk, 1)
        if not (_is_real(self.chunk_seconds) and self.chunk_seconds > 0):
            raise ValueError(f"chunk_seconds must be a number > 0 (got {self.chunk_seconds!r})")
        _check_int("checkpoint_every", self.checkpoint_every, 0)
        _check_int("devices", self.devices, ALL)
        problem = batch_problem(self.batch_size, self.devices)
        if problem:
            raise ValueError(problem)
        if not (_is_real(self.checkpoint_interval_s) and 0 <= self.checkpoint_interval_s < math.inf):
            raise ValueError(f"checkpoint_interval_s must be a number >= 0 (got {self.checkpoint_interval_s!r})")
        object.__setattr__(self, "checkpoint_interval_s", float(self.checkpoint_interval_s))
        object.__setattr__(self, "learning_rate", float(lr))
        object.__setattr__(self, "weight_decay", float(wd))
        object.__setattr__(self, "momentum", float(self.momentum))
        object.__setattr__(self, "validation_split", float(self.validation_split))
        object.__setattr__(self, "dtype", DTYPES[self.dtype])
        object.__setattr__(self, "model_definition", parse_model_definition(self.model_definition))

    @classmethod
    def from_job(
        cls,
        hyperparameters: Mapping[str, str],
        *,
        epochs: int,
        batch_size: int,
        model_definition: str | Mapping[str, Any],
        **overrides: Any,
    ) -> TrainConfig:
        """Build from a job's fields; ``hyperparameters`` values are strings as in the proto.

        Known hyperparameters: optimizer, learning_rate, weight_decay, momentum, seed,
        dtype, validation_split, steps_per_chunk ("auto" or a number of steps), devices
        (a number, or "all").
        """
        values: dict[str, Any] = {}
        for name, raw in hyperparameters.items():
            if name not in _HYPERPARAMETERS:
                raise ValueError(f"unknown hyperparameter {name!r}: known are {', '.join(_HYPERPARAMETERS)}")
            text = str(raw).strip()
            if name in ("optimizer", "dtype"):
                values[name] = text.lower()
            elif name == DEVICES:
                values[name] = requested_devices({name: text})
            elif name == "steps_per_chunk" and text.lower() == "auto":
                values[name] = None
            elif name in ("seed", "steps_per_chunk"):
                values[name] = _parse_number(name, text, int)
            else:
                values[name] = _parse_number(name, text, float)
        return cls(model_definition=model_definition, epochs=epochs, batch_size=batch_size, **values, **overrides)


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_int(name: str, value: Any, low: int, high: int | None = None) -> None:
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= low and (high is None or value <= high)
    if not ok:
        bound = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(f"{name} must be an integer {bound} (got {value!r})")


def _parse_number(name: str, text: str, kind: type) -> Any:
    try:
        return kind(text)
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise ValueError(f"hyperparameter {name} must be {what} (got {text!r})") from None
