"""URIs, built-in and synthetic data sets (node.datasets.uris, .builtin, .synthetic)."""

from __future__ import annotations

import numpy as np
import pytest

from dataset_files import error

from node.datasets import load_dataset


def test_builtin_digits_ships_with_the_package() -> None:
    ds = load_dataset("builtin://digits", data_roots=[])
    assert ds.x.shape == (1797, 8, 8, 1) and ds.x.dtype == np.float32
    assert (ds.task, ds.num_classes, ds.x.min(), ds.x.max()) == ("classification", 10, 0.0, 1.0)
    assert np.bincount(ds.y).tolist()[:3] == [178, 182, 177]


def test_other_builtins() -> None:
    iris = load_dataset("builtin://iris", data_roots=[])
    assert iris.x.shape == (150, 4) and iris.class_names == ("setosa", "versicolor", "virginica")
    diabetes = load_dataset("builtin://diabetes", data_roots=[])
    assert (diabetes.x.shape, diabetes.task) == ((442, 10), "regression")


def test_synthetic_data_is_deterministic() -> None:
    uri = "synthetic://classification?n=500&features=7&classes=4&seed=3"
    a, b = load_dataset(uri, data_roots=[]), load_dataset(uri, data_roots=[])
    np.testing.assert_array_equal(a.x, b.x)
    np.testing.assert_array_equal(a.y, b.y)
    assert (a.x.shape, a.num_classes) == ((500, 7), 4)
    other = load_dataset(uri.replace("seed=3", "seed=4"), data_roots=[])
    assert not np.array_equal(a.x, other.x)
    reg = load_dataset("synthetic://regression?n=50&features=3&targets=2", data_roots=[])
    assert (reg.task, reg.y.shape, reg.num_outputs) == ("regression", (50, 2), 2)


@pytest.mark.parametrize(
    ("uri", "problem"),
    [
        ("s3://bucket/x.csv", "scheme 's3' is not supported: use file, nats, builtin or synthetic"),
        ("builtin://mnist", "no built-in data set 'mnist': choose digits, iris, diabetes"),
        ("synthetic://images", "unknown synthetic data set 'images': choose classification or regression"),
        ("synthetic://classification?rows=5", "unknown parameter 'rows': known are n, features, classes, seed"),
        ("synthetic://classification?n=many", "n must be a number (got 'many')"),
        ("synthetic://classification?classes=1", "classes must be at least 2 (got 1)"),
        ("nats://data.csv", "nats:// data sets need the object store, but no fetch_object was given"),
        ("builtin://digits?task=clustering", "task 'clustering' is not supported: choose classification or regression"),
    ],
)
def test_bad_uris(uri: str, problem: str) -> None:
    assert error(uri, []) == f"dataset {uri!r}: {problem}"
