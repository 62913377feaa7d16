"""Serving statistics as telemetry: each closed 5 s window of a deployment is published
as ``DeploymentStats`` on ``telemetry.deployment.<id>`` (nodes may publish telemetry,
never ``events.>``). Fire and forget: a window lost while NATS is away is acceptable."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime, timezone

from bus import EventBus
from events import DeploymentStats
from node.serving.deployments import Deployment
from node.serving.stats import Window

__all__ = ["StatsPublisher"]

log = logging.getLogger(__name__)


class StatsPublisher:
    def __init__(self, nats_url: str, node_id: Callable[[], str], credentials=None) -> None:
        self.nats_url = nats_url
        self.credentials = credentials  # the node's NATS seed (None: $CYXWIZ_NATS_CREDS)
        self.node_id = node_id
        self._bus: EventBus | None = None
        self._tasks: set[asyncio.Task] = set()

    def __call__(self, d: Deployment, w: Window) -> None:
        event = DeploymentStats(
            deployment_id=d.deployment_id, node_id=self.node_id() or "", window_s=w.end - w.start,
            window_start=datetime.fromtimestamp(w.start, timezone.utc), requests=w.requests, errors=w.errors,
            p50_ms=w.p50_ms, p99_ms=w.p99_ms, mean_batch=w.mean_batch,
        )
        task = asyncio.get_running_loop().create_task(self._publish(event))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _publish(self, event: DeploymentStats) -> None:
        try:
            if self._bus is None or self._bus.nc.is_closed:
                self._bus = await EventBus.connect(self.nats_url, timeout=5.0, name="cyxwiz-node-serving", setup=False,
                                                credentials=self.credentials)
            await self._bus.publish_telemetry(event)
        except Exception as exc:  # NATS away: this window is dropped
            log.info("serving stats of %s not published: %s", event.deployment_id, exc)

    async def close(self) -> None:
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._bus is not None:
            await self._bus.close()
