"""Central's own state, folded from the event stream: jobs, nodes, and the queue.

The scheduler decides from this, never from DuckDB, so a lagging read model never causes
a wrong decision. It folds through the same rules as the projection
(``central.lifecycle.jobs`` and ``central.lifecycle.nodes``). Every subject has a
version, the stream sequence of its last message whatever that message held (an
anomaly, garbage), which is what an append with an expected version needs. A message
that does not decode, sits on another aggregate's subject, or does not apply is an
anomaly: logged once with its sequence, kept in ``anomalies``, and it changes nothing.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
from collections import defaultdict, deque
from typing import Callable, Iterator

from bus import StoredMessage
from bus.loop import wait_for_future
from central.lifecycle.jobs import ACTIVE, JobState, JobStatus, fold
from central.lifecycle.nodes import NodeState, evolve_node, largest_node_memory, node_anomaly
from central.lifecycle.policy import queue_key
from central.lifecycle.deployments import DeploymentState, fold_deployment
from events import (DeploymentEvent, DeploymentStats, Event, InvalidEvent, JobCompleted, JobEvent, JobFailed, NodeEvent,
                    job_subject, misplaced, node_subject)

log = logging.getLogger("cyxwiz.central.state")

Listener = Callable[[Event, object, object], None]


class CentralState:
    """Jobs, nodes, per-node active jobs and a priority queue, with waiters on progress."""

    def __init__(self) -> None:
        self.jobs: dict[str, JobState] = {}
        self.nodes: dict[str, NodeState] = {}
        self.deployments: dict[str, DeploymentState] = {}
        self.node_jobs: defaultdict[str, set[str]] = defaultdict(set)
        self.completed_by_node: defaultdict[str, int] = defaultdict(int)
        self.failed_by_node: defaultdict[str, int] = defaultdict(int)
        self.last_seq = 0
        self.versions: dict[str, int] = {}  # subject -> stream sequence of its last message
        self.anomalies: deque[tuple[int, str, str]] = deque(maxlen=1000)  # (seq, event type, reason)
        self.anomaly_count = 0
        self._queue: list[tuple[int, float, str]] = []
        self._listeners: list[Listener] = []
        self._seq_waiters: list[tuple[int, int, asyncio.Future]] = []
        self._watchers: defaultdict[str, set[asyncio.Queue]] = defaultdict(set)
        self._waiter_ids = 0
        self._nodes_changed = 0  # counts node changes: what is cached of the nodes is keyed on it
        self._memory_cache: dict[str | None, int | None] = {}
        self._memory_cache_at = -1

    # --- folding -------------------------------------------------------------------------

    def apply_batch(self, batch: list[StoredMessage]) -> None:
        for msg in batch:
            self.apply(msg)
        self._wake_seq_waiters()

    def apply(self, msg: StoredMessage) -> None:
        """Fold one stored message; whatever it holds, it is never an error."""
        self.last_seq = max(self.last_seq, msg.seq)
        self.versions[msg.subject] = msg.seq
        try:
            event = msg.decode()
        except InvalidEvent as exc:
            self._anomaly(msg.seq, "invalid", f"{msg.subject}: {exc}")
            return
        wrong = misplaced(event, msg.subject)
        if wrong is not None:
            self._anomaly(msg.seq, type(event).__name__, wrong)
            return
        self.apply_event(event, msg.seq)

    def apply_event(self, event: Event, seq: int) -> None:
        self.last_seq = max(self.last_seq, seq)
        if isinstance(event, JobEvent):
            self._apply_job(event, seq)
        elif isinstance(event, NodeEvent):
            self._apply_node(event, seq)
        elif isinstance(event, DeploymentEvent) and not isinstance(event, DeploymentStats):
            reason = fold_deployment(self.deployments, event, seq)
            if reason is not None:
                self._anomaly(seq, type(event).__name__, reason)

    def job_version(self, job_id: str) -> int:
        """The expected version of an append to the job (0: nothing on its subject yet)."""
        return self.versions.get(job_subject(job_id), 0)

    def node_version(self, node_id: str) -> int:
        return self.versions.get(node_subject(node_id), 0)

    def _apply_job(self, event: JobEvent, seq: int) -> None:
        old = self.jobs.get(event.job_id)
        new, reason = fold(old, event)
        if reason is not None:
            self._anomaly(seq, type(event).__name__, f"job {event.job_id}: {reason}")
            return
        self.jobs[event.job_id] = new
        self._index(old, new)
        if isinstance(event, JobCompleted) and new.node_id:
            self.completed_by_node[new.node_id] += 1
        elif isinstance(event, JobFailed) and event.node_id:
            self.failed_by_node[event.node_id] += 1
        self._notify(event, old, new)

    def _index(self, old: JobState | None, new: JobState) -> None:
        if old is not None and old.status in ACTIVE and old.node_id:
            held = self.node_jobs.get(old.node_id)
            if held is not None:
                held.discard(old.job_id)
        if new.status in ACTIVE and new.node_id:
            self.node_jobs[new.node_id].add(new.job_id)
        if new.status == JobStatus.QUEUED and (old is None or old.status != JobStatus.QUEUED):
            self.push_queued(new)

    def _apply_node(self, event: NodeEvent, seq: int) -> None:
        old = self.nodes.get(event.node_id)
        reason = node_anomaly(old, event)
        if reason is not None:
            self._anomaly(seq, type(event).__name__, f"node {event.node_id}: {reason}")
            return
        new = evolve_node(old, event)
        self.nodes[event.node_id] = new
        self._nodes_changed += 1
        self._notify(event, old, new)

    def _anomaly(self, seq: int, kind: str, reason: str) -> None:
        self.anomaly_count += 1
        self.anomalies.append((seq, kind, reason))
        log.info("anomaly at seq %d (%s): %s", seq, kind, reason)

    def _notify(self, event: Event, old, new) -> None:
        for listener in self._listeners:
            listener(event, old, new)
        if isinstance(event, JobEvent):
            for queue in self._watchers.get(event.job_id, ()):
                queue.put_nowait((event, new))

    # --- the queue ---------------------------------------------------------------------

    def push_queued(self, job: JobState) -> None:
        heapq.heappush(self._queue, (*queue_key(job.priority, job.submitted_at, job.job_id),))

    def has_queued(self) -> bool:
        """True when the queue may hold a job (it may also hold only stale entries)."""
        return bool(self._queue)

    def pop_queued(self) -> JobState | None:
        """The first queued job (stale heap entries are skipped), or None."""
        while self._queue:
            *_, job_id = heapq.heappop(self._queue)
            job = self.jobs.get(job_id)
            if job is not None and job.status == "queued":
                return job
        return None

    def queued(self, limit: int | None = None) -> list[JobState]:
        """Queued jobs in scheduling order (a snapshot; the heap is untouched)."""
        seen: set[str] = set()
        out: list[JobState] = []
        for *_, job_id in sorted(self._queue):
            job = self.jobs.get(job_id)
            if job is not None and job.status == "queued" and job_id not in seen:
                seen.add(job_id)
                out.append(job)
                if limit is not None and len(out) >= limit:
                    break
        return out

    def queue_length(self) -> int:
        return sum(1 for j in self.jobs.values() if j.status == "queued")

    # --- reading -------------------------------------------------------------------------

    def online_nodes(self) -> Iterator[NodeState]:
        return (n for n in self.nodes.values() if n.status == "online")

    def largest_online_memory(self, device: str | None = None) -> int | None:
        """``largest_node_memory`` of the online nodes, kept until a node changes (every
        submit asks; with hundreds of nodes the walk cost more than the rest of the check)."""
        if self._memory_cache_at != self._nodes_changed:
            self._memory_cache, self._memory_cache_at = {}, self._nodes_changed
        if device not in self._memory_cache:
            self._memory_cache[device] = largest_node_memory(self.online_nodes(), device)
        return self._memory_cache[device]

    def reputation(self, node_id: str) -> float:
        """The share of the node's finished runs that completed (1.0 before any ended)."""
        done, failed = self.completed_by_node.get(node_id, 0), self.failed_by_node.get(node_id, 0)
        return done / (done + failed) if done + failed else 1.0

    def running_on(self, node_id: str) -> int:
        held = self.node_jobs.get(node_id)
        return len(held) if held else 0

    def slots_used_on(self, node_id: str) -> int:
        """The node's slots its active jobs hold: one per device each trains on."""
        held = self.node_jobs.get(node_id)
        return sum(self.jobs[j].devices for j in held) if held else 0

    # --- listening and waiting -----------------------------------------------------------

    def listen(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def watch(self, job_id: str) -> asyncio.Queue:
        """A queue that receives (event, job) for every change of ``job_id``."""
        queue: asyncio.Queue = asyncio.Queue()
        self._watchers[job_id].add(queue)
        return queue

    def tell_watchers(self, event: JobEvent) -> None:
        """Hand a job's telemetry (its phase) to its watchers, as (event, job now)."""
        job = self.jobs.get(event.job_id)
        for queue in self._watchers.get(event.job_id, ()):
            queue.put_nowait((event, job))

    def unwatch(self, job_id: str, queue: asyncio.Queue) -> None:
        watchers = self._watchers.get(job_id)
        if watchers is not None:
            watchers.discard(queue)
            if not watchers:
                del self._watchers[job_id]

    async def wait_for_seq(self, seq: int, timeout: float = 10.0) -> bool:
        """Wait until events up to ``seq`` are folded; False on timeout."""
        if self.last_seq >= seq:
            return True
        future = asyncio.get_running_loop().create_future()
        self._waiter_ids += 1
        heapq.heappush(self._seq_waiters, (seq, self._waiter_ids, future))
        return await wait_for_future(future, timeout, False)  # an expired one is skipped in the heap

    def _wake_seq_waiters(self) -> None:
        while self._seq_waiters and self._seq_waiters[0][0] <= self.last_seq:
            _, _, future = heapq.heappop(self._seq_waiters)
            if not future.done():
                future.set_result(True)

