"""``load_dataset``: the URI's scheme picks the source; every host source ends in the same checks."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from node.datasets.builtin import load_builtin
from node.datasets.dataset import Dataset, DatasetError, checked_dataset
from node.datasets.files import load_file
from node.datasets.objects import load_object
from node.datasets.synthetic import synthetic_dataset
from node.datasets.uris import parse_uri

__all__ = ["load_dataset"]


def load_dataset(
    uri: str,
    *,
    data_roots: Sequence[Path],
    fetch_object: Callable[[str], bytes] | None = None,
    label_column: str | None = None,
) -> Dataset:
    """Load the data set that ``uri`` names (see :mod:`node.datasets`)."""
    parsed = parse_uri(uri)
    if label_column is not None and parsed.scheme in ("builtin", "synthetic"):
        raise DatasetError(uri, "label_column applies to CSV data only")
    if parsed.scheme == "synthetic":  # made on the device, checked by construction
        return synthetic_dataset(parsed)
    if parsed.scheme == "file":
        x, y, names = load_file(parsed, data_roots, label_column)
    elif parsed.scheme == "nats":
        x, y, names = load_object(uri, parsed.name, fetch_object, label_column)
    else:  # builtin: parse_uri allowed only the known schemes
        x, y, names = load_builtin(uri, parsed.name)
    return checked_dataset(uri, x, y, names, parsed.task)
