"""File formats (node.datasets.formats, .objects): every format gives the same arrays,
from a file or an object; every refusal of bad contents says why."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from dataset_files import X, Y, error, load, write_every_format

from node.datasets import load_dataset


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    return write_every_format(tmp_path)


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


def test_bad_csv_rows_name_the_line(root: Path) -> None:
    (root / "bad.csv").write_text("a,b,label\n1,2,0\n\n3,oops,1\n")
    uri = f"file://{root / 'bad.csv'}"
    assert error(uri, [root]) == f"dataset {uri!r}: line 4, column 2: 'oops' is not a number"
    (root / "short.csv").write_text("1,2,0\n3,1\n")
    uri = f"file://{root / 'short.csv'}"
    assert error(uri, [root]) == f"dataset {uri!r}: line 2 has 2 columns, expected 3"


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
