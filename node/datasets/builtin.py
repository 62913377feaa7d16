"""``builtin://NAME``: the small real data sets shipped in ``node/data``."""

from __future__ import annotations

from importlib import resources

import numpy as np

from events.jobspec import BUILTIN_DATASETS as BUILTIN
from node.datasets.formats import Arrays, arrays_npz

__all__ = ["BUILTIN", "load_builtin"]


def load_builtin(uri: str, name: str) -> Arrays:
    """A shipped data set; ``name`` is one of ``BUILTIN`` (``events.jobspec`` checked it)."""
    data = resources.files("node").joinpath("data", f"{name}.npz").read_bytes()
    x, y, names = arrays_npz(uri, data)
    if name == "digits":
        x = x.astype(np.float32) / 16.0  # pixel counts 0..16 -> 0..1
    return x, y, names
