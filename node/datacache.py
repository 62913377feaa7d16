"""Data sets kept between jobs of one worker process: in host memory (parsed arrays) and
on the device (the trainer's split, cast and padded arrays), each an LRU bounded in
bytes, so a second job on the same data starts training without loading anything.

Keys say what the data is, not just where: ``builtin://`` and ``synthetic://`` URIs
determine their data (synthetic data is made on the device, so it is kept in the device
cache, never on the host); a ``file://`` CSV, NPZ or HDF5 file adds its size,
modification time and inode (a rewritten file is a new entry); a ``nats://`` object adds
the SHA-256 the object store holds for it (for ``NAME_x.npy``, of both files), asked for
without reading the object: a re-uploaded object is a new entry, fetched again. An
object whose bytes do not match the SHA-256 asked for just before (re-uploaded in
between) is used once and not kept. File NPY pairs are not cached.

Bounds: ``CYXWIZ_HOST_DATA_CACHE_BYTES`` (default 4 GiB) and
``CYXWIZ_DEVICE_DATA_CACHE_BYTES`` (default 4 GiB); an entry larger than its bound is
used once and not kept.
"""

from __future__ import annotations

import hashlib
import os
import threading
import urllib.parse
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from node.datasets import Dataset, DatasetError, load_dataset, object_names

__all__ = ["LRU", "cached_dataset", "dataset_key", "device_cache", "host_cache"]

T = TypeVar("T")
_CACHED_FILES = (".csv", ".npz", ".h5", ".hdf5")


class LRU:
    """Least recently used entries, at most ``max_bytes`` in all (thread-safe)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, key: Hashable) -> Any | None:
        """The entry under ``key`` (now the most recently used), or None (a miss)."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return entry[0]

    def put(self, key: Hashable, value: Any, nbytes: int) -> None:
        """Keep ``value``, dropping the least recently used entries beyond the bound
        (a value larger than the bound is not kept)."""
        if nbytes > self.max_bytes:
            return
        with self._lock:
            self._entries[key] = (value, nbytes)
            self._entries.move_to_end(key)
            while sum(n for _, n in self._entries.values()) > self.max_bytes:
                self._entries.popitem(last=False)

    def get_or_make(self, key: Hashable | None, make: Callable[[], T], size: Callable[[T], int]) -> T:
        if key is None:
            return make()
        value = self.get(key)
        if value is None:
            value = make()
            self.put(key, value, size(value))
        return value

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


def _bound(name: str) -> int:
    return int(os.environ.get(name, str(4 << 30)))


host_cache = LRU(_bound("CYXWIZ_HOST_DATA_CACHE_BYTES"))
device_cache = LRU(_bound("CYXWIZ_DEVICE_DATA_CACHE_BYTES"))


def dataset_key(
    uri: str,
    data_roots: Sequence[Path],
    label_column: str | None,
    object_sha256: Callable[[str], str] | None = None,
) -> tuple | None:
    """What identifies the data ``uri`` names now; None where it cannot be known cheaply.

    ``object_sha256(name)``: the SHA-256 the object store holds for a dataset object
    (without it, ``nats://`` data is not cached)."""
    parts = urllib.parse.urlsplit(uri)
    if parts.scheme in ("builtin", "synthetic"):
        return (uri, label_column)
    if parts.scheme == "nats":
        if object_sha256 is None:
            return None
        try:
            names = object_names(uri, parts.netloc + parts.path)
        except DatasetError:
            return None  # load_dataset says what is wrong
        return (uri, label_column, tuple(object_sha256(name) for name in names))
    if parts.scheme != "file" or Path(parts.path).suffix.lower() not in _CACHED_FILES:
        return None
    try:
        stat = Path(urllib.parse.unquote(parts.path)).stat()
    except OSError:
        return None  # load_dataset says what is wrong
    roots = tuple(str(r) for r in data_roots)
    return (uri, label_column, roots, stat.st_size, stat.st_mtime_ns, stat.st_ino)


def cached_dataset(
    uri: str,
    *,
    data_roots: Sequence[Path],
    label_column: str | None = None,
    fetch_object: Callable[[str], bytes] | None = None,
    object_sha256: Callable[[str], str] | None = None,
) -> Dataset:
    """``load_dataset``, or the same arrays from an earlier job of this process."""
    cache = device_cache if urllib.parse.urlsplit(uri).scheme == "synthetic" else host_cache
    key = dataset_key(uri, data_roots, label_column, object_sha256 if fetch_object else None)
    if key is not None and (found := cache.get(key)) is not None:
        return found
    read: list[str] = []

    def fetch(name: str) -> bytes:
        data = fetch_object(name)  # type: ignore[misc]
        read.append(hashlib.sha256(data).hexdigest())
        return data

    dataset = load_dataset(
        uri, data_roots=data_roots, label_column=label_column, fetch_object=fetch if fetch_object else None
    )
    if key is not None and (not read or tuple(read) == key[2]):
        cache.put(key, dataset, int(dataset.x.nbytes + dataset.y.nbytes))
    return dataset
