"""The scheduler: event driven, it matches queued jobs to nodes with free slots.

It wakes on every change central folds (JobSubmitted from any publisher, JobRejected,
JobRequeued, NodeRegistered, freed slots) and on the end of a node's exclusion. One pass
takes jobs in queue order (``policy.queue_key``), picks a node with ``policy.Ranking``
(what ``policy.choose`` would pick) and reserves the slots locally until the JobAssigned
comes back from the stream. Slots count devices: a job on k devices (its hyperparameter
``devices``) holds k slots of its node, and its JobAssigned says k.

Appends are pipelined: a pass's JobAssigned events go out together, each carrying its
job's expected version, so a second central process on the same stream loses with
``ConcurrencyConflict`` instead of assigning the job twice. The winner, and only the
winner, dispatches.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from typing import Callable

from bus import BusError, ConcurrencyConflict, EventBus
from central.adapters.job_limits import check_spec
from central.control.commands import Commands
from central.lifecycle.deciders import Assign, Cancel, Fail, Wait
from central.lifecycle.errors import Refused
from central.lifecycle.jobs import JobState, JobStatus
from central.control.dispatcher import Dispatcher
from central.lifecycle.policy import Candidate, Ranking, slots_taken, why_waiting
from central.lifecycle.state import CentralState
from central.metrics import SCHEDULER_PASS_SECONDS
from events import TERMINAL_JOB_TYPES, JobAssigned, JobSpec, Requirements
from events.devices import requested_devices

log = logging.getLogger("cyxwiz.central.scheduler")

ANY = Requirements()


PASS_GAP_FACTOR = 4  # under load, the gap between passes is this many times the last pass ...
BUSY_LOOP = 0.75  # ... unless the loop's thread was busier than this: then the longest gap
BUSY_WINDOW_S = 0.1  # how often the loop's busy share is sampled (smoothed over samples)


def pass_gap(took_s: float, busy: float, shortest_s: float, longest_s: float) -> float:
    """The time from one scheduling pass to the next under load. A pass costs the loop
    ``took_s`` whatever it places; spacing passes by ``PASS_GAP_FACTOR`` times that keeps
    them to about a fifth of the loop while jobs wait little for the next. A loop busy
    ``busy`` (0..1) past ``BUSY_LOOP`` is saturated: every pass then takes time from calls
    already waiting (a lone central under heavy reports), so passes are spaced the most
    and each places more jobs."""
    if busy > BUSY_LOOP:
        return longest_s
    return min(longest_s, max(shortest_s, PASS_GAP_FACTOR * took_s))


class Scheduler:
    def __init__(
        self,
        state: CentralState,
        bus: EventBus,
        commands: Commands,
        dispatcher: Dispatcher,
        *,
        clock: Callable[[], float] = time.monotonic,
        min_pass_interval_s: float = 0.002,
        max_pass_interval_s: float = 0.02,
    ) -> None:
        self.state = state
        self.min_pass_interval_s = min_pass_interval_s
        self.max_pass_interval_s = max_pass_interval_s
        self.bus = bus
        self.commands = commands
        self.dispatcher = dispatcher
        self.clock = clock
        self.pending: dict[str, tuple[str, int]] = {}  # job id -> (node id, slots), until the JobAssigned is folded
        self._explaining: dict[str, str] = {}  # job id -> the reason being appended (JobWaiting)
        self._pending_by_node: Counter[str] = Counter()
        self._valid: set[str] = set()  # queued jobs whose spec passed the rules of SubmitJob
        self._failing: set[str] = set()  # jobs being failed for a spec no node can run
        self._tasks: set[asyncio.Task] = set()
        self._wake = asyncio.Event()
        self.assigned = 0
        self.conflicts = 0
        self.started_at = time.time()
        state.listen(self._on_event)
        dispatcher.on_exclusion_end = self.wake

    def wake(self) -> None:
        self._wake.set()

    def passed_checks(self, job_id: str) -> None:
        """``job_id`` was submitted through this central's SubmitJob, whose checks are
        stricter than the pass's (they fit the model to the nodes too): not checked again.
        Only a job still waiting is taken (one already placed has left ``_valid``)."""
        job = self.state.jobs.get(job_id)
        if job is not None and job.status == JobStatus.QUEUED:
            self._valid.add(job_id)

    def _on_event(self, event, old, new) -> None:
        if isinstance(event, JobAssigned):
            self._unpend(event.job_id)
            self._valid.discard(event.job_id)
        elif type(event).__name__ in TERMINAL_JOB_TYPES:
            self._valid.discard(event.job_id)
        self._wake.set()

    def _unpend(self, job_id: str) -> None:
        node_id, count = self.pending.pop(job_id, (None, 0))
        if node_id is not None:
            self._pending_by_node[node_id] -= count
            if self._pending_by_node[node_id] <= 0:
                del self._pending_by_node[node_id]

    async def run(self) -> None:
        """A pass on every wake; under load, passes are spaced by ``pass_gap``: a burst of
        submits shares one pass (a pass ranks every node), a job waits for the next pass
        no longer than it must, and a saturated loop keeps its time for the calls. A job
        submitted to an idle scheduler is placed at once."""
        loop = asyncio.get_running_loop()
        last_pass, gap = -1e9, self.min_pass_interval_s
        busy, last_cpu, last_wall = 0.0, time.thread_time(), loop.time()
        self._wake.set()
        while True:
            await self._wake.wait()
            if not self.state.has_queued():
                self._wake.clear()  # nothing to place: no pass, and the next one is not held back
                continue
            rest = last_pass + gap - loop.time()
            if rest > 0:
                await asyncio.sleep(rest)
            self._wake.clear()
            last_pass = loop.time()
            try:
                with SCHEDULER_PASS_SECONDS.time():
                    self.schedule_pass()
            except Exception:  # a bug must not stop scheduling for good
                log.exception("scheduling pass failed")
            now, cpu = loop.time(), time.thread_time()  # the loop thread's CPU: how busy it has been
            if now - last_wall >= BUSY_WINDOW_S:
                busy = 0.5 * busy + 0.5 * min(1.0, (cpu - last_cpu) / (now - last_wall))
                last_cpu, last_wall = cpu, now
            gap = pass_gap(now - last_pass, busy, self.min_pass_interval_s, self.max_pass_interval_s)
            await asyncio.sleep(0)  # let more events fold before the next pass

    def candidates(self) -> dict[str, Candidate]:
        now_wall = time.time()
        out = {}
        for node in self.state.online_nodes():
            if self.dispatcher.excluded(node.node_id):
                continue
            running = self.state.slots_used_on(node.node_id) + self._pending_by_node.get(node.node_id, 0)
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
        if not self.state.has_queued():
            return 0  # most wakes (a job started, an epoch ended) leave nothing to place
        candidates = self.candidates()
        free = Ranking(candidates.values())
        if not free:
            self._explain(self.state.queued(limit=100))  # every slot busy, or no node: the head of the queue says why
            return 0
        skipped: list[JobState] = []
        batch: list[tuple[JobState, str, int]] = []
        while free:
            job = self.state.pop_queued()
            if job is None:
                break
            if job.job_id in self.pending:
                continue
            if job.cancel_requested:
                self.spawn(self._cancel(job.job_id))
                continue
            if self._refuse_if_invalid(job):
                continue
            devices, batch_size = _device_need(job)
            node_id = free.take(job.spec.requirements if job.spec else ANY, avoid=job.excluded_node,
                                devices=devices, batch_size=batch_size)
            if node_id is None:
                skipped.append(job)
                continue
            count = slots_taken(devices, batch_size, candidates[node_id]) or 1
            self._reserve(node_id, job.job_id, count)
            batch.append((job, node_id, count))
        self._explain(skipped)
        for job in skipped:
            self.state.push_queued(job)
        if batch:
            self.spawn(self._assign_batch(batch))
        return len(batch)

    def _refuse_if_invalid(self, job: JobState) -> bool:
        """Fail a queued job that no node could ever run (a script's JobSubmitted did not
        pass SubmitJob's checks): at once, not retried, the rule's words as its error."""
        if job.job_id in self._valid:
            return False
        if job.job_id in self._failing:
            return True
        try:
            check_spec(job.spec or JobSpec(), fit_memory=False)  # a larger node may yet come: not a reason to fail
        except Refused as exc:
            self._failing.add(job.job_id)
            self.spawn(self._fail(job.job_id, exc.message))
            return True
        self._valid.add(job.job_id)
        return False

    async def _fail(self, job_id: str, error: str) -> None:
        try:
            await self.commands.job(job_id, Fail(error, code=400, retryable=False))
        except (Refused, BusError) as exc:
            log.info("job %s: not failed for its spec (%s)", job_id, exc)
        finally:
            self._failing.discard(job_id)

    def _explain(self, skipped: list[JobState]) -> None:
        """Say why each job the pass could not place waits: a JobWaiting when the reason
        changed (``jobs show``, the queue endpoint and SQL read it from the fold)."""
        if not skipped:
            return
        online = [Candidate(n.node_id, n.devices, n.ram_bytes, n.slots) for n in self.state.online_nodes()]
        reasons: dict = {}
        waits: list[tuple[str, Wait]] = []
        for job in skipped:
            if self._refuse_if_invalid(job):
                continue
            requirements = job.spec.requirements if job.spec else ANY
            devices, batch_size = _device_need(job)
            need = (requirements, devices, batch_size)
            if need not in reasons:
                reasons[need] = why_waiting(requirements, online, devices, batch_size)
            reason = reasons[need]
            if reason != job.waiting_reason and self._explaining.get(job.job_id) != reason:
                self._explaining[job.job_id] = reason
                waits.append((job.job_id, Wait(reason)))
        if waits:
            self.spawn(self._append_waits(waits))

    async def _append_waits(self, waits: list[tuple[str, Wait]]) -> None:
        """Append the pass's JobWaiting events pipelined; one that lost to another change of
        its job (it was assigned meanwhile) is dropped: the next pass explains again."""
        try:
            await self.commands.decide_each(waits)
        finally:
            for job_id, wait in waits:
                if self._explaining.get(job_id) == wait.reason:
                    del self._explaining[job_id]

    def _reserve(self, node_id: str, job_id: str, count: int) -> None:
        self.pending[job_id] = (node_id, count)
        self._pending_by_node[node_id] += count

    def spawn(self, coro) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _assign_batch(self, batch: list[tuple[JobState, str, int]]) -> None:
        """Decide and append the pass's assignments pipelined through the command shell,
        each at its job's expected version; only the appends that won are dispatched."""
        commands = [(job.job_id, Assign(node_id, count)) for job, node_id, count in batch]
        results = await self.commands.decide_each(commands)
        conflicted = retry = False
        for (job, _, _), (event, result) in zip(batch, results):
            if isinstance(result, int):
                self.assigned += 1
                self.spawn(self.dispatcher.dispatch(event, result))
                continue
            self._unpend(job.job_id)
            self.state.push_queued(job)  # dropped there if the job moved on
            if isinstance(result, (ConcurrencyConflict, Refused)):
                self.conflicts += 1
                conflicted = True
            else:
                log.warning("job %s: JobAssigned not stored (%s); will retry", job.job_id, result)
                retry = True
        if conflicted:
            await self.commands.catch_up()  # the jobs moved on: decide on what they are now
        if retry:
            await asyncio.sleep(0.5)
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
        """Stop what is in flight (this central stops scheduling: it lost the lease, or
        stops); reservations go with it, as the next holder decides from the stream."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.pending.clear()
        self._pending_by_node.clear()


def _device_need(job: JobState) -> tuple[int, int]:
    """(devices asked for, batch size) of a queued job; a value the submit check would
    refuse (a script's JobSubmitted) counts as one device, and the node refuses the job."""
    if job.spec is None:
        return 1, 0
    try:
        return requested_devices(job.spec.hyperparameters), job.spec.batch_size
    except ValueError:
        return 1, job.spec.batch_size
