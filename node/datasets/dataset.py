"""The data set value the trainer takes, its error, and the checks every source shares."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["MAX_CLASSES", "Dataset", "DatasetError", "checked_dataset"]

MAX_CLASSES = 1000  # integer labels with more distinct values than this are regression targets


class DatasetError(ValueError):
    """A data set URI could not be loaded; retrying the same URI will not help."""

    retryable = False

    def __init__(self, uri: str, problem: str) -> None:
        super().__init__(f"dataset {uri!r}: {problem}")
        self.uri = uri
        self.problem = problem


@dataclass(frozen=True, eq=False)
class Dataset:
    """Features and labels: NumPy arrays in host memory, or ``jax.Array`` on the device
    where the data was made there (``synthetic://``); the trainer takes either.

    ``x``: float32 ``[n, *sample_shape]``. ``y``: int32 ``[n]`` class indices for
    classification, float32 ``[n]`` or ``[n, targets]`` for regression.
    ``num_classes`` is 0 for regression. The task is guessed from the labels: integer
    arrays (in CSV: labels written as whole numbers, like ``3``, or as text) with
    values in 0..``MAX_CLASSES``-1 are classification; floats (``3.0``) regression.
    """

    uri: str
    x: np.ndarray
    y: np.ndarray
    task: str
    num_classes: int
    class_names: tuple[str, ...] = field(default=())

    @property
    def num_outputs(self) -> int:
        """Width of the model output: classes, or regression targets."""
        if self.task == "classification":
            return self.num_classes
        return 1 if self.y.ndim == 1 else int(self.y.shape[1])

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])

    @property
    def on_device(self) -> bool:
        """Whether the arrays live on the device (not host NumPy arrays)."""
        return not isinstance(self.x, np.ndarray)


def checked_dataset(uri: str, x: np.ndarray, y: np.ndarray, names: tuple[str, ...], task: str | None) -> Dataset:
    """The Dataset of arrays from any source, once shapes, types and labels are checked."""
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim < 2:
        raise DatasetError(uri, f"x must have one row per sample and at least one feature (shape {list(x.shape)})")
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
        raise DatasetError(uri, f"x must be numeric (dtype {x.dtype})")
    if not (np.issubdtype(y.dtype, np.number) or y.dtype == np.bool_):
        raise DatasetError(uri, f"y must be numeric (dtype {y.dtype})")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim not in (1, 2) or y.shape[0] != x.shape[0]:
        raise DatasetError(uri, f"x has {x.shape[0]} rows but y has shape {list(y.shape)}; y needs one row per sample")
    if x.shape[0] == 0:
        raise DatasetError(uri, "the data set has no samples")
    x = np.ascontiguousarray(x, dtype=np.float32)
    whole = not np.issubdtype(y.dtype, np.floating)
    integral = y.ndim == 1 and (whole or bool(np.all(np.isfinite(y) & (y == np.round(y)))))
    guess = "classification" if whole and integral and y.min() >= 0 and y.max() < MAX_CLASSES else "regression"
    task = task or guess
    if task == "regression":
        return Dataset(uri, x, np.ascontiguousarray(y, dtype=np.float32), "regression", 0)
    if not integral or y.min() < 0:
        raise DatasetError(uri, "classification labels must be whole numbers >= 0 (class indices)")
    y = y.astype(np.int64)
    num_classes = max(int(y.max()) + 1, len(names), 2)
    return Dataset(uri, x, y.astype(np.int32), "classification", num_classes, tuple(names))
