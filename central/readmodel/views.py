"""The dashboard's reads of the projection beyond jobs and nodes: the event log (filtered,
paged by sequence) and deployments with their serving windows. Each read runs on a
cursor of its own, as ``Projection``'s readers do."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

from central.readmodel.projection import Projection

__all__ = ["DeploymentMetricRow", "DeploymentRow", "EventRow", "RAW_CHARS", "deployment_metrics", "deployments",
           "event_types", "events"]

RAW_CHARS = 4000  # of an event's JSON in the log (the whole of it is one SQL query away)


class EventRow(msgspec.Struct, kw_only=True):
    seq: int
    type: str | None = None
    subject: str | None = None
    aggregate_id: str | None = None
    occurred_at: datetime | None = None
    raw: str | None = None


class DeploymentRow(msgspec.Struct, kw_only=True):
    deployment_id: str
    name: str | None = None
    status: str | None = None
    model_id: str | None = None
    node_id: str | None = None
    http_endpoint: str | None = None
    error: str | None = None
    requested_at: datetime | None = None
    running_at: datetime | None = None
    stopped_at: datetime | None = None


class DeploymentMetricRow(msgspec.Struct, kw_only=True):
    deployment_id: str
    node_id: str | None = None
    window_start: datetime | None = None
    window_s: float | None = None
    requests: int | None = None
    errors: int | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    mean_batch: float | None = None


def events(projection: Projection, *, type_: str | None, aggregate: str | None, before: int | None,
           limit: int) -> list[EventRow]:
    """The newest events first (older than sequence ``before``), of one type and/or one
    aggregate (a job, node or deployment id)."""
    clauses, params = [], []
    if type_:
        clauses.append("type = ?")
        params.append(type_)
    if aggregate:
        clauses.append("aggregate_id = ?")
        params.append(aggregate)
    if before:
        clauses.append("seq < ?")
        params.append(before)
    where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
    rows = _dicts(projection, f"SELECT seq, type, subject, aggregate_id, occurred_at, left(raw::VARCHAR, {RAW_CHARS}) "
                              f"AS raw FROM events {where} ORDER BY seq DESC LIMIT ?", [*params, limit])
    return [msgspec.convert(r, EventRow) for r in rows]


def event_types(projection: Projection) -> list[str]:
    return [r["type"] for r in _dicts(projection, "SELECT DISTINCT type FROM events WHERE type IS NOT NULL "
                                                  "ORDER BY type", [])]


def deployments(projection: Projection) -> list[DeploymentRow]:
    rows = _dicts(projection, "SELECT * EXCLUDE (state) FROM deployments ORDER BY requested_at DESC, deployment_id", [])
    return [msgspec.convert(r, DeploymentRow, strict=False) for r in rows]


def deployment_metrics(projection: Projection, deployment_id: str, limit: int) -> list[DeploymentMetricRow]:
    """A deployment's serving windows, oldest first (the last ``limit`` of them)."""
    rows = _dicts(projection, "SELECT * FROM (SELECT * EXCLUDE (seq) FROM deployment_metrics WHERE deployment_id = ? "
                              "ORDER BY window_start DESC LIMIT ?) ORDER BY window_start", [deployment_id, limit])
    return [msgspec.convert(r, DeploymentMetricRow) for r in rows]


def _dicts(projection: Projection, sql: str, params: list[Any]) -> list[dict[str, Any]]:
    cursor = projection.cursor()
    try:
        cursor.execute(sql, params)
        columns = [d[0] for d in cursor.description]
        return [dict(zip(columns, row)) for row in cursor.fetchall()]
    finally:
        cursor.close()
