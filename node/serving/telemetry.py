"""Serving statistics as telemetry: each closed 5 s window of a deployment is published
as ``DeploymentStats`` on ``telemetry.deployment.<id>`` (nodes may publish telemetry,
never ``events.>``).

A window that cannot be published (NATS away, or the connection not made in time on a
loaded machine) waits in a bounded queue and is tried again every ``RETRY_S`` until it
goes, oldest first; each carries its event id as ``Nats-Msg-Id``, so one that went out
before an error is stored once. Past ``MAX_UNSENT`` waiting windows the oldest are
dropped (logged): a node cut off from NATS for an hour keeps its memory."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from datetime import datetime, timezone

from bus import EventBus
from events import DeploymentStats
from node.serving.deployments import Deployment
from node.serving.stats import Window

__all__ = ["MAX_UNSENT", "RETRY_S", "StatsPublisher"]

log = logging.getLogger(__name__)

RETRY_S = 2.0
MAX_UNSENT = 1024  # about 85 minutes of one busy deployment's windows


class StatsPublisher:
    def __init__(self, nats_url: str, node_id: Callable[[], str], credentials=None, *,
                 retry_s: float = RETRY_S, max_unsent: int = MAX_UNSENT) -> None:
        self.nats_url = nats_url
        self.credentials = credentials  # the node's NATS seed (None: $CYXWIZ_NATS_CREDS)
        self.node_id = node_id
        self.retry_s = retry_s
        self._bus: EventBus | None = None
        self._unsent: deque[DeploymentStats] = deque(maxlen=max_unsent)  # full: the oldest goes
        self._dropped = 0
        self._flushing: asyncio.Task | None = None

    @property
    def unsent(self) -> int:
        """Windows waiting to be published."""
        return len(self._unsent)

    def __call__(self, d: Deployment, w: Window) -> None:
        if len(self._unsent) == self._unsent.maxlen:
            self._dropped += 1
            if self._dropped == 1 or self._dropped % 100 == 0:
                log.warning("serving stats: %d window(s) dropped, NATS has been unreachable too long", self._dropped)
        self._unsent.append(DeploymentStats(
            deployment_id=d.deployment_id, node_id=self.node_id() or "", window_s=w.end - w.start,
            window_start=datetime.fromtimestamp(w.start, timezone.utc), requests=w.requests, errors=w.errors,
            p50_ms=w.p50_ms, p99_ms=w.p99_ms, mean_batch=w.mean_batch,
        ))
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.get_running_loop().create_task(self._flush(), name="serving-stats")

    async def _flush(self) -> None:
        """Publish what waits, oldest first; on a failure wait ``retry_s`` and go on."""
        while self._unsent:
            try:
                if self._bus is None or self._bus.nc.is_closed:
                    self._bus = await EventBus.connect(self.nats_url, timeout=5.0, name="cyxwiz-node-serving",
                                                       setup=False, credentials=self.credentials)
                event = self._unsent[0]
                await self._bus.publish_telemetry(event)
                if self._unsent and self._unsent[0] is event:  # not pushed out meanwhile by a full queue
                    self._unsent.popleft()
            except Exception as exc:  # NATS away or slow: keep the window, try again
                log.info("serving stats not published yet (%d waiting): %s; retrying in %.0f s",
                         len(self._unsent), exc, self.retry_s)
                await asyncio.sleep(self.retry_s)

    async def close(self, timeout: float = 5.0) -> None:
        """Publish what waits if NATS takes it within ``timeout``, then disconnect."""
        if self._flushing is not None and not self._flushing.done():
            try:
                await asyncio.wait_for(asyncio.shield(self._flushing), timeout)
            except asyncio.TimeoutError:
                self._flushing.cancel()
                log.warning("serving stats: %d window(s) not published at close", len(self._unsent))
        if self._bus is not None:
            await self._bus.close()
