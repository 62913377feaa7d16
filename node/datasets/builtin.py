"""``builtin://NAME``: the small real data sets shipped in ``node/data``."""

from __future__ import annotations

from importlib import resources

import numpy as np

from node.datasets.dataset import DatasetError
from node.datasets.formats import Arrays, arrays_npz

__all__ = ["BUILTIN", "load_builtin"]

BUILTIN = ("digits", "iris", "diabetes")


def load_builtin(uri: str, name: str) -> Arrays:
    if name not in BUILTIN:
        raise DatasetError(uri, f"no built-in data set {name!r}: choose {', '.join(BUILTIN)}")
    data = resources.files("node").joinpath("data", f"{name}.npz").read_bytes()
    x, y, names = arrays_npz(uri, data)
    if name == "digits":
        x = x.astype(np.float32) / 16.0  # pixel counts 0..16 -> 0..1
    return x, y, names
