"""URIs, built-in and synthetic data sets (node.datasets.uris, .builtin, .synthetic)."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from dataset_files import error

from node.datasets import load_dataset
from node.trainer import TrainConfig, Trainer


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


def test_synthetic_values_are_pinned() -> None:
    """The same URI gives these values in any process, run after run (on CPU). They are
    not the NumPy generator's of before; a JAX that changes its random bits fails here."""
    a = load_dataset("synthetic://classification?n=500&features=7&classes=4&seed=3", data_roots=[])
    np.testing.assert_allclose(np.asarray(a.x[0, :3]), [2.1103945, -0.8225695, 0.7093829], rtol=1e-6)
    assert np.asarray(a.y[:10]).tolist() == [1, 0, 3, 1, 2, 1, 0, 3, 3, 2]
    assert np.bincount(np.asarray(a.y)).tolist() == [116, 126, 135, 123]
    reg = load_dataset("synthetic://regression?n=50&features=3&targets=2", data_roots=[])
    np.testing.assert_allclose(np.asarray(reg.y[0]), [-0.6078321, -0.0630198], rtol=1e-5)


def test_synthetic_data_is_made_on_the_device_and_trained_on_without_a_host_copy() -> None:
    """No host array, no host-to-device copy of the data (JAX's transfer guards refuse
    implicit transfers to the device and any to the host), and the trainer's device
    arrays (split, cast) come from it on the device."""
    uri = "synthetic://classification?n=600&features=9&classes=3&seed=5"
    guards = (jax.transfer_guard_host_to_device("disallow"), jax.transfer_guard_device_to_host("disallow_explicit"))
    with guards[0], guards[1]:
        ds = load_dataset(uri, data_roots=[])
    assert ds.on_device and isinstance(ds.x, jax.Array) and isinstance(ds.y, jax.Array)
    assert ds.x.devices() == {jax.devices()[0]}
    assert (ds.x.shape, ds.x.dtype, ds.y.dtype, ds.num_classes) == ((600, 9), np.float32, np.int32, 3)
    trainer = Trainer(TrainConfig(model_definition={"type": "linear"}, epochs=1, batch_size=64), ds)
    with jax.transfer_guard_device_to_host("disallow_explicit"):  # the split's indices go to the device
        x_train, y_train, x_val, y_val = jax.block_until_ready(trainer._data())
    assert (x_train.shape[0], x_val.shape[0]) == (540, 60)  # 10 % for validation
    train_idx = trainer._train_idx
    np.testing.assert_array_equal(np.asarray(x_train), np.asarray(ds.x)[train_idx])
    np.testing.assert_array_equal(np.asarray(y_train), np.asarray(ds.y)[train_idx])


def test_synthetic_task_override_and_seed_bound() -> None:
    reg = load_dataset("synthetic://classification?n=40&features=2&task=regression", data_roots=[])
    assert (reg.task, reg.num_classes, reg.y.dtype) == ("regression", 0, np.float32)
    assert error("synthetic://classification?seed=4294967296", []).endswith(
        "seed must be at most 4294967295 (got 4.29497e+09)"
    )


@pytest.mark.parametrize(
    ("uri", "problem"),
    [
        ("s3://bucket/x.csv", "scheme 's3' is not supported: use file://, builtin://, synthetic:// or nats://"),
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
