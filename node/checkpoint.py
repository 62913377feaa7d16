"""Pytrees of arrays to bytes and back: deterministic, self-describing, no pickle.

Layout of the bytes::

    b"CYXTREE1" | header length (8 bytes, little-endian) | header (JSON, UTF-8) | leaf data

The header holds ``meta`` (any JSON object the caller gives: epoch, config, model
definition) and, for each leaf in pytree order, its key path, dtype, shape, offset and
length in the data part. Leaves are written C-contiguous and little-endian, so the same
tree and meta always give the same bytes (and the same :func:`sha256_hex`).

Decoding needs a template tree of the same structure (``like``) to rebuild containers
such as optax states; :func:`read_arrays` gives the leaves by path without one.
"""

from __future__ import annotations

import hashlib
import json
import struct
from typing import Any

import jax
import numpy as np

__all__ = ["CheckpointError", "from_bytes", "read_arrays", "read_meta", "sha256_hex", "to_buffer", "to_bytes"]

MAGIC = b"CYXTREE1"
_LEN = struct.Struct("<Q")


class CheckpointError(ValueError):
    """Bytes that are not a checkpoint, or one that does not fit this run."""

    retryable = False


def sha256_hex(data: bytes) -> str:
    """Hex SHA-256 of ``data``, as stored beside models and checkpoints."""
    return hashlib.sha256(data).hexdigest()


def to_bytes(tree: Any, meta: dict[str, Any] | None = None) -> bytes:
    """Serialise a pytree of arrays (jax or numpy) and a JSON-able ``meta`` dict."""
    return bytes(to_buffer(tree, meta))


def to_buffer(tree: Any, meta: dict[str, Any] | None = None) -> bytearray:
    """:func:`to_bytes` into a mutable buffer: the leaves are copied in by NumPy, which
    lets go of the GIL for large copies, so a background writer does not stall the
    thread that trains."""
    leaves_with_paths = jax.tree_util.tree_flatten_with_path(tree)[0]
    host = jax.device_get([leaf for _, leaf in leaves_with_paths])
    entries, arrays, offset = [], [], 0
    for (path, _), leaf in zip(leaves_with_paths, host):
        array = np.asarray(leaf)
        array = np.asarray(array.astype(array.dtype.newbyteorder("<"), copy=False), order="C")  # keeps 0-d
        entries.append({
            "path": jax.tree_util.keystr(path),
            "dtype": array.dtype.name,
            "shape": list(array.shape),
            "offset": offset,
            "nbytes": array.nbytes,
        })
        arrays.append(array)
        offset += array.nbytes
    header = json.dumps(
        {"meta": meta or {}, "leaves": entries}, sort_keys=True, separators=(",", ":"), allow_nan=False
    ).encode()
    start = len(MAGIC) + _LEN.size + len(header)
    buffer = bytearray(start + offset)
    buffer[:start] = MAGIC + _LEN.pack(len(header)) + header
    view = np.frombuffer(buffer, dtype=np.uint8)
    for entry, array in zip(entries, arrays):
        begin = start + entry["offset"]
        view[begin : begin + entry["nbytes"]] = array.reshape(-1).view(np.uint8)
    return buffer


def read_meta(data: bytes) -> dict[str, Any]:
    """The ``meta`` dict stored with the tree."""
    return _header(data)[0]["meta"]


def read_arrays(data: bytes) -> dict[str, np.ndarray]:
    """All leaves by key path (e.g. ``"['dense_0']['w']"``), as numpy arrays."""
    header, start = _header(data)
    return {e["path"]: _leaf(data, start, e) for e in header["leaves"]}


def from_bytes(data: bytes, like: Any) -> tuple[Any, dict[str, Any]]:
    """Rebuild a tree shaped like ``like`` (numpy leaves) and return it with ``meta``.

    Every leaf's path, dtype and shape must match the template's.
    """
    header, start = _header(data)
    template, treedef = jax.tree_util.tree_flatten_with_path(like)
    entries = header["leaves"]
    if len(entries) != len(template):
        raise CheckpointError(f"checkpoint has {len(entries)} arrays, this model has {len(template)}")
    leaves = []
    for entry, (path, leaf) in zip(entries, template):
        want = (jax.tree_util.keystr(path), np.dtype(leaf.dtype).name, list(np.shape(leaf)))
        got = (entry["path"], entry["dtype"], entry["shape"])
        if got != want:
            raise CheckpointError(
                f"checkpoint array {got[0]} {got[1]}{got[2]} does not match this model's "
                f"{want[0]} {want[1]}{want[2]}"
            )
        leaves.append(_leaf(data, start, entry))
    return jax.tree_util.tree_unflatten(treedef, leaves), header["meta"]


def _header(data: bytes) -> tuple[dict[str, Any], int]:
    if not data.startswith(MAGIC) or len(data) < len(MAGIC) + _LEN.size:
        raise CheckpointError("not a cyxwiz checkpoint (bad magic bytes)")
    (length,) = _LEN.unpack_from(data, len(MAGIC))
    start = len(MAGIC) + _LEN.size + length
    try:
        header = json.loads(data[len(MAGIC) + _LEN.size : start])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"checkpoint header is corrupt: {exc}") from exc
    total = sum(e["nbytes"] for e in header["leaves"])
    if len(data) - start != total:
        raise CheckpointError(f"checkpoint is truncated or padded: {len(data) - start} data bytes, expected {total}")
    return header, start


def _leaf(data: bytes, start: int, entry: dict[str, Any]) -> np.ndarray:
    dtype = np.dtype(entry["dtype"]).newbyteorder("<")
    begin = start + entry["offset"]
    flat = np.frombuffer(data, dtype=dtype, count=entry["nbytes"] // dtype.itemsize, offset=begin)
    return flat.reshape(entry["shape"]).astype(dtype.newbyteorder("="))
