"""Data sets by URI, loaded into NumPy arrays for the trainer.

Supported URIs (``?task=classification|regression`` may follow any file or object
URI to override the guess described under :class:`Dataset`):

- ``file:///abs/path/data.csv``: CSV, comma-separated, an optional header row; the
  label column is ``label_column`` (a header name or a 0-based index), by default the
  last column. Labels that are not numbers are class names.
- ``file:///abs/path/name.npz``: a NumPy archive with arrays ``x`` and ``y``.
- ``file:///abs/path/name_x.npy``: features; the labels are the sibling ``name_y.npy``
  (also ``x.npy`` with ``y.npy``). A URI naming a directory means ``DIR/x.npy`` and
  ``DIR/y.npy``.
- ``file:///abs/path/name.h5`` (or ``.hdf5``): HDF5 with datasets ``x`` and ``y``.
- ``builtin://digits``, ``builtin://iris``, ``builtin://diabetes``: small real data
  sets shipped in ``node/data`` (see its README for sources and licences).
- ``synthetic://classification?n=1000&features=20&classes=2&seed=0`` and
  ``synthetic://regression?n=1000&features=20&targets=1&noise=0.1&seed=0``:
  deterministic, learnable Gaussian data for tests and benchmarks.
- ``nats://NAME``: an object from the dataset bucket, read with ``fetch_object(NAME)``;
  the format follows NAME's extension as above (``NAME_x.npy`` fetches ``NAME_y.npy``
  too). Errors raised by ``fetch_object`` propagate unchanged.

``file://`` paths must be absolute, contain no ``..``, and resolve (symlinks
followed) inside one of the configured data roots. Every problem raises
:class:`DatasetError` naming the URI.
"""

from __future__ import annotations

import csv
import io
import math
import urllib.parse
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from events.jobspec import BUILTIN_DATASETS as BUILTIN
from events.jobspec import InvalidDatasetUri, check_dataset_uri

__all__ = ["BUILTIN", "Dataset", "DatasetError", "load_dataset"]

MAX_CLASSES = 1000  # integer labels with more distinct values than this are regression targets


class DatasetError(ValueError):
    """A data set URI could not be loaded; retrying the same URI will not help."""

    retryable = False

    def __init__(self, uri: str, problem: str) -> None:
        super().__init__(f"dataset {uri!r}: {problem}")
        self.uri = uri
        self.problem = problem


@dataclass(frozen=True, eq=False)
class Dataset:
    """Features and labels in host memory.

    ``x``: float32 ``[n, *sample_shape]``. ``y``: int32 ``[n]`` class indices for
    classification, float32 ``[n]`` or ``[n, targets]`` for regression.
    ``num_classes`` is 0 for regression. The task is guessed from the labels: integer
    arrays (in CSV: labels written as whole numbers, like ``3``, or as text) with
    values in 0..``MAX_CLASSES``-1 are classification; floats (``3.0``) regression.
    """

    uri: str
    x: np.ndarray
    y: np.ndarray
    task: str
    num_classes: int
    class_names: tuple[str, ...] = field(default=())

    @property
    def num_outputs(self) -> int:
        """Width of the model output: classes, or regression targets."""
        if self.task == "classification":
            return self.num_classes
        return 1 if self.y.ndim == 1 else int(self.y.shape[1])

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])


def load_dataset(
    uri: str,
    *,
    data_roots: Sequence[Path],
    fetch_object: Callable[[str], bytes] | None = None,
    label_column: str | None = None,
) -> Dataset:
    """Load the data set that ``uri`` names (see the module docstring)."""
    try:  # what central checks at submit too: scheme, names, parameters (events.jobspec)
        ref = check_dataset_uri(uri)
    except InvalidDatasetUri as exc:
        raise DatasetError(uri, exc.reason) from None
    if label_column is not None and ref.scheme in ("builtin", "synthetic"):
        raise DatasetError(uri, "label_column applies to CSV data only")
    if ref.scheme == "file":
        x, y, names = _load_file(uri, urllib.parse.urlsplit(uri), data_roots, label_column)
    elif ref.scheme == "nats":
        x, y, names = _load_object(uri, ref.name, fetch_object, label_column)
    elif ref.scheme == "builtin":
        x, y, names = _load_builtin(uri, ref.name)
    else:
        x, y, names = _synthetic(uri, ref.params)
    return _finish(uri, x, y, names, ref.task)


