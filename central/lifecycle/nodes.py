"""The node lifecycle, pure: registration (and who may register an id again), loss and
deregistration; ``anomaly``/``evolve`` used by central's state and the projection alike.

A node id belongs to whoever first registered it. Registering it again must prove to be
that node by sending its earlier session token (``authorization: Bearer`` on
RegisterNode): the same HMAC central already checks on every call, so no new key
material or protocol field is needed, and it survives central's restarts. Without that
proof the caller is given a fresh id, and the node that holds the id keeps its session
and its jobs.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import msgspec
from msgspec.structs import replace
from datetime import datetime

from central.lifecycle.jobs import decision_event_id
from central.lifecycle.errors import Refused
from events import Device, Event, NodeDeregistered, NodeLost, NodeRegistered

__all__ = [
    "Deregister", "MarkLost", "NodeState", "Register", "decide_node", "evolve_node", "largest_node_memory", "node_anomaly",
    "registration_id",
]


class NodeState(msgspec.Struct, frozen=True, kw_only=True):
    node_id: str
    status: str = "new"  # online, lost, deregistered
    name: str = ""
    endpoint: str = ""
    devices: tuple = ()
    cpu_cores: int = 0
    ram_bytes: int = 0
    slots: int = 1
    version_text: str = ""
    token_sha256: str = ""
    registration_id: str = ""  # event id of its NodeRegistered: the session token derives from it
    registered_at: float = 0.0
    lost_at: float = 0.0
    region: str = ""


@dataclass(frozen=True, slots=True)
class Register:
    """A registration: what the node said, the SHA-256 of the session token it will get,
    and whether it proved to hold the id already (its earlier session token)."""

    name: str
    endpoint: str
    token_sha256: str
    proven: bool = False
    devices: list[Device] = field(default_factory=list)
    cpu_cores: int = 0
    ram_bytes: int = 0
    slots: int = 1
    version: str = ""
    region: str = ""


@dataclass(frozen=True, slots=True)
class MarkLost:
    last_seen: datetime
    reason: str = "heartbeat timeout"


@dataclass(frozen=True, slots=True)
class Deregister:
    reason: str = ""


def registration_id(node_id: str, version: int) -> str:
    """The event id of a registration of ``node_id`` at stream ``version``; the session
    token is derived from it, so the adapter computes it before deciding."""
    return decision_event_id(node_id, version, "registered")


def decide_node(state: NodeState | None, command: Register | MarkLost | Deregister, now: datetime,
                version: int = 0, node_id: str = "") -> list[Event]:
    """The events of ``command`` on a node at stream ``version``; raises ``Refused``."""
    if isinstance(command, Register):
        node_id = state.node_id if state is not None else node_id
        if state is not None and state.status != "new" and not command.proven:
            raise Refused(403, f"node id {node_id!r} is registered to another node: send its earlier "
                               "session token to register it again", reason="exists")
        return [NodeRegistered(
            node_id=node_id, name=command.name, endpoint=command.endpoint, devices=list(command.devices),
            cpu_cores=command.cpu_cores, ram_bytes=command.ram_bytes, slots=command.slots,
            version=command.version, region=command.region, session_token_sha256=command.token_sha256, occurred_at=now,
            event_id=registration_id(node_id, version))]
    if state is None or state.status == "new":
        raise Refused(404, "unknown node")
    if state.status != "online":
        raise Refused(409, f"node {state.node_id!r} is {state.status}, not online")
    if isinstance(command, MarkLost):
        return [NodeLost(node_id=state.node_id, last_seen=command.last_seen, reason=command.reason, occurred_at=now,
                         event_id=decision_event_id(state.node_id, version, "lost"))]
    return [NodeDeregistered(node_id=state.node_id, reason=command.reason, occurred_at=now,
                             event_id=decision_event_id(state.node_id, version, "deregistered"))]


def node_anomaly(state: NodeState | None, event: Event) -> str | None:
    if isinstance(event, NodeRegistered):
        return None
    if state is None or state.status != "online":
        return f"{type(event).__name__} for a node that is {'unknown' if state is None else state.status}"
    return None


def evolve_node(state: NodeState | None, event: Event) -> NodeState | None:
    if node_anomaly(state, event) is not None:
        return state
    match event:
        case NodeRegistered():
            return NodeState(node_id=event.node_id, status="online", name=event.name, endpoint=event.endpoint,
                             devices=tuple(event.devices), cpu_cores=event.cpu_cores, ram_bytes=event.ram_bytes,
                             slots=max(1, event.slots), version_text=event.version,
                             token_sha256=event.session_token_sha256, registration_id=event.event_id,
                             registered_at=event.occurred_at.timestamp(), region=event.region)
        case NodeLost():
            return replace(state, status="lost", lost_at=event.occurred_at.timestamp())
        case NodeDeregistered():
            return replace(state, status="deregistered", lost_at=event.occurred_at.timestamp())
    return state


def largest_node_memory(nodes: Iterable[Any], device: str | None = None) -> int | None:
    """The most memory one job can have on any of ``nodes`` (accelerator memory, or RAM
    on a CPU-only node), among those with ``device`` when given; None if unknown."""
    best = 0
    for node in nodes:
        devices = [d for d in node.devices if d.memory_bytes > 0]
        accelerators = [d.memory_bytes for d in devices if d.type != "cpu" and device in (None, d.type)]
        if accelerators:
            best = max(best, *accelerators)
        elif device in (None, "cpu") and not any(d.type != "cpu" for d in node.devices):
            best = max(best, node.ram_bytes, *(d.memory_bytes for d in devices))
    return best or None
