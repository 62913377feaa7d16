"""A data set URI taken apart: scheme, name, query parameters and the ``task`` override,
checked by the rules central applies at submit (``events.jobspec.check_dataset_uri``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from events.jobspec import InvalidDatasetUri, check_dataset_uri
from node.datasets.dataset import DatasetError

__all__ = ["DatasetURI", "parse_uri"]


@dataclass(frozen=True)
class DatasetURI:
    """``uri`` split: ``name`` is host and path joined (``digits``, ``x.csv``, ``classification``);
    ``query`` holds the parameters other than ``task``; ``params`` a synthetic set's,
    read and checked, with the defaults filled in."""

    uri: str
    scheme: str
    netloc: str
    path: str
    query: dict[str, str]
    task: str | None
    params: Mapping[str, float] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.netloc + self.path


def parse_uri(uri: str) -> DatasetURI:
    """``uri`` taken apart; ``DatasetError`` for what no node could load (the scheme, a
    query parameter, a built-in name, a synthetic parameter, a path's form)."""
    try:
        ref = check_dataset_uri(uri)
    except InvalidDatasetUri as exc:
        raise DatasetError(uri, exc.reason) from None
    return DatasetURI(uri, ref.scheme, ref.netloc, ref.path, dict(ref.query), ref.task, ref.params)
