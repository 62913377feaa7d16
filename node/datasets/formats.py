"""File formats: the bytes of a CSV, NPZ, NPY pair or HDF5 file to arrays ``(x, y, class names)``."""

from __future__ import annotations

import csv
import io
import zipfile
from pathlib import Path

import numpy as np

from node.datasets.dataset import DatasetError

__all__ = ["Arrays", "arrays_npz", "npy_pair", "npy_sibling", "parse_bytes"]

Arrays = tuple[np.ndarray, np.ndarray, tuple[str, ...]]


def parse_bytes(uri: str, name: str, data: bytes, label_column: str | None) -> Arrays:
    """The arrays in ``data``, read as the format ``name``'s extension says."""
    suffix = Path(name).suffix.lower()
    if label_column is not None and suffix != ".csv":
        raise DatasetError(uri, "label_column applies to CSV data only")
    if suffix == ".csv":
        return _parse_csv(uri, data, label_column)
    if suffix == ".npz":
        return arrays_npz(uri, data)
    if suffix in (".h5", ".hdf5"):
        return _arrays_hdf5(uri, data)
    raise DatasetError(uri, f"unknown file type {suffix or name!r}: use .csv, .npz, .npy or .h5")


def npy_sibling(uri: str, path: Path) -> Path:
    """The labels file beside a features file: ``NAME_x.npy`` -> ``NAME_y.npy``, ``x.npy`` -> ``y.npy``."""
    stem = path.stem
    if stem == "x" or stem.endswith("_x"):
        return path.with_name(stem[:-1] + "y" + path.suffix)
    raise DatasetError(uri, f"a .npy URI must name the features file NAME_x.npy (or x.npy), got {path.name}")


def npy_pair(uri: str, x_bytes: bytes, y_bytes: bytes) -> Arrays:
    return _npy(uri, x_bytes, "x"), _npy(uri, y_bytes, "y"), ()


def _npy(uri: str, data: bytes, which: str) -> np.ndarray:
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise DatasetError(uri, f"the {which} file is not a valid .npy array: {exc}") from exc


def arrays_npz(uri: str, data: bytes) -> Arrays:
    try:
        archive = np.load(io.BytesIO(data), allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise ValueError("it holds a single array, not arrays x and y")
        arrays = {k: archive[k] for k in archive.files if k in ("x", "y", "class_names")}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise DatasetError(uri, f"not a valid .npz archive: {exc}") from exc
    missing = [k for k in ("x", "y") if k not in arrays]
    if missing:
        raise DatasetError(uri, f"the archive has no array {missing[0]!r} (it has {sorted(archive.files)})")
    names = tuple(str(n) for n in arrays.get("class_names", ()))
    return arrays["x"], arrays["y"], names


def _arrays_hdf5(uri: str, data: bytes) -> Arrays:
    import h5py  # imported here: only HDF5 data needs it

    try:
        with h5py.File(io.BytesIO(data), "r") as f:
            missing = [k for k in ("x", "y") if not isinstance(f.get(k), h5py.Dataset)]
            if missing:
                raise DatasetError(uri, f"the HDF5 file has no dataset {missing[0]!r} (it has {sorted(f.keys())})")
            return f["x"][()], f["y"][()], ()
    except OSError as exc:
        raise DatasetError(uri, f"not a valid HDF5 file: {exc}") from exc


def _parse_csv(uri: str, data: bytes, label_column: str | None) -> Arrays:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DatasetError(uri, f"the CSV is not UTF-8 text (byte {exc.start})") from exc
    reader = csv.reader(io.StringIO(text))
    rows: list[tuple[int, list[str]]] = [(reader.line_num, row) for row in reader if row]
    if not rows:
        raise DatasetError(uri, "the CSV file is empty")
    header = None
    if _is_header(rows[0][1], rows[1][1] if len(rows) > 1 else None):
        header = [h.strip() for h in rows[0][1]]
        rows = rows[1:]
    if not rows:
        raise DatasetError(uri, "the CSV file has a header but no data rows")
    width = len(header) if header else len(rows[0][1])
    label = _label_index(uri, label_column, header, width)
    features, labels = [], []
    for line, row in rows:
        if len(row) != width:
            raise DatasetError(uri, f"line {line} has {len(row)} columns, expected {width}")
        try:
            features.append([float(v) for i, v in enumerate(row) if i != label])
        except ValueError:
            column = next(i for i, v in enumerate(row) if i != label and not _is_number(v))
            raise DatasetError(uri, f"line {line}, column {column + 1}: {row[column]!r} is not a number") from None
        labels.append(row[label].strip())
        if not labels[-1]:
            raise DatasetError(uri, f"line {line}, column {label + 1}: the label is empty")
    x = np.asarray(features, dtype=np.float32)
    try:  # whole-number labels ("3", not "3.0") are class indices
        return x, np.asarray([int(v) for v in labels], dtype=np.int64), ()
    except ValueError:
        pass
    if all(_is_number(v) for v in labels):
        return x, np.asarray([float(v) for v in labels], dtype=np.float64), ()
    names = tuple(sorted(set(labels)))
    index = {n: i for i, n in enumerate(names)}
    return x, np.asarray([index[v] for v in labels], dtype=np.int32), names


def _is_header(first: list[str], second: list[str] | None) -> bool:
    """A first row is a header if it has text where the data below has numbers."""
    if second is None or len(second) != len(first):
        return not all(_is_number(v) for v in first)
    return any(not _is_number(a) and _is_number(b) for a, b in zip(first, second))


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _label_index(uri: str, label_column: str | None, header: list[str] | None, width: int) -> int:
    if width < 2:
        raise DatasetError(uri, "the CSV needs at least two columns: features and a label")
    if label_column is None:
        return width - 1
    if header and label_column in header:
        return header.index(label_column)
    try:
        index = int(label_column)
    except ValueError:
        known = f"; the header has {header}" if header else " and the CSV has no header row"
        raise DatasetError(uri, f"label column {label_column!r} not found{known}") from None
    if not -width <= index < width:
        raise DatasetError(uri, f"label column {index} is out of range for {width} columns")
    return index % width
