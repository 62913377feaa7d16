"""``synthetic://classification`` and ``synthetic://regression``: deterministic, learnable
Gaussian data for tests and benchmarks."""

from __future__ import annotations

import math

import numpy as np

from node.datasets.dataset import DatasetError
from node.datasets.formats import Arrays

__all__ = ["MAX_SYNTHETIC_VALUES", "synthetic_arrays"]

MAX_SYNTHETIC_VALUES = 200_000_000


def synthetic_arrays(uri: str, kind: str, query: dict[str, str]) -> Arrays:
    defaults = {
        "classification": {"n": 1000, "features": 20, "classes": 2, "seed": 0},
        "regression": {"n": 1000, "features": 20, "targets": 1, "noise": 0.1, "seed": 0},
    }
    if kind not in defaults:
        raise DatasetError(uri, f"unknown synthetic data set {kind!r}: choose classification or regression")
    params: dict[str, float] = dict(defaults[kind])
    for key, text in query.items():
        if key not in params:
            raise DatasetError(uri, f"unknown parameter {key!r}: known are {', '.join(params)}")
        try:
            params[key] = float(text) if key == "noise" else int(text)
        except ValueError:
            raise DatasetError(uri, f"{key} must be a number (got {text!r})") from None
    n, features, seed = int(params["n"]), int(params["features"]), int(params["seed"])
    outputs = int(params.get("classes", params.get("targets", 1)))
    minimum = {"n": 1, "features": 1, "classes": 2, "targets": 1, "seed": 0, "noise": 0.0}
    for key, low in minimum.items():
        if key in params and params[key] < low:
            raise DatasetError(uri, f"{key} must be at least {low} (got {params[key]:g})")
    if n * features > MAX_SYNTHETIC_VALUES:
        raise DatasetError(uri, f"n * features = {n * features} is over the limit of {MAX_SYNTHETIC_VALUES}")
    rng = np.random.default_rng(seed)
    if kind == "classification":
        # Class centres on a sphere of radius 3 with unit noise: separable, not trivially.
        centres = rng.standard_normal((outputs, features))
        centres *= 3.0 / np.linalg.norm(centres, axis=1, keepdims=True)
        y = rng.integers(0, outputs, n)
        x = centres[y] + rng.standard_normal((n, features), dtype=np.float32)
        return x.astype(np.float32), y.astype(np.int32), ()
    x = rng.standard_normal((n, features), dtype=np.float32)
    w = rng.standard_normal((features, outputs)) / math.sqrt(features)
    y = np.tanh(x @ w) + params["noise"] * rng.standard_normal((n, outputs))
    return x, (y[:, 0] if outputs == 1 else y).astype(np.float32), ()
