"""A training run's settings: built from a job's fields, validated on construction by the
rules central checks at submit (``events.jobspec``), with errors that name the field
("hyperparameters.optimizer must be one of adam, adamw or sgd (got 'foo')")."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from events.jobspec import DTYPES, OPTIMIZERS, check_hyperparameter, parse_hyperparameters
from node.models import parse_model_definition

__all__ = ["DTYPES", "OPTIMIZERS", "TrainConfig"]

_DEFAULT_LR = {"adam": 1e-3, "adamw": 1e-3, "sgd": 1e-2}
_NOT_TRAINING = ("label_column", "name")  # hyperparameters the data loader or central reads


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
    to every that-many-th epoch (and the last).
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

    def __post_init__(self) -> None:
        _check_int("epochs", self.epochs, 1)
        _check_int("batch_size", self.batch_size, 1)
        optimizer = check_hyperparameter("optimizer", self.optimizer)
        lr = _DEFAULT_LR[optimizer] if self.learning_rate is None else self.learning_rate
        wd = (1e-4 if optimizer == "adamw" else 0.0) if self.weight_decay is None else self.weight_decay
        values = {"optimizer": optimizer, "learning_rate": lr, "weight_decay": wd, "momentum": self.momentum,
                  "seed": self.seed, "dtype": self.dtype, "validation_split": self.validation_split,
                  "steps_per_chunk": self.steps_per_chunk, "checkpoint_every": self.checkpoint_every,
                  "checkpoint_interval_s": self.checkpoint_interval_s}
        checked = {name: check_hyperparameter(name, value) for name, value in values.items()}  # events.jobspec's rules
        if not (_is_real(self.chunk_seconds) and self.chunk_seconds > 0):
            raise ValueError(f"chunk_seconds must be a number > 0 (got {self.chunk_seconds!r})")
        for name in ("learning_rate", "weight_decay", "momentum", "validation_split", "checkpoint_interval_s"):
            checked[name] = float(checked[name])
        for name, value in checked.items():
            object.__setattr__(self, name, value)
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
        """Build from a job's fields; ``hyperparameters`` values are strings as in the proto,
        read by ``events.jobspec.parse_hyperparameters`` (the rules central checks at submit).
        ``label_column`` and ``name`` are not training settings and are left out.
        """
        values = {k: v for k, v in parse_hyperparameters(hyperparameters).items() if k not in _NOT_TRAINING}
        return cls(model_definition=model_definition, epochs=epochs, batch_size=batch_size, **{**values, **overrides})


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_int(name: str, value: Any, low: int, high: int | None = None) -> None:
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= low and (high is None or value <= high)
    if not ok:
        bound = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(f"{name} must be an integer {bound} (got {value!r})")
