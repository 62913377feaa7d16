"""Reading Prometheus text exposition in tests, with prometheus-client's own parser."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    """Every sample as {(name, frozenset of label items): value}."""
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(text: str | dict, metric: str, /, **labels: str) -> float | None:
    """The sample ``metric`` with exactly ``labels``; None when there is none."""
    table = samples(text) if isinstance(text, str) else text
    return table.get((metric, frozenset(labels.items())))


def total(text: str | dict, metric: str, /, **labels: str) -> float:
    """The sum of the samples ``metric`` whose labels include ``labels`` (0 when none)."""
    table = samples(text) if isinstance(text, str) else text
    want = set(labels.items())
    return sum(v for (n, items), v in table.items() if n == metric and want <= items)
