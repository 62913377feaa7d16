"""Central's Prometheus metrics, in prometheus-client's default registry (REST ``GET /metrics``).

Read from central's folded state when scraped (nothing is counted twice on the hot path):

    cyxwiz_jobs{state}                  jobs by lifecycle state (queued, assigned, running, ...)
    cyxwiz_queue_depth                  jobs waiting for a node
    cyxwiz_nodes{status}                nodes by status (online, lost, deregistered)
    cyxwiz_assignments_total            JobAssigned events this central appended
    cyxwiz_assignment_conflicts_total   assignments another writer got to first
    cyxwiz_dispatch_total{outcome}      AssignJob calls to nodes: accepted, rejected
    cyxwiz_anomalies_total              events that made no sense for their aggregate
    cyxwiz_events_folded                the last stream sequence in central's state
    cyxwiz_central_ready                0 while central replays the stream at start, then 1 (today
                                        REST opens after the replay; gRPC health is the probe)

Measured where they happen:

    cyxwiz_append_seconds               one append call, publish to the stream's ack
                                        (a pipelined batch of assignments is one call)
    cyxwiz_projection_lag_seconds       per commit to DuckDB: its oldest event stored in the
                                        stream -> committed (once the projector has caught up)
    cyxwiz_scheduler_pass_seconds       one scheduling pass (ranking the free nodes, placing
                                        jobs; their appends follow), on the lease holder
    cyxwiz_event_loop_lag_seconds       how late central's event loop ran a timer (sampled
                                        every 50 ms): near 0 when idle, the queueing delay
                                        every call and event waits when the loop is saturated
    grpc_server_handled_total{...}      every gRPC call by method and code (protos.call_metrics)

One central runs per process in production; where a process holds several (tests), the
one started last is the one reported.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any, Protocol

from prometheus_client import REGISTRY, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from central.lifecycle.jobs import JobStatus
from protos.call_metrics import grpc_handled_counter

__all__ = ["APPEND_SECONDS", "GRPC_HANDLED", "LOOP_LAG_SECONDS", "PROJECTION_LAG_SECONDS", "SCHEDULER_PASS_SECONDS",
           "CentralSource", "attach", "detach", "observe_projection_lag", "watch_loop_lag"]

NODE_STATUSES = ("online", "lost", "deregistered")

APPEND_SECONDS = Histogram(
    "cyxwiz_append_seconds", "Central's appends to the event stream: publish until the stream acknowledged",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
PROJECTION_LAG_SECONDS = Histogram(
    "cyxwiz_projection_lag_seconds", "From an event stored in the stream to its commit in the DuckDB read model",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)
SCHEDULER_PASS_SECONDS = Histogram(
    "cyxwiz_scheduler_pass_seconds", "One scheduling pass: ranking the free nodes and placing jobs (their appends follow in a task)",
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
)
LOOP_LAG_SECONDS = Histogram(
    "cyxwiz_event_loop_lag_seconds", "How late central's event loop ran a timer set for 50 ms later",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0),
)
GRPC_HANDLED = grpc_handled_counter(REGISTRY)
LOOP_LAG_PERIOD_S = 0.05


async def watch_loop_lag(period_s: float = LOOP_LAG_PERIOD_S) -> None:
    """Observe, until cancelled, how late the loop wakes a timer: a saturated loop is the
    first thing to look for when every stage of a job gets slower at once."""
    loop = asyncio.get_running_loop()
    while True:
        due = loop.time() + period_s
        await asyncio.sleep(period_s)
        LOOP_LAG_SECONDS.observe(max(0.0, loop.time() - due))


def observe_projection_lag(oldest_stored_ns: int) -> None:
    """One commit's lag: from the stream's store time (``StoredMessage.time_ns``) of the
    oldest event in it to now, so every event of the commit waited at most this long.
    (Once per commit, not per event: an observation costs a few microseconds.)"""
    if oldest_stored_ns:
        PROJECTION_LAG_SECONDS.observe(max(0, time.time_ns() - oldest_stored_ns) / 1e9)


class CentralSource(Protocol):
    """What the collector reads: central's state, scheduler and readiness."""

    state: Any
    scheduler: Any
    ready: bool


class _CentralCollector:
    def __init__(self) -> None:
        self.sources: list[CentralSource] = []

    def describe(self):
        return [family for family in self._families()]

    def collect(self):
        if not self.sources:
            return []
        return self._families(self.sources[-1])

    def _families(self, source: CentralSource | None = None) -> list:
        jobs = GaugeMetricFamily("cyxwiz_jobs", "Jobs by lifecycle state, from central's folded state", labels=["state"])
        queue = GaugeMetricFamily("cyxwiz_queue_depth", "Jobs queued for a node")
        nodes = GaugeMetricFamily("cyxwiz_nodes", "Nodes by status", labels=["status"])
        assigned = CounterMetricFamily("cyxwiz_assignments", "JobAssigned events this central appended")
        conflicts = CounterMetricFamily("cyxwiz_assignment_conflicts",
                                        "Assignments refused because another writer moved the job on first")
        dispatch = CounterMetricFamily("cyxwiz_dispatch", "AssignJob calls to nodes by outcome", labels=["outcome"])
        anomalies = CounterMetricFamily("cyxwiz_anomalies", "Events that made no sense for their aggregate")
        folded = GaugeMetricFamily("cyxwiz_events_folded", "The last stream sequence folded into central's state")
        ready = GaugeMetricFamily("cyxwiz_central_ready", "0 while central replays its event stream at start, then 1")
        families = [jobs, queue, nodes, assigned, conflicts, dispatch, anomalies, folded, ready]
        if source is None:
            return families
        state, scheduler = source.state, source.scheduler
        by_state = Counter(job.status for job in list(state.jobs.values()))
        for status in JobStatus:
            jobs.add_metric([status.value], by_state.get(status, 0))
        queue.add_metric([], by_state.get(JobStatus.QUEUED, 0))
        by_status = Counter(node.status for node in list(state.nodes.values()))
        for status in NODE_STATUSES:
            nodes.add_metric([status], by_status.get(status, 0))
        if scheduler is not None:
            assigned.add_metric([], scheduler.assigned)
            conflicts.add_metric([], scheduler.conflicts)
            dispatch.add_metric(["accepted"], scheduler.dispatcher.accepted)
            dispatch.add_metric(["rejected"], scheduler.dispatcher.rejected)
        anomalies.add_metric([], state.anomaly_count)
        folded.add_metric([], state.last_seq)
        ready.add_metric([], 1 if source.ready else 0)
        return families


_COLLECTOR = _CentralCollector()
REGISTRY.register(_COLLECTOR)


def attach(source: CentralSource) -> None:
    """Report ``source`` (a starting central) from now on."""
    _COLLECTOR.sources.append(source)


def detach(source: CentralSource) -> None:
    """Stop reporting ``source`` (a stopping central)."""
    if source in _COLLECTOR.sources:
        _COLLECTOR.sources.remove(source)
