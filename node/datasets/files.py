"""``file://`` data: absolute paths that resolve (symlinks followed) inside a data root."""

from __future__ import annotations

import urllib.parse
from collections.abc import Sequence
from pathlib import Path

from node.datasets.dataset import DatasetError
from node.datasets.formats import Arrays, npy_pair, npy_sibling, parse_bytes
from node.datasets.uris import DatasetURI

__all__ = ["checked_path", "load_file"]


def load_file(parsed: DatasetURI, data_roots: Sequence[Path], label_column: str | None) -> Arrays:
    uri = parsed.uri
    if parsed.netloc not in ("", "localhost"):
        raise DatasetError(uri, f"file URIs name a local path: file:///path, not host {parsed.netloc!r}")
    raw = urllib.parse.unquote(parsed.path)
    path = checked_path(uri, raw, data_roots)
    if path.is_dir():
        return npy_pair(uri, *(_read_file(uri, Path(raw) / n, data_roots) for n in ("x.npy", "y.npy")))
    if Path(raw).suffix.lower() == ".npy":
        y_path = npy_sibling(uri, Path(raw))
        return npy_pair(uri, _read_file(uri, Path(raw), data_roots), _read_file(uri, y_path, data_roots))
    return parse_bytes(uri, Path(raw).name, _read_file(uri, path, data_roots), label_column)


def checked_path(uri: str, raw: str, data_roots: Sequence[Path]) -> Path:
    """``raw`` resolved, if it is absolute, has no ``..`` and lies under a data root."""
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
    checked = checked_path(uri, str(path), data_roots)
    try:
        return checked.read_bytes()
    except OSError as exc:
        raise DatasetError(uri, f"cannot read {checked}: {exc.strerror}") from exc
