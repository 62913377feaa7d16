"""How the CLI writes values for people: times as local time and how long ago, progress as
a percentage, epochs as whole numbers, sizes in binary units, metrics rounded. ``--json``
keeps the raw values for scripts.

The consoles: on a terminal rich wraps to its width; piped (not a TTY) nothing is
wrapped or cut, so ids and SHA-256 digests stay whole on one line.
"""

from __future__ import annotations

import time
from datetime import datetime

from rich.console import Console

__all__ = ["console", "err_console", "epoch_text", "make_console", "metric_text", "percent_text", "size_text",
           "when_text"]

_PIPED_WIDTH = 100_000  # wide enough that no table cell is cut or wrapped


def make_console(*, stderr: bool = False) -> Console:
    """A rich Console that wraps on a terminal and never when piped."""
    probe = Console(stderr=stderr)
    if probe.is_terminal:
        return probe
    return Console(stderr=stderr, width=_PIPED_WIDTH, soft_wrap=True)


console = make_console()
err_console = make_console(stderr=True)


def when_text(timestamp: float, *, now: float | None = None) -> str:
    """``2026-12-02 00:41:12 (5 min ago)`` in local time; ``-`` for none (0)."""
    if not timestamp:
        return "-"
    now = time.time() if now is None else now
    local = datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M:%S")
    return f"{local} ({_ago(now - timestamp)})"


def _ago(seconds: float) -> str:
    if seconds < 0:
        return "in the future"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{int(seconds // size)} {unit} ago"
    return f"{int(seconds)} s ago"


def percent_text(fraction: float) -> str:
    """``6.7%`` for 0.0667; whole numbers without a decimal (``100%``)."""
    value = round(fraction * 100, 1)
    return f"{value:g}%"


def epoch_text(epoch: float, total: float) -> str:
    """``3/10``: epochs are whole numbers."""
    return f"{int(epoch)}/{int(total)}"


def metric_text(value: float) -> str:
    """A metric with 4 significant decimals (``0.0312``, ``1234.5``)."""
    if isinstance(value, int) or float(value).is_integer():
        return str(int(value))
    return f"{value:.4g}" if abs(value) < 1 else f"{value:,.4f}".rstrip("0").rstrip(".")


def size_text(size: int) -> str:
    """``1.2 MiB``; ``-`` for none."""
    if not size:
        return "-"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"
