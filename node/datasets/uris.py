"""A data set URI taken apart: scheme, name, query parameters and the ``task`` override."""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass

from node.datasets.dataset import DatasetError

__all__ = ["DatasetURI", "parse_uri"]

TASKS = ("classification", "regression")


@dataclass(frozen=True)
class DatasetURI:
    """``uri`` split: ``name`` is host and path joined (``digits``, ``x.csv``, ``classification``);
    ``query`` holds the parameters other than ``task``."""

    uri: str
    scheme: str
    netloc: str
    path: str
    query: dict[str, str]
    task: str | None

    @property
    def name(self) -> str:
        return self.netloc + self.path

    def no_query(self) -> None:
        """Refuse parameters other than ``task`` (file and object URIs take none)."""
        if self.query:
            raise DatasetError(self.uri, f"unknown query parameter {sorted(self.query)[0]!r}: only task is allowed")


def parse_uri(uri: str) -> DatasetURI:
    parts = urllib.parse.urlsplit(uri)
    query: dict[str, str] = {}
    for key, value in urllib.parse.parse_qsl(parts.query, keep_blank_values=True):
        if key in query:
            raise DatasetError(uri, f"query parameter {key!r} is given twice")
        query[key] = value
    task = query.pop("task", None)
    if task not in (None, *TASKS):
        raise DatasetError(uri, f"task {task!r} is not supported: choose classification or regression")
    return DatasetURI(uri, parts.scheme, parts.netloc, parts.path, query, task)
