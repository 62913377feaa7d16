"""The names the bus and its permissions share: streams, object store buckets, settings."""

from __future__ import annotations

__all__ = ["BUCKETS", "CLUSTER_REPLICAS", "EVENTS_STREAM", "REPLICAS_ENV", "TELEMETRY_STREAM"]

EVENTS_STREAM = "CYXWIZ_EVENTS"
TELEMETRY_STREAM = "CYXWIZ_TELEMETRY"
BUCKETS = ("cyxwiz-checkpoints", "cyxwiz-models", "cyxwiz-datasets")
REPLICAS_ENV = "CYXWIZ_REPLICAS"  # replicas of every stream and bucket we create (1..5)
CLUSTER_REPLICAS = 3  # the default on a cluster (of 3 or more servers; 1 on a lone server)
