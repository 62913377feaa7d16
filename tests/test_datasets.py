"""Data sets by URI: every format gives the same arrays; every refusal says why."""

from __future__ import annotations

import io
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from node.datasets import Dataset, DatasetError, load_dataset

X = np.array([[0.5, -1.25, 3.0], [1.0, 2.0, -0.5], [7.5, 0.0, 0.25], [-2.0, 4.5, 1.0]], np.float32)
Y = np.array([0, 2, 1, 2], np.int32)


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    """A data root holding the same small data set in every supported format."""
    data = tmp_path / "data"
    data.mkdir()
    rows = "\n".join(",".join([*(repr(float(v)) for v in x), str(int(y))]) for x, y in zip(X, Y))
    (data / "plain.csv").write_text(rows + "\n")
    (data / "header.csv").write_text("a,b,c,label\n" + rows + "\n")
    np.save(data / "set_x.npy", X)
    np.save(data / "set_y.npy", Y)
    (data / "pair").mkdir()
    np.save(data / "pair" / "x.npy", X)
    np.save(data / "pair" / "y.npy", Y)
    np.savez(data / "set.npz", x=X, y=Y)
    with h5py.File(data / "set.h5", "w") as f:
        f["x"], f["y"] = X, Y
    return data


def load(uri: str, root: Path, **kwargs) -> Dataset:
    return load_dataset(uri, data_roots=[root], **kwargs)


@pytest.mark.parametrize(
    "name", ["plain.csv", "header.csv", "set_x.npy", "pair", "set.npz", "set.h5"]
)
def test_every_file_format_loads_the_same_arrays(root: Path, name: str) -> None:
    ds = load(f"file://{root / name}", root)
    np.testing.assert_array_equal(ds.x, X)
    np.testing.assert_array_equal(ds.y, Y)
    assert (ds.x.dtype, ds.y.dtype, ds.task, ds.num_classes) == (np.float32, np.int32, "classification", 3)


@pytest.mark.parametrize("name", ["header.csv", "set_x.npy", "set.npz", "set.h5"])
def test_nats_objects_load_the_same_arrays(root: Path, name: str) -> None:
    asked: list[str] = []

    def fetch(object_name: str) -> bytes:
        asked.append(object_name)
        return (root / object_name).read_bytes()

    ds = load(f"nats://{name}", root, fetch_object=fetch)
    np.testing.assert_array_equal(ds.x, X)
    np.testing.assert_array_equal(ds.y, Y)
    assert asked == (["set_x.npy", "set_y.npy"] if name.endswith(".npy") else [name])


def test_csv_label_column_by_name_or_index_and_text_labels(root: Path) -> None:
    (root / "iris.csv").write_text("species,w,h\nsetosa,1.5,2\nvirginica,3,4\nsetosa,5,6\n")
    by_name = load(f"file://{root / 'iris.csv'}", root, label_column="species")
    by_index = load(f"file://{root / 'iris.csv'}", root, label_column="0")
    for ds in (by_name, by_index):
        np.testing.assert_array_equal(ds.x, [[1.5, 2], [3, 4], [5, 6]])
        np.testing.assert_array_equal(ds.y, [0, 1, 0])
        assert ds.class_names == ("setosa", "virginica")


def test_float_labels_are_regression_and_task_can_be_forced(root: Path) -> None:
    (root / "reg.csv").write_text("1,2,0.5\n3,4,1.25\n")
    ds = load(f"file://{root / 'reg.csv'}", root)
    assert (ds.task, ds.num_classes, ds.num_outputs, ds.y.dtype) == ("regression", 0, 1, np.float32)
    forced = load(f"file://{root / 'set.npz'}?task=regression", root)
    assert forced.task == "regression"
    np.testing.assert_array_equal(forced.y, Y.astype(np.float32))


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


