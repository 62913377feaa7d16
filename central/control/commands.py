"""The thin shell around the deciders: load from state, decide, append, wait until folded.

Every append carries the aggregate's expected version; a ``ConcurrencyConflict`` means
another writer (another central, a script) moved the aggregate on, so we catch up with
the stream and decide again. A call returns once its events are in central's state, so
the caller's next read sees them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Callable

from bus import ConcurrencyConflict, EventBus
from central.lifecycle.deciders import JobCommand, Refused, decide, decide_node
from central.lifecycle.state import CentralState
from events import Event, utc_now

RETRIES = 4


class Commands:
    def __init__(self, state: CentralState, bus: EventBus, clock: Callable[[], datetime] = utc_now) -> None:
        self.state = state
        self.bus = bus
        self.clock = clock

    async def job(self, job_id: str, command: JobCommand) -> list[Event]:
        """Decide ``command`` on the job and append the events; raises ``Refused``."""
        for _ in range(RETRIES):
            job = self.state.jobs.get(job_id)
            events = decide(job, command, self.clock())
            if await self._append(events, job.version if job else 0):
                return events
        raise Refused(409, f"job {job_id!r} kept changing while deciding; try again")

    async def node(self, node_id: str, command) -> list[Event]:
        for _ in range(RETRIES):
            node = self.state.nodes.get(node_id)
            events = decide_node(node, command, self.clock())
            if await self._append(events, node.version if node else 0):
                return events
        raise Refused(409, f"node {node_id!r} kept changing while deciding; try again")

    async def append(self, events: list[Event], expected_version: int) -> bool:
        """Append a chain of events to one aggregate at ``expected_version``; False on conflict."""
        return await self._append(events, expected_version)

    async def _append(self, events: list[Event], expected: int) -> bool:
        if not events:
            return True
        seq = expected
        try:
            for event in events:
                seq = await self.bus.append(event, expected_version=seq)
        except ConcurrencyConflict:
            await self.catch_up()  # a stored head of the chain is folded; the rest is decided again
            return False
        await self.state.wait_for_seq(seq)
        return True

    async def catch_up(self) -> None:
        """Wait until central's state has folded everything the stream holds now."""
        await self.state.wait_for_seq(await self.bus.last_sequence())
