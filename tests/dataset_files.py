"""A small data set written in every file format, for the data set tests."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from node.datasets import Dataset, DatasetError, load_dataset

__all__ = ["X", "Y", "error", "load", "write_every_format"]

X = np.array([[0.5, -1.25, 3.0], [1.0, 2.0, -0.5], [7.5, 0.0, 0.25], [-2.0, 4.5, 1.0]], np.float32)
Y = np.array([0, 2, 1, 2], np.int32)


def write_every_format(tmp_path: Path) -> Path:
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


def error(uri: str, roots: list[Path], **kwargs) -> str:
    """The text of the DatasetError that loading ``uri`` raises (which must name the URI)."""
    with pytest.raises(DatasetError) as info:
        load_dataset(uri, data_roots=roots, **kwargs)
    assert info.value.uri == uri
    return str(info.value)
