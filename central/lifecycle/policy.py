"""Pure scheduler policy: the order of the queue, which nodes fit a job, and which is best.

- Queue order: higher priority first, then earlier submission, then the job id.
- A node fits when it has a free slot and the job's required device (``cuda``, ...)
  with at least the job's memory; a CPU job (or one that names no device) fits any node
  whose RAM, or one of whose devices, holds that memory.
- Score: a lightly loaded node first, then one that completed more jobs, then the one
  up longest; ties go to the smaller node id, so the choice is deterministic.
- A deployment fits a node by the same rule, held against the memory the node has
  *available* (its latest heartbeat, less what deployments still loading there will
  take) rather than its total; ``why_unfit`` says what is missing when none fits.
"""

from __future__ import annotations

import heapq
import math
from typing import Iterable, NamedTuple

from events import Device, Requirements


class Candidate(NamedTuple):
    """A node as the policy sees it at one moment (a tuple: a pass builds one per node)."""

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


def why_waiting(requirements: Requirements, online: Iterable[Candidate]) -> str:
    """Why a queued job that found no free slot waits: no node could ever run it (the
    words say what is missing), or the nodes that could are busy."""
    online = list(online)
    if not online:
        return "no node is online"
    if any(fits(requirements, n.devices, n.ram_bytes) for n in online):
        return "all slots of the nodes that fit it are busy"
    return why_unfit(requirements, online)


def why_unfit(requirements: Requirements, nodes: Iterable[Candidate], memory: str = "") -> str:
    """What none of ``nodes`` has for ``requirements``: the device kind, or enough
    memory (``memory`` qualifies the word, e.g. "available")."""
    nodes = list(nodes)
    if not nodes:
        return "no node is online"
    wanted = (requirements.device or "").lower()
    if wanted not in ("", "cpu", "any", "unknown"):
        having = [d for n in nodes for d in n.devices if d.type.lower() == wanted]
        if not having:
            return f"no online node has a {wanted} device"
        largest = max(d.memory_bytes for d in having)
        where = f"the largest {wanted} device online has {_size(largest)}"
    else:
        largest = max(max([n.ram_bytes] + [d.memory_bytes for d in n.devices]) for n in nodes)
        where = f"the largest online node has {_size(largest)}"
    return f"needs {_size(requirements.min_memory_bytes)} of memory; {where}{' ' + memory if memory else ''}"


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def fitting(requirements: Requirements, nodes: Iterable[Candidate]) -> list[Candidate]:
    """The nodes that fit ``requirements`` (their ``devices`` and ``ram_bytes`` being what
    they have to give: available memory, for a deployment)."""
    return [n for n in nodes if fits(requirements, n.devices, n.ram_bytes)]


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


class Ranking:
    """The nodes of one scheduling pass, best first.

    ``take(requirements)`` answers what ``choose`` would over the nodes as they are now
    (``take(requirements, avoid)`` passes over ``avoid`` while another node fits),
    and counts the slot it takes, so a pass placing k jobs on n nodes costs about
    O(n + k log n) instead of O(k n). Requirements that found no node stay unplaceable
    for the rest of the pass (nodes only fill up during it).
    """

    def __init__(self, nodes: Iterable[Candidate]) -> None:
        self._nodes = {node.node_id: node for node in nodes if node.free > 0}
        self._heap = [(-score(node), node.node_id, node.running) for node in self._nodes.values()]
        heapq.heapify(self._heap)
        self._unplaceable: set[Requirements] = set()

    def __bool__(self) -> bool:
        return bool(self._nodes)

    def take(self, requirements: Requirements, avoid: str | None = None) -> str | None:
        """The best node that fits; ``avoid`` (a requeued job's excluded node) only when
        no other fits."""
        if requirements in self._unplaceable:
            return None
        passed_over = []
        found = fallback = None
        while self._heap:
            entry = heapq.heappop(self._heap)
            node = self._nodes.get(entry[1])
            if node is None or node.running != entry[2]:
                continue  # an entry from before the node took a slot
            passed_over.append(entry)
            if fits(requirements, node.devices, node.ram_bytes):
                if node.node_id != avoid:
                    found = node
                    passed_over.pop()
                    break
                fallback = node
        for entry in passed_over:
            heapq.heappush(self._heap, entry)
        if found is None and fallback is not None:
            found = fallback
            self._heap = [e for e in self._heap if e[1] != found.node_id]
            heapq.heapify(self._heap)
        if found is None:
            self._unplaceable.add(requirements)
            return None
        taken = Candidate(found.node_id, found.devices, found.ram_bytes, found.slots, found.running + 1,
                          found.completed, found.uptime_s)
        if taken.free > 0:
            self._nodes[taken.node_id] = taken
            heapq.heappush(self._heap, (-score(taken), taken.node_id, taken.running))
        else:
            del self._nodes[taken.node_id]
        return taken.node_id
