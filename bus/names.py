"""The names the bus and its permissions share: streams and object store buckets."""

from __future__ import annotations

__all__ = ["BUCKETS", "EVENTS_STREAM", "TELEMETRY_STREAM"]

EVENTS_STREAM = "CYXWIZ_EVENTS"
TELEMETRY_STREAM = "CYXWIZ_TELEMETRY"
BUCKETS = ("cyxwiz-checkpoints", "cyxwiz-models", "cyxwiz-datasets")
