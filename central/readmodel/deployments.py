"""The read model's deployments: tables ``deployments`` (one row per deployment, its
current state) and ``deployment_metrics`` (the nodes' 5 s serving windows), folded by the
same lifecycle rules as central's state (:mod:`central.lifecycle.deployments`).

Hooked into the batch fold (``central.readmodel.fold``) and its commit
(``central.readmodel.projection``) with a few lines; deployment events are rare, so the
touched rows are read back, evolved and rewritten through Arrow per batch.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pyarrow as pa

from central.lifecycle.deployments import DeploymentState, fold_deployment
from events import DeploymentStats, subject_for

__all__ = ["DEPLOYMENT_SCHEMA", "DEPLOYMENT_STATEMENTS", "DEPLOYMENT_TABLES", "DeploymentBatch"]

DEPLOYMENT_TABLES = ("deployments", "deployment_metrics")

DEPLOYMENT_SCHEMA = """
CREATE TABLE IF NOT EXISTS deployments (
    deployment_id VARCHAR, name VARCHAR, status VARCHAR, model_id VARCHAR, model_uri VARCHAR, sha256 VARCHAR,
    node_id VARCHAR, grpc_endpoint VARCHAR, http_endpoint VARCHAR, error VARCHAR, requested_at TIMESTAMP,
    running_at TIMESTAMP, stopped_at TIMESTAMP, updated_seq BIGINT, state JSON);
CREATE TABLE IF NOT EXISTS deployment_metrics (
    deployment_id VARCHAR, node_id VARCHAR, window_start TIMESTAMP, window_s DOUBLE, requests BIGINT,
    errors BIGINT, p50_ms DOUBLE, p99_ms DOUBLE, mean_batch DOUBLE, seq BIGINT);
"""

DEPLOYMENT_STATEMENTS = (
    ("b_deployments", "DELETE FROM deployments WHERE deployment_id IN (SELECT deployment_id FROM b_deployments); "
                      "INSERT INTO deployments BY NAME SELECT * EXCLUDE (state), state::JSON AS state FROM b_deployments;"),
    ("b_deployment_metrics", "INSERT INTO deployment_metrics BY NAME SELECT * FROM b_deployment_metrics;"),
)

_S, _T, _I, _D = pa.string(), pa.timestamp("us"), pa.int64(), pa.float64()
_ROWS = pa.schema([("deployment_id", _S), ("name", _S), ("status", _S), ("model_id", _S), ("model_uri", _S),
                   ("sha256", _S), ("node_id", _S), ("grpc_endpoint", _S), ("http_endpoint", _S), ("error", _S),
                   ("requested_at", _T), ("running_at", _T), ("stopped_at", _T), ("updated_seq", _I), ("state", _S)])
_METRICS = pa.schema([("deployment_id", _S), ("node_id", _S), ("window_start", _T), ("window_s", _D),
                      ("requests", _I), ("errors", _I), ("p50_ms", _D), ("p99_ms", _D), ("mean_batch", _D), ("seq", _I)])


def _micros(seconds: float) -> int | None:
    return int(seconds * 1_000_000) if seconds else None


class DeploymentBatch:
    """The deployment events and serving windows of one batch."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, Any, str]] = []  # (message, event, raw)
        self.metrics: list[tuple] = []

    def add(self, batch, m, event, raw: str) -> None:
        expected = subject_for(event)
        if expected != m.subject:
            return batch.bad(m, f"{type(event).__name__} belongs on subject {expected}, not {m.subject}", raw)
        if isinstance(event, DeploymentStats):
            self.metrics.append((event.deployment_id, event.node_id, int(event.window_start.timestamp() * 1e6),
                                 event.window_s, event.requests, event.errors, event.p50_ms, event.p99_ms,
                                 event.mean_batch, m.seq))
            return None
        occurred = int(event.occurred_at.timestamp() * 1e6)
        for column, value in zip(batch.events, (m.seq, m.subject, type(event).__name__, event.event_id, occurred,
                                                m.time_ns // 1000, event.deployment_id, raw)):
            column.append(value)
        self.events.append((m, event, raw))
        return None

    def tables(self, con, batch) -> dict[str, pa.Table]:
        """Fold the batch's events onto the stored rows; anomalies go to ``batch``."""
        out: dict[str, pa.Table] = {}
        if self.metrics:
            out["b_deployment_metrics"] = pa.Table.from_arrays(
                [pa.array(c, type=f.type) for c, f in zip(zip(*self.metrics), _METRICS)], schema=_METRICS)
        if not self.events:
            return out
        ids = sorted({e.deployment_id for _, e, _ in self.events})
        known: dict[str, DeploymentState] = {}
        placeholders = ",".join("?" for _ in ids)
        for (text,) in con.execute(f"SELECT state FROM deployments WHERE deployment_id IN ({placeholders})", ids).fetchall():
            data = json.loads(text)
            known[data["deployment_id"]] = DeploymentState(**data)
        for m, event, raw in self.events:
            reason = fold_deployment(known, event, m.seq)
            if reason is not None:
                batch.bad(m, reason, raw)
        rows = [(d.deployment_id, d.name, d.status, d.model_id, d.model_uri, d.sha256, d.node_id, d.grpc_endpoint,
                 d.http_endpoint, d.error, _micros(d.requested_at), _micros(d.running_at), _micros(d.stopped_at),
                 d.version, json.dumps(dataclasses.asdict(d))) for d in known.values()]
        if not rows:  # only anomalies about deployments never requested
            return out
        out["b_deployments"] = pa.Table.from_arrays([pa.array(c, type=f.type) for c, f in zip(zip(*rows), _ROWS)],
                                                    schema=_ROWS)
        return out