# --- file:// and nats:// ----------------------------------------------------------


def _load_file(uri, parts, data_roots, label_column):
    if parts.netloc not in ("", "localhost"):
        raise DatasetError(uri, f"file URIs name a local path: file:///path, not host {parts.netloc!r}")
    raw = urllib.parse.unquote(parts.path)
    path = _checked_path(uri, raw, data_roots)
    if path.is_dir():
        return _npy_pair(uri, *(_read_file(uri, Path(raw) / n, data_roots) for n in ("x.npy", "y.npy")))
    if Path(raw).suffix.lower() == ".npy":
        y_path = _npy_sibling(uri, Path(raw))
        return _npy_pair(uri, _read_file(uri, Path(raw), data_roots), _read_file(uri, y_path, data_roots))
    return _parse(uri, Path(raw).name, _read_file(uri, path, data_roots), label_column)


def _checked_path(uri: str, raw: str, data_roots: Sequence[Path]) -> Path:
    roots = [Path(r).resolve() for r in data_roots]
    shown = ", ".join(str(r) for r in roots) or "none configured"
    if not raw.startswith("/"):
        raise DatasetError(uri, "the path must be absolute: file:///path/to/data")
    if ".." in Path(raw).parts:
        raise DatasetError(uri, f"'..' is not allowed in data paths; use a path under the data roots ({shown})")
    try:
        path = Path(raw).resolve(strict=True)
    except FileNotFoundError:
        raise DatasetError(uri, f"file {raw} does not exist") from None
    except OSError as exc:
        raise DatasetError(uri, f"cannot resolve {raw}: {exc.strerror}") from exc
    if not any(path.is_relative_to(root) for root in roots):
        raise DatasetError(uri, f"{path} is outside the data roots ({shown}); move the file under one of them")
    return path


def _read_file(uri: str, path: Path, data_roots: Sequence[Path]) -> bytes:
    checked = _checked_path(uri, str(path), data_roots)
    try:
        return checked.read_bytes()
    except OSError as exc:
        raise DatasetError(uri, f"cannot read {checked}: {exc.strerror}") from exc


def _npy_sibling(uri: str, path: Path) -> Path:
    stem = path.stem
    if stem == "x" or stem.endswith("_x"):
        return path.with_name(stem[:-1] + "y" + path.suffix)
    raise DatasetError(uri, f"a .npy URI must name the features file NAME_x.npy (or x.npy), got {path.name}")


def _load_object(uri, name, fetch_object, label_column):
    if fetch_object is None:
        raise DatasetError(uri, "nats:// data sets need the object store, but no fetch_object was given")
    if not name:
        raise DatasetError(uri, "no object name: use nats://NAME.csv (or .npz, NAME_x.npy, .h5)")
    if name.lower().endswith(".npy"):
        y_name = _npy_sibling(uri, Path(name)).name
        y_name = name[: len(name) - len(Path(name).name)] + y_name
        return _npy_pair(uri, _fetch(uri, fetch_object, name), _fetch(uri, fetch_object, y_name))
    return _parse(uri, name, _fetch(uri, fetch_object, name), label_column)


def _fetch(uri: str, fetch_object: Callable[[str], bytes], name: str) -> bytes:
    data = fetch_object(name)
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise DatasetError(uri, f"fetch_object({name!r}) returned {type(data).__name__}, not bytes")
    return bytes(data)


