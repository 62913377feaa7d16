"""``nats://NAME`` data: objects of the dataset bucket, read through ``fetch_object``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from node.datasets.dataset import DatasetError
from node.datasets.formats import Arrays, npy_pair, npy_sibling, parse_bytes

__all__ = ["load_object", "object_names"]


def object_names(uri: str, name: str) -> tuple[str, ...]:
    """The objects that ``nats://NAME`` reads: NAME, and for ``NAME_x.npy`` its ``NAME_y.npy`` too."""
    if not name:
        raise DatasetError(uri, "no object name: use nats://NAME.csv (or .npz, NAME_x.npy, .h5)")
    if name.lower().endswith(".npy"):
        y_name = npy_sibling(uri, Path(name)).name
        return name, name[: len(name) - len(Path(name).name)] + y_name
    return (name,)


def load_object(uri: str, name: str, fetch_object: Callable[[str], bytes] | None, label_column: str | None) -> Arrays:
    if fetch_object is None:
        raise DatasetError(uri, "nats:// data sets need the object store, but no fetch_object was given")
    names = object_names(uri, name)
    if len(names) == 2:
        return npy_pair(uri, *(_fetch(uri, fetch_object, n) for n in names))
    return parse_bytes(uri, name, _fetch(uri, fetch_object, name), label_column)


def _fetch(uri: str, fetch_object: Callable[[str], bytes], name: str) -> bytes:
    data = fetch_object(name)
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise DatasetError(uri, f"fetch_object({name!r}) returned {type(data).__name__}, not bytes")
    return bytes(data)
