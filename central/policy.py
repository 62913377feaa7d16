"""Pure scheduler policy: the order of the queue, which nodes fit a job, and which is best.

- Queue order: higher priority first, then earlier submission, then the job id.
- A node fits when it has a free slot and the job's required device (``cuda``, ...)
  with at least the job's memory; a CPU job (or one that names no device) fits any node
  whose RAM, or one of whose devices, holds that memory.
- Score: a lightly loaded node first, then one that completed more jobs, then the one
  up longest; ties go to the smaller node id, so the choice is deterministic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

from events import Device, Requirements


@dataclass(frozen=True, slots=True)
class Candidate:
    """A node as the policy sees it at one moment."""

    node_id: str
    devices: tuple[Device, ...]
    ram_bytes: int
    slots: int
    running: int = 0
    completed: int = 0
    uptime_s: float = 0.0

    @property
    def free(self) -> int:
        return self.slots - self.running


def queue_key(priority: int, submitted_at: float, job_id: str) -> tuple[int, float, str]:
    """Sort key of a queued job: smaller goes first."""
    return (-priority, submitted_at, job_id)


def fits(requirements: Requirements, devices: Iterable[Device], ram_bytes: int) -> bool:
    """True when a node with ``devices`` and ``ram_bytes`` can run a job needing ``requirements``."""
    need = max(0, requirements.min_memory_bytes)
    wanted = (requirements.device or "").lower()
    if wanted in ("", "cpu", "any", "unknown"):
        return need <= ram_bytes or any(need <= d.memory_bytes for d in devices)
    return any(d.type.lower() == wanted and need <= d.memory_bytes for d in devices)


def score(node: Candidate) -> float:
    """Higher is better: load dominates, then completed jobs, then uptime."""
    load = node.running / max(1, node.slots)
    history = math.log1p(max(0, node.completed)) / 20.0  # < 1 for any realistic count
    uptime = min(max(0.0, node.uptime_s), 86400.0) / 86400.0 / 100.0
    return -load * 10.0 + history + uptime


def choose(requirements: Requirements, nodes: Iterable[Candidate]) -> str | None:
    """The id of the best node with a free slot that fits, or None."""
    best: tuple[float, str] | None = None
    for node in nodes:
        if node.free <= 0 or not fits(requirements, node.devices, node.ram_bytes):
            continue
        key = (score(node), node.node_id)
        if best is None or key[0] > best[0] or (key[0] == best[0] and key[1] < best[1]):
            best = key
    return None if best is None else best[1]