def _parse(uri: str, name: str, data: bytes, label_column: str | None):
    suffix = Path(name).suffix.lower()
    if label_column is not None and suffix != ".csv":
        raise DatasetError(uri, "label_column applies to CSV data only")
    if suffix == ".csv":
        return _parse_csv(uri, data, label_column)
    if suffix == ".npz":
        return _arrays_npz(uri, data)
    if suffix in (".h5", ".hdf5"):
        return _arrays_hdf5(uri, data)
    raise DatasetError(uri, f"unknown file type {suffix or name!r}: use .csv, .npz, .npy or .h5")


def _npy_pair(uri: str, x_bytes: bytes, y_bytes: bytes):
    return _npy(uri, x_bytes, "x"), _npy(uri, y_bytes, "y"), ()


def _npy(uri: str, data: bytes, which: str) -> np.ndarray:
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise DatasetError(uri, f"the {which} file is not a valid .npy array: {exc}") from exc


def _arrays_npz(uri: str, data: bytes):
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


def _arrays_hdf5(uri: str, data: bytes):
    import h5py  # imported here: only HDF5 data needs it

    try:
        with h5py.File(io.BytesIO(data), "r") as f:
            missing = [k for k in ("x", "y") if not isinstance(f.get(k), h5py.Dataset)]
            if missing:
                raise DatasetError(uri, f"the HDF5 file has no dataset {missing[0]!r} (it has {sorted(f.keys())})")
            return f["x"][()], f["y"][()], ()
    except OSError as exc:
        raise DatasetError(uri, f"not a valid HDF5 file: {exc}") from exc


def _parse_csv(uri: str, data: bytes, label_column: str | None):
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


# --- builtin:// and synthetic:// ------------------------------------------------


def _load_builtin(uri: str, name: str):
    data = resources.files("node").joinpath("data", f"{name}.npz").read_bytes()
    x, y, names = _arrays_npz(uri, data)
    if name == "digits":
        x = x.astype(np.float32) / 16.0  # pixel counts 0..16 -> 0..1
    return x, y, names


def _synthetic(uri: str, params: Mapping[str, float]):
    """Learnable data of ``params`` (``events.jobspec.synthetic_params``: checked, defaults in)."""
    n, features, seed = int(params["n"]), int(params["features"]), int(params["seed"])
    outputs = int(params.get("classes", params.get("targets", 1)))
    rng = np.random.default_rng(seed)
    if "classes" in params:
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


# --- checks shared by all sources -------------------------------------------------


def _finish(uri: str, x: np.ndarray, y: np.ndarray, names: tuple[str, ...], task: str | None) -> Dataset:
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim < 2:
        raise DatasetError(uri, f"x must have one row per sample and at least one feature (shape {list(x.shape)})")
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
        raise DatasetError(uri, f"x must be numeric (dtype {x.dtype})")
    if not (np.issubdtype(y.dtype, np.number) or y.dtype == np.bool_):
        raise DatasetError(uri, f"y must be numeric (dtype {y.dtype})")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim not in (1, 2) or y.shape[0] != x.shape[0]:
        raise DatasetError(uri, f"x has {x.shape[0]} rows but y has shape {list(y.shape)}; y needs one row per sample")
    if x.shape[0] == 0:
        raise DatasetError(uri, "the data set has no samples")
    x = np.ascontiguousarray(x, dtype=np.float32)
    whole = not np.issubdtype(y.dtype, np.floating)
    integral = y.ndim == 1 and (whole or bool(np.all(np.isfinite(y) & (y == np.round(y)))))
    guess = "classification" if whole and integral and y.min() >= 0 and y.max() < MAX_CLASSES else "regression"
    task = task or guess
    if task == "regression":
        return Dataset(uri, x, np.ascontiguousarray(y, dtype=np.float32), "regression", 0)
    if not integral or y.min() < 0:
        raise DatasetError(uri, "classification labels must be whole numbers >= 0 (class indices)")
    y = y.astype(np.int64)
    num_classes = max(int(y.max()) + 1, len(names), 2)
    return Dataset(uri, x, y.astype(np.int32), "classification", num_classes, tuple(names))
