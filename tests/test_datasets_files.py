"""file:// data (node.datasets.files): only absolute paths under the data roots."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dataset_files import X, Y, error, write_every_format


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    return write_every_format(tmp_path)


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
