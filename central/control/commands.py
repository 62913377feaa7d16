"""The thin shell around the deciders: load from state, decide, append, wait until folded.

Every append carries the aggregate's expected version (the last sequence on its
subject); a ``ConcurrencyConflict`` means another writer (another central, a script)
moved the aggregate on, so we catch up with the stream and decide again. A call returns
once its events are in central's state, so the caller's next read sees them.

A node may report before this central has folded the JobAssigned that gave it the job:
this central's scheduler appended it a moment ago, or another central (the holder of
the scheduling lease) did. A node report refused because the node does not hold the
job is decided again, once, after central's state has folded everything the stream
held when the refusal came (and everything this process appended).
"""

from __future__ import annotations

from datetime import datetime
from typing import Callable, Sequence

from bus import BusError, ConcurrencyConflict, EventBus
from central.lifecycle.deciders import Finish, JobCommand, Progress, decide
from central.lifecycle.errors import Refused
from central.lifecycle.nodes import decide_node
from central.lifecycle.state import CentralState
from events import Event, utc_now

__all__ = ["Commands", "RETRIES"]

RETRIES = 4


class Commands:
    def __init__(self, state: CentralState, bus: EventBus, clock: Callable[[], datetime] = utc_now) -> None:
        self.state = state
        self.bus = bus
        self.clock = clock
        self.appended_through = 0  # the highest sequence this process appended

    async def job(self, job_id: str, command: JobCommand) -> list[Event]:
        """Decide ``command`` on the job and append the events; raises ``Refused``."""
        caught_up = False
        for _ in range(RETRIES):
            version = self.state.job_version(job_id)
            try:
                events = decide(self.state.jobs.get(job_id), command, self.clock(), version)
            except Refused as exc:
                if caught_up or not (exc.reason == "not_holder" and isinstance(command, (Progress, Finish))):
                    raise
                caught_up = True  # once: the JobAssigned may not be folded here yet
                await self.catch_up()
                continue
            if await self._append(events, version):
                return events
        raise Refused(409, f"job {job_id!r} kept changing while deciding; try again")

    async def node(self, node_id: str, command) -> list[Event]:
        """Decide on the node; ``command`` may be a function of the node's version (a
        registration, whose session token derives from it)."""
        for _ in range(RETRIES):
            version = self.state.node_version(node_id)
            cmd = command(version) if callable(command) else command
            events = decide_node(self.state.nodes.get(node_id), cmd, self.clock(), version, node_id)
            if await self._append(events, version):
                return events
        raise Refused(409, f"node {node_id!r} kept changing while deciding; try again")

    async def decide_each(self, items: Sequence[tuple[str, JobCommand]]) -> list[tuple[Event | None, object]]:
        """Decide single-event commands on many jobs and append them pipelined, each at
        its own expected version; per item (the event, its sequence) or (event or None,
        the ``Refused``/``BusError`` that stopped it). Nothing here waits for the fold."""
        now = self.clock()
        decided: list[tuple[Event | None, object]] = []
        events, versions, slots = [], [], []
        for job_id, command in items:
            version = self.state.job_version(job_id)
            try:
                (event,) = decide(self.state.jobs.get(job_id), command, now, version)
            except Refused as exc:
                decided.append((None, exc))
                continue
            slots.append(len(decided))
            decided.append((event, None))
            events.append(event)
            versions.append(version)
        if events:
            try:
                results = await self.bus.append_each(events, versions)
            except BusError as exc:
                results = [exc] * len(events)
            for slot, event, result in zip(slots, events, results):
                decided[slot] = (event, result)
                if isinstance(result, int):
                    self.appended_through = max(self.appended_through, result)
        return decided

    async def _append(self, events: list[Event], expected: int) -> bool:
        if not events:
            return True
        seq = expected
        try:
            for event in events:
                seq = await self.bus.append(event, expected_version=seq)
                self.appended_through = max(self.appended_through, seq)
        except ConcurrencyConflict:
            await self.catch_up()  # a stored head of the chain is folded; the rest is decided again
            return False
        await self.state.wait_for_seq(seq)
        return True

    async def catch_up(self) -> None:
        """Wait until central's state has folded everything the stream holds now."""
        await self.state.wait_for_seq(max(self.appended_through, await self.bus.last_sequence()))
