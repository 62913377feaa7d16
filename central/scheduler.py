"""The scheduler: event driven, it matches queued jobs to nodes with free slots.

It wakes on every change central folds (JobSubmitted from any publisher, JobRejected,
JobRequeued, NodeRegistered, freed slots) and on the end of a node's exclusion. One pass
takes jobs in queue order (``policy.queue_key``), picks a node with ``policy.choose``
and reserves the slot locally until the JobAssigned comes back from the stream.

Appends are pipelined: each JobAssigned is its own task, carrying the job's expected
version, so many are in flight at once and a second central process on the same stream
loses with ``ConcurrencyConflict`` instead of assigning the job twice. The winner, and
only the winner, dispatches.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from typing import Callable

from bus import BusError, ConcurrencyConflict, EventBus
from central.commands import Commands
from central.deciders import Assign, Cancel, JobState, Refused, decide
from central.dispatcher import Dispatcher
from central.policy import Candidate, choose
from central.state import CentralState
from events import JobAssigned, Requirements, utc_now

log = logging.getLogger("cyxwiz.central.scheduler")

ANY = Requirements()


class Scheduler:
    def __init__(
        self,
        state: CentralState,
        bus: EventBus,
        commands: Commands,
        dispatcher: Dispatcher,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_in_flight: int = 2000,
    ) -> None:
        self.state = state
        self.bus = bus
        self.commands = commands
        self.dispatcher = dispatcher
        self.clock = clock
        self.pending: dict[str, str] = {}  # job id -> node id, until the JobAssigned is folded
        self._pending_by_node: Counter[str] = Counter()
        self._tasks: set[asyncio.Task] = set()
        self._wake = asyncio.Event()
        self._limit = asyncio.Semaphore(max_in_flight)
        self.assigned = 0
        self.conflicts = 0
        self.started_at = time.time()
        state.listen(self._on_event)
        dispatcher.on_exclusion_end = self.wake

    def wake(self) -> None:
        self._wake.set()

    def _on_event(self, event, old, new) -> None:
        if isinstance(event, JobAssigned):
            self._unpend(event.job_id)
        self._wake.set()

    def _unpend(self, job_id: str) -> None:
        node_id = self.pending.pop(job_id, None)
        if node_id is not None:
            self._pending_by_node[node_id] -= 1
            if self._pending_by_node[node_id] <= 0:
                del self._pending_by_node[node_id]

    async def run(self) -> None:
        self._wake.set()
        while True:
            await self._wake.wait()
            self._wake.clear()
            self.schedule_pass()
            await asyncio.sleep(0)  # let more events fold before the next pass

    def candidates(self) -> dict[str, Candidate]:
        now_wall = time.time()
        out = {}
        for node in self.state.online_nodes():
            if self.dispatcher.excluded(node.node_id):
                continue
            running = self.state.running_on(node.node_id) + self._pending_by_node.get(node.node_id, 0)
            if running >= node.slots:
                continue
            out[node.node_id] = Candidate(
                node_id=node.node_id, devices=node.devices, ram_bytes=node.ram_bytes, slots=node.slots,
                running=running, completed=self.state.completed_by_node.get(node.node_id, 0),
                uptime_s=now_wall - node.registered_at,
            )
        return out

    def schedule_pass(self) -> int:
        """Assign as many queued jobs as there are fitting free slots; returns how many."""
        free = self.candidates()
        skipped: list[JobState] = []
        started = 0
        while free:
            job = self.state.pop_queued()
            if job is None:
                break
            if job.job_id in self.pending:
                continue
            if job.cancel_requested:
                self._spawn(self._cancel(job.job_id))
                continue
            node_id = choose(job.spec.requirements if job.spec else ANY, free.values())
            if node_id is None:
                skipped.append(job)
                continue
            self._reserve(free, node_id, job.job_id)
            self._spawn(self._assign(job, node_id))
            started += 1
        for job in skipped:
            self.state.push_queued(job)
        return started

    def _reserve(self, free: dict[str, Candidate], node_id: str, job_id: str) -> None:
        self.pending[job_id] = node_id
        self._pending_by_node[node_id] += 1
        node = free[node_id]
        if node.running + 1 >= node.slots:
            del free[node_id]
        else:
            free[node_id] = Candidate(node.node_id, node.devices, node.ram_bytes, node.slots,
                                      node.running + 1, node.completed, node.uptime_s)

    def _spawn(self, coro) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _assign(self, job: JobState, node_id: str) -> None:
        async with self._limit:
            try:
                assigned = decide(job, Assign(node_id), utc_now())[0]
                seq = await self.bus.append(assigned, expected_version=job.version)
            except ConcurrencyConflict:
                self.conflicts += 1
                await self.commands.catch_up()  # the job moved on: decide on what it is now
                self._release(job)
                return
            except Refused:
                self._unpend(job.job_id)
                return
            except BusError as exc:
                log.warning("job %s: JobAssigned not stored (%s); will retry", job.job_id, exc)
                self._release(job)
                await asyncio.sleep(0.5)
                self.wake()
                return
            self.assigned += 1
        await self.dispatcher.dispatch(assigned, seq)

    def _release(self, job: JobState) -> None:
        """Give the slot back and put the job back in the queue (dropped there if it moved on)."""
        self._unpend(job.job_id)
        self.state.push_queued(job)
        self.wake()

    async def _cancel(self, job_id: str) -> None:
        try:
            await self.commands.job(job_id, Cancel("cancel requested"))
        except (Refused, BusError):
            pass

    def status(self) -> dict:
        return {
            "queued": self.state.queue_length(),
            "pending_assignments": len(self.pending),
            "assigned_total": self.assigned,
            "conflicts_total": self.conflicts,
            "dispatch_accepted_total": self.dispatcher.accepted,
            "dispatch_rejected_total": self.dispatcher.rejected,
            "nodes_online": sum(1 for _ in self.state.online_nodes()),
            "nodes_excluded": sorted(n for n in list(self.dispatcher.excluded_until) if self.dispatcher.excluded(n)),
            "free_slots": sum(c.free for c in self.candidates().values()),
            "last_seq": self.state.last_seq,
            "anomalies_total": self.state.anomaly_count,
        }

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
