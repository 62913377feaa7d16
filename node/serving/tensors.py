"""Request tensors to model input, checked: pure functions, no I/O.

A model takes float32 samples of ``sample_shape`` (what it was trained on). A request
gives either raw row-major little-endian bytes with a shape and a dtype (CyxWiz
``TensorData``, OIP ``raw_input_contents``, Triton's binary extension) or numbers (JSON,
OIP ``contents``). The rules, the same for every wire:

- the byte length must be product(shape) x item size;
- a tensor as long as one sample (flat, or of the sample's own shape) is one sample;
- otherwise the first dimension is the batch and the rest must hold one sample each;
- numeric dtypes are accepted and converted to float32; anything else is refused.

Every refusal is an :class:`InvalidRequest` whose message names the input and the rule.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from node.serving.errors import InvalidRequest

__all__ = [
    "CYXWIZ_DTYPES", "OIP_DTYPES", "cyxwiz_dtype", "from_bytes", "from_values", "oip_dtype", "as_samples",
]

# OIP datatype names (KServe V2 "Tensor Data Types") we accept.
OIP_DTYPES: dict[str, np.dtype] = {
    name: np.dtype(kind).newbyteorder("<")
    for name, kind in (
        ("FP32", "f4"), ("FP64", "f8"), ("FP16", "f2"), ("INT8", "i1"), ("INT16", "i2"), ("INT32", "i4"),
        ("INT64", "i8"), ("UINT8", "u1"), ("UINT16", "u2"), ("UINT32", "u4"), ("UINT64", "u8"),
    )
}
# The CyxWiz protocol's DataType numbers; 0 (unset) is float32, as the original node read it.
CYXWIZ_DTYPES: dict[int, np.dtype] = {
    0: np.dtype("<f4"), 1: np.dtype("<f4"), 2: np.dtype("<f8"), 3: np.dtype("<i4"), 4: np.dtype("<i8"),
    5: np.dtype("u1"),
}
_CYXWIZ_NAMES = "DATA_TYPE_FLOAT32, DATA_TYPE_FLOAT64, DATA_TYPE_INT32, DATA_TYPE_INT64, DATA_TYPE_UINT8"


def oip_dtype(name: str, what: str) -> np.dtype:
    try:
        return OIP_DTYPES[name]
    except KeyError:
        raise InvalidRequest(
            f"{what}: datatype {name!r} is not supported; send one of {', '.join(OIP_DTYPES)} (FP32 is native)"
        ) from None


def cyxwiz_dtype(number: int, what: str) -> np.dtype:
    try:
        return CYXWIZ_DTYPES[number]
    except KeyError:
        raise InvalidRequest(f"{what}: dtype {number} is not supported; send one of {_CYXWIZ_NAMES}") from None


def _shape(shape: Sequence[int], what: str) -> tuple[int, ...]:
    dims = tuple(int(d) for d in shape)
    if not dims:
        raise InvalidRequest(f"{what}: shape must not be empty (give [batch, features...] or the sample's shape)")
    if any(d < 0 for d in dims):
        raise InvalidRequest(f"{what}: shape {list(dims)} has a negative dimension")
    return dims


def from_bytes(
    data: bytes, shape: Sequence[int], dtype: np.dtype, sample_shape: tuple[int, ...], what: str,
    *, max_samples: int,
) -> np.ndarray:
    """Raw row-major bytes of ``shape`` in ``dtype`` as float32 ``[n, *sample_shape]``."""
    dims = _shape(shape, what)
    count = math.prod(dims)
    if count * dtype.itemsize != len(data):
        raise InvalidRequest(
            f"{what}: {len(data)} bytes do not match shape {list(dims)} of {dtype.name} "
            f"({count} values x {dtype.itemsize} bytes = {count * dtype.itemsize} bytes)"
        )
    _check_count(dims, sample_shape, what, max_samples)
    array = np.frombuffer(data, dtype=dtype).reshape(dims)
    return as_samples(array, sample_shape, what, max_samples=max_samples)


def from_values(
    values: Any, shape: Sequence[int] | None, sample_shape: tuple[int, ...], what: str, *, max_samples: int,
) -> np.ndarray:
    """Numbers (a flat or nested list) as float32 ``[n, *sample_shape]``; ``shape`` if given must fit."""
    if not isinstance(values, (list, tuple)):
        raise InvalidRequest(f"{what}: expected a list of numbers (got {type(values).__name__})")
    try:
        array = np.asarray(values, dtype=np.float64)
    except (ValueError, TypeError):
        raise InvalidRequest(
            f"{what}: expected numbers in a flat list or in nested lists of equal lengths (a ragged or non-numeric list)"
        ) from None
    if shape is not None:
        dims = _shape(shape, what)
        if math.prod(dims) != array.size:
            raise InvalidRequest(f"{what}: {array.size} values do not match shape {list(dims)} ({math.prod(dims)} values)")
        _check_count(dims, sample_shape, what, max_samples)
        array = array.reshape(dims)
    return as_samples(array, sample_shape, what, max_samples=max_samples)


def _check_count(dims: tuple[int, ...], sample_shape: tuple[int, ...], what: str, max_samples: int) -> None:
    features = math.prod(sample_shape)
    if math.prod(dims) > features * max_samples:
        raise InvalidRequest(f"{what}: more than {max_samples} samples in one request; split it")


def as_samples(array: np.ndarray, sample_shape: tuple[int, ...], what: str, *, max_samples: int) -> np.ndarray:
    """``array`` as float32 ``[n, *sample_shape]`` by the one-sample / leading-batch rule."""
    features = math.prod(sample_shape)
    one = f"one sample of this model has {features} values (shape {list(sample_shape)})"
    if array.ndim == 0:
        raise InvalidRequest(f"{what}: expected a list of numbers, not a single number; {one}")
    if tuple(array.shape) == sample_shape or (array.ndim == 1 and array.size == features):
        n = 1
    elif array.ndim >= 2 and math.prod(array.shape[1:]) == features:
        n = array.shape[0]
    elif array.ndim == 1:
        raise InvalidRequest(f"{what}: {array.size} values; {one}")
    else:
        raise InvalidRequest(
            f"{what}: shape {list(array.shape)} is neither one sample nor a batch of samples; {one}, "
            f"so send [batch, {', '.join(map(str, sample_shape))}]"
        )
    if n == 0:
        raise InvalidRequest(f"{what}: the batch is empty; send at least one sample")
    if n > max_samples:
        raise InvalidRequest(f"{what}: {n} samples in one request is over the limit of {max_samples}; split it")
    out = array.reshape((n, *sample_shape))
    return out if out.dtype == np.float32 else out.astype(np.float32)
