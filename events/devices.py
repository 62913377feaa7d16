"""How many devices a job trains on: its hyperparameter ``devices``, ``"1"`` when absent,
a number, or ``"all"`` (every device of the node that runs it). It rides in the job's
hyperparameters, so it travels through the public protocol unchanged.

One rule for everyone who reads it: central's submit check and scheduler, the node's
slots and the trainer's mesh. The global batch is the job's ``batch_size``, split evenly
over the devices, so it must divide by their number. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["ALL", "DEVICES", "MAX_DEVICES", "batch_problem", "requested_devices", "resolve_devices"]

DEVICES = "devices"  # the hyperparameter's name
ALL = 0  # what requested_devices answers for "all"
MAX_DEVICES = 1024


def requested_devices(hyperparameters: Mapping[str, str]) -> int:
    """The number of devices ``hyperparameters`` ask for, :data:`ALL` for ``"all"``;
    ``ValueError`` naming the value otherwise."""
    raw = hyperparameters.get(DEVICES)
    if raw is None:
        return 1
    text = str(raw).strip().lower()
    if text == "all":
        return ALL
    problem = f'devices must be a whole number 1..{MAX_DEVICES} or "all" (got {str(raw)[:40]!r})'
    if not text.isascii() or not text.isdigit():
        raise ValueError(problem)
    count = int(text)
    if not 1 <= count <= MAX_DEVICES:
        raise ValueError(problem)
    return count


def resolve_devices(requested: int, available: int) -> int:
    """The devices a job asking ``requested`` uses on a node with ``available``."""
    return max(1, available) if requested == ALL else requested


def batch_problem(batch_size: int, devices: int) -> str | None:
    """Why ``batch_size`` cannot be split over ``devices`` (None when it can)."""
    if devices <= 1 or batch_size % devices == 0:
        return None
    lower = batch_size - batch_size % devices
    options = f"{lower} or {lower + devices}" if lower else f"{devices}"
    return (f"batch_size {batch_size} must divide by the number of devices ({devices}): the global batch "
            f"is split evenly over them; use {options}")
