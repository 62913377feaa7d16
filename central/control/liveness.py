"""Liveness: nodes heartbeat (every 10 s by default); after 30 s without one a node is lost.

- ``beat(node_id)`` records a heartbeat that reached this central; heartbeats that reached
  another central on the same stream arrive as telemetry (``telemetry.node.<id>``), so
  every central knows every node's last beat.
- A node that registered (or was online when this central started) counts as seen then.
- NodeLost is appended with the node's expected version, so two centrals never record
  it twice. A lost (or deregistered) node's assigned and running jobs are requeued with
  attempt + 1 and their last checkpoint; after 3 attempts the job fails. That
  reconciliation runs on every tick, so it also finishes work a crashed central left.
- A lost node that heartbeats is answered ``keep_alive = false`` and registers again.
- Central's own pauses do not count against nodes: a node is lost only if central could
  have heard from it for the whole timeout. A stall of central's loop (a VM pause, GC,
  SIGSTOP) shows as a late tick, and the time it was stalled extends every deadline.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from datetime import datetime, timezone
from typing import Callable


from bus import BusError, EventBus
from central.control.commands import Commands
from central.lifecycle.deciders import Requeue
from central.lifecycle.errors import Refused
from central.lifecycle.nodes import MarkLost
from central.lifecycle.state import CentralState
from events import NodeRegistered

log = logging.getLogger("cyxwiz.central.liveness")

METRIC_HISTORY = 360  # heartbeats kept per node for GetNodeMetrics


class Liveness:
    def __init__(
        self,
        state: CentralState,
        bus: EventBus,
        commands: Commands,
        *,
        heartbeat_s: float = 10.0,
        timeout_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.state = state
        self.bus = bus
        self.commands = commands
        self.heartbeat_s = heartbeat_s
        self.timeout_s = timeout_s
        self.clock = clock
        self.started = clock()
        self.last_seen: dict[str, float] = {}
        self.stalled_s = 0.0  # the time central's loop was stalled, all told
        self._stalled_at_seen: dict[str, float] = {}  # stalled_s when each node was last seen
        self._last_tick: float | None = None
        self.metrics: dict[str, deque] = {}
        self.reported: dict = {}  # node id -> the NodeInfo of its latest heartbeat (available memory)
        self.lost_total = 0
        self.requeued_total = 0
        self._sub = None
        state.listen(self._on_event)

    @property
    def tick_s(self) -> float:
        return max(0.05, min(self.heartbeat_s, self.timeout_s / 4))

    def _on_event(self, event, old, new) -> None:
        if isinstance(event, NodeRegistered):
            self.beat(event.node_id)

    def beat(self, node_id: str) -> None:
        self.last_seen[node_id] = self.clock()
        self._stalled_at_seen[node_id] = self.stalled_s

    def record_metrics(self, node_id: str, point) -> None:
        history = self.metrics.get(node_id)
        if history is None:
            history = self.metrics[node_id] = deque(maxlen=METRIC_HISTORY)
        history.append(point)

    def last_seen_unix(self, node_id: str) -> float:
        seen = self.last_seen.get(node_id)
        return 0.0 if seen is None else time.time() - (self.clock() - seen)

    async def follow_heartbeats(self) -> None:
        """Hear the heartbeats that reach other centrals (every central does, holder or
        not, so the one that takes the lease over knows every node's last beat)."""
        try:
            self._sub = await self.bus.listen("telemetry.node.*", self._on_telemetry)
        except BusError as exc:
            log.warning("cannot follow heartbeats sent to other centrals: %s", exc)

    async def run(self) -> None:
        """The checks, on the holder of the lease (``central.control.leadership``)."""
        if self._sub is None:
            await self.follow_heartbeats()
        self.started = self._last_tick = self.clock()  # a node never heard of gets a whole timeout
        while True:
            await asyncio.sleep(self.tick_s)
            self.note_tick()
            try:
                await self.check()
            except BusError as exc:
                log.warning("liveness check postponed: %s", exc)

    def _on_telemetry(self, subject: str) -> None:
        self.beat(subject.rsplit(".", 1)[-1])

    def note_tick(self) -> None:
        """Count how late this tick is: beyond a tenth of the timeout, central was stalled."""
        now = self.clock()
        if self._last_tick is not None:
            late = now - self._last_tick - self.tick_s
            if late > 0.1 * self.timeout_s:
                self.stalled_s += late
                log.warning("central was stalled for %.1fs: node deadlines extended by as much", late)
        self._last_tick = now

    def silent_for(self, node_id: str, now: float) -> float:
        """How long central could have heard from the node and did not."""
        seen = self.last_seen.get(node_id, self.started)
        stalled_since = self.stalled_s - self._stalled_at_seen.get(node_id, 0.0)
        return now - seen - stalled_since

    async def check(self) -> None:
        """Declare silent nodes lost, then requeue the jobs that lost nodes still hold."""
        now = self.clock()
        for node in list(self.state.online_nodes()):
            if self.silent_for(node.node_id, now) > self.timeout_s:
                await self._mark_lost(node.node_id, self.last_seen.get(node.node_id, self.started))
        for node_id, held in list(self.state.node_jobs.items()):
            node = self.state.nodes.get(node_id)
            if held and (node is None or node.status != "online"):
                await self.requeue_jobs_of(node_id, f"node {node_id} lost")

    async def _mark_lost(self, node_id: str, seen: float) -> None:
        last_seen = datetime.fromtimestamp(time.time() - (self.clock() - seen), timezone.utc)
        try:
            await self.commands.node(node_id, MarkLost(last_seen, f"no heartbeat for {self.timeout_s:g}s"))
        except Refused:
            return  # already lost, or re-registered meanwhile
        self.lost_total += 1
        log.warning("node %s lost: no heartbeat for %.1fs while central was listening", node_id,
                    self.silent_for(node_id, self.clock()))

    async def requeue_jobs_of(self, node_id: str, reason: str) -> None:
        for job_id in sorted(self.state.node_jobs.get(node_id, ())):
            try:
                await self.commands.job(job_id, Requeue(reason, excluded_node=node_id))
            except Refused:
                continue
            self.requeued_total += 1

    async def stop(self) -> None:
        if self._sub is not None:
            await self._sub.stop()
            self._sub = None