@settings(max_examples=30, deadline=None)
@given(
    hnp.arrays(np.float32, st.tuples(st.integers(1, 6), st.integers(1, 4)),
               elements=st.floats(-1e6, 1e6, width=32)),
    st.lists(st.integers(0, 5), min_size=6, max_size=6),
)
def test_csv_round_trips_any_float32_values(x: np.ndarray, labels: list[int]) -> None:
    y = np.array(labels[: len(x)], np.int32)
    text = "".join(",".join([*(repr(float(v)) for v in row), str(lab)]) + "\n" for row, lab in zip(x, y))
    ds = load_dataset("nats://t.csv", data_roots=[], fetch_object=lambda _: text.encode())
    np.testing.assert_array_equal(ds.x, x)
    np.testing.assert_array_equal(ds.y, y)


# --- refusals ---------------------------------------------------------------------


def error(uri: str, roots: list[Path], **kwargs) -> str:
    with pytest.raises(DatasetError) as info:
        load_dataset(uri, data_roots=roots, **kwargs)
    assert info.value.uri == uri
    return str(info.value)


def test_path_outside_the_roots_is_refused(root: Path, tmp_path: Path) -> None:
    outside = tmp_path / "secret.npz"
    np.savez(outside, x=X, y=Y)
    uri = f"file://{outside}"
    assert error(uri, [root]) == (
        f"dataset {uri!r}: {outside} is outside the data roots ({root}); move the file under one of them"
    )


def test_symlink_out_of_the_roots_is_refused(root: Path, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere_x.npy"
    np.save(outside, X)
    (root / "link_x.npy").symlink_to(outside)
    np.save(root / "link_y.npy", Y)
    assert "is outside the data roots" in error(f"file://{root / 'link_x.npy'}", [root])
    # the sibling labels file is checked too
    np.save(root / "ok_x.npy", X)
    (root / "ok_y.npy").symlink_to(outside)
    assert f"{outside} is outside the data roots" in error(f"file://{root / 'ok_x.npy'}", [root])


def test_dot_dot_is_refused(root: Path) -> None:
    uri = f"file://{root}/../data/set.npz"
    assert error(uri, [root]) == (
        f"dataset {uri!r}: '..' is not allowed in data paths; use a path under the node's data roots"
    )


def test_missing_file_and_no_roots(root: Path) -> None:
    uri = f"file://{root}/nope.csv"
    assert error(uri, [root]) == f"dataset {uri!r}: file {root}/nope.csv does not exist"
    uri = f"file://{root}/set.npz"
    assert error(uri, []) == (
        f"dataset {uri!r}: {root}/set.npz is outside the data roots (none configured); "
        "move the file under one of them"
    )


def test_bad_csv_rows_name_the_line(root: Path) -> None:
    (root / "bad.csv").write_text("a,b,label\n1,2,0\n\n3,oops,1\n")
    uri = f"file://{root / 'bad.csv'}"
    assert error(uri, [root]) == f"dataset {uri!r}: line 4, column 2: 'oops' is not a number"
    (root / "short.csv").write_text("1,2,0\n3,1\n")
    uri = f"file://{root / 'short.csv'}"
    assert error(uri, [root]) == f"dataset {uri!r}: line 2 has 2 columns, expected 3"


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


def test_bad_object_contents() -> None:
    def fetch(name: str) -> bytes:
        return b"not an archive"

    assert "not a valid .npz archive" in error("nats://x.npz", [], fetch_object=fetch)
    assert "not a valid HDF5 file" in error("nats://x.h5", [], fetch_object=fetch)
    assert error("nats://x.parquet", [], fetch_object=fetch).endswith(
        "unknown file type '.parquet': use .csv, .npz, .npy or .h5"
    )
    buf = io.BytesIO()
    np.savez(buf, x=X, labels=Y)
    assert error("nats://x.npz", [], fetch_object=lambda _: buf.getvalue()).endswith(
        "the archive has no array 'y' (it has ['labels', 'x'])"
    )


def test_mismatched_rows(root: Path) -> None:
    np.savez(root / "mismatch.npz", x=X, y=Y[:3])
    uri = f"file://{root / 'mismatch.npz'}"
    assert error(uri, [root]).endswith("x has 4 rows but y has shape [3]; y needs one row per sample")
