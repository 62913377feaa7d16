"""The deployment lifecycle, pure: ``evolve`` and ``anomaly`` for central's state and the
read model alike (one rule, one place).

    requested -> placed -> running -> stopped -> deleted
                   \\          \\-> failed (error) / lost (its node was lost: placeable again)
                    \\-> failed

An event that does not fit the deployment's state is an anomaly: it is kept in the
stream, reported, and changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime

from events import (
    DeploymentDeleted,
    DeploymentEvent,
    DeploymentFailed,
    DeploymentPlaced,
    DeploymentRequested,
    DeploymentRunning,
    DeploymentStopped,
)

__all__ = ["ACTIVE", "PLACEABLE", "DeploymentState", "deployment_anomaly", "evolve_deployment", "fold_deployment"]

ACTIVE = frozenset({"requested", "placed", "running"})
PLACEABLE = frozenset({"requested", "lost"})


@dataclass(frozen=True, slots=True)
class DeploymentState:
    deployment_id: str
    status: str = "requested"
    model_id: str = ""
    model_uri: str = ""
    sha256: str = ""
    name: str = ""
    requested_node: str | None = None
    max_batch: int = 0
    runtime_params: dict = field(default_factory=dict)
    user_id: str = ""
    memory_bytes: int = 0
    node_id: str = ""
    endpoint: str = ""
    grpc_endpoint: str = ""
    http_endpoint: str = ""
    error: str = ""
    requested_at: float = 0.0
    running_at: float = 0.0
    stopped_at: float = 0.0
    version: int = 0


def _at(moment: datetime) -> float:
    return moment.timestamp()


def deployment_anomaly(state: DeploymentState | None, event: DeploymentEvent) -> str | None:
    """Why ``event`` does not apply to ``state``; None when it does."""
    name = type(event).__name__
    if isinstance(event, DeploymentRequested):
        if state is not None and state.status != "deleted":
            return f"{name}: deployment exists already ({state.status})"
        return None
    if state is None or state.status == "deleted":
        return f"{name}: no such deployment (it was never requested, or it was deleted)"
    if isinstance(event, DeploymentPlaced):
        return None if state.status in PLACEABLE else f"{name}: a {state.status} deployment cannot be placed"
    if isinstance(event, DeploymentRunning):
        if state.status != "placed":
            return f"{name}: a {state.status} deployment cannot start running"
        return None if event.node_id == state.node_id else f"{name}: from node {event.node_id}, placed on {state.node_id}"
    if isinstance(event, DeploymentFailed):
        return None if state.status in ACTIVE else f"{name}: a {state.status} deployment cannot fail"
    if isinstance(event, DeploymentStopped):
        return None if state.status in ACTIVE | {"lost", "failed"} else f"{name}: a {state.status} deployment cannot stop"
    if isinstance(event, DeploymentDeleted):
        return None if state.status not in ACTIVE else f"{name}: a {state.status} deployment must be stopped first"
    return f"{name}: not a lifecycle event"


def evolve_deployment(state: DeploymentState | None, event: DeploymentEvent) -> DeploymentState:
    """The state after ``event`` (call only when :func:`deployment_anomaly` is None)."""
    if isinstance(event, DeploymentRequested):
        return DeploymentState(
            deployment_id=event.deployment_id, model_id=event.model_id, model_uri=event.model_uri, sha256=event.sha256,
            name=event.name or event.deployment_id, requested_node=event.node_id, max_batch=event.max_batch,
            runtime_params=dict(event.runtime_params), user_id=event.user_id, memory_bytes=event.memory_bytes,
            requested_at=_at(event.occurred_at),
        )
    assert state is not None
    if isinstance(event, DeploymentPlaced):
        return replace(state, status="placed", node_id=event.node_id, endpoint=event.endpoint, error="",
                       grpc_endpoint="", http_endpoint="")
    if isinstance(event, DeploymentRunning):
        return replace(state, status="running", grpc_endpoint=event.grpc_endpoint, http_endpoint=event.http_endpoint,
                       running_at=_at(event.occurred_at))
    if isinstance(event, DeploymentFailed):
        return replace(state, status="lost" if event.lost else "failed", error=event.error,
                       stopped_at=_at(event.occurred_at))
    if isinstance(event, DeploymentStopped):
        return replace(state, status="stopped", stopped_at=_at(event.occurred_at))
    if isinstance(event, DeploymentDeleted):
        return replace(state, status="deleted")
    return state


def fold_deployment(deployments: dict[str, DeploymentState], event: DeploymentEvent, seq: int) -> str | None:
    """Apply ``event`` (stream sequence ``seq``) to ``deployments``; the anomaly, if any."""
    old = deployments.get(event.deployment_id)
    reason = deployment_anomaly(old, event)
    if reason is not None:
        if old is not None:
            deployments[event.deployment_id] = replace(old, version=seq)
        return f"deployment {event.deployment_id}: {reason}"
    deployments[event.deployment_id] = replace(evolve_deployment(old, event), version=seq)
    return None
