"""Central's scheduler under load, and its memory with a long history.

    python bench/central_bench.py [--nodes 200] [--jobs 10000] [--history 100000]
    python bench/central_bench.py --sse-clients 50 [--repeat 3]     # the dashboard's cost
    python bench/central_bench.py --reports-only [--jobs 10000] [--open-rate 500] [--centrals N] [--cluster]

1. Throughput and latency: a real nats-server, central as a subprocess (``python -m
   central central``), and ``--nodes`` simulated nodes (real gRPC servers, several per
   process, each registering and heartbeating). ``--jobs`` jobs are submitted through
   gRPC. Latency is JobSubmitted -> JobAssigned as stored in the stream (the NATS
   server's clock for both); assignments/s is jobs / (last JobAssigned - first
   JobSubmitted).
2. Heavy report traffic (``--reports-only`` runs it alone): ``--nodes`` simulated nodes
   that report each job trained within milliseconds of accepting its AssignJob (the
   epoch, then the completion: central refuses a completion before its epochs), so every
   job is a submit, an assignment and the node's reports. Closed loop: ``--concurrency``
   submits in flight (assignments/s, submit -> AssignJob p50/p99); open loop: submits at
   ``--open-rate`` per second whatever the answers (submit -> AssignJob p50/p99). Times
   are wall clock (one machine): the submit is timed as it is sent, the AssignJob as the
   node receives it. Reports central refused are counted (expected: none). Each central's
   own view follows (``per_central``: its CPU, its event loop's thread, its loop's lag,
   its appends' and, on the lease holder, its scheduling passes' p50/p99 from ``/metrics``).
   ``--cluster``: on a 3-server NATS cluster (R3) instead of one server.
   ``CENTRAL_PYSPY=/tmp/central`` (with py-spy on PATH) writes a flame graph of central
   per part (``/tmp/central-reports.svg``).
3. Memory: ``--history`` finished jobs (5 events each) are appended to a fresh stream,
   central starts, replays them, and its RSS (psutil, central's process alone) is read.
4. ``--sse-clients N``: the live run (1.) without and with N open dashboard pages,
   alternating ``--repeat`` times, each on a fresh nats-server: half the pages hold the
   jobs list's live stream, half a job page's (of jobs being submitted), read by a process
   of their own. Printed: each run, then the medians and their ratio (assignments/s, and
   central's CPU per assignment).
"""

from __future__ import annotations

import os

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")  # before gRPC is imported (why: protos/__init__.py)

import argparse
import asyncio
import collections
import json
import multiprocessing as mp
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import grpc
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from bus import CREDS_ENV, EventBus, start_server  # noqa: E402
from bus.cluster import start_cluster  # noqa: E402
from events import (  # noqa: E402
    EpochCompleted, JobAssigned, JobCompleted, JobSpec, JobStarted, JobSubmitted, NodeRegistered,
)
from protos import job_pb2, job_pb2_grpc  # noqa: E402


# --- simulated nodes, several per process ------------------------------------------------


def node_worker(central: str, first: int, count: int, slots: int, ready, stop) -> None:
    from fake_node import FakeNode

    async def main() -> None:
        channel = grpc.aio.insecure_channel(central)
        nodes = [FakeNode(channel, node_id=f"bench-{i:04d}", slots=slots) for i in range(first, first + count)]
        for node in nodes:
            await node.start()
            node.start_heartbeats(5.0)
        ready.put(count)
        while not stop.is_set():
            await asyncio.sleep(0.2)
        for node in nodes:
            await node.stop()
        await channel.close()

    asyncio.run(main())


# --- open dashboard pages (server-sent events), in a process of their own ---------------


def sse_worker(rest: str, clients: int, ready, stop, received) -> None:
    async def page(session, url: str, hello: asyncio.Event, counts: list[int]) -> None:
        async with session.get(url) as response:
            async for chunk in response.content.iter_any():
                if b"event: hello" in chunk:
                    hello.set()
                counts[0] += chunk.count(b"\n\n")

    async def main() -> None:
        lists = clients - clients // 2
        urls = [f"{rest}/api/v1/live/jobs"] * lists + [f"{rest}/api/v1/live/jobs/job-{i:06d}" for i in range(clients // 2)]
        counts = [0]
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            hellos = [asyncio.Event() for _ in urls]
            tasks = [asyncio.create_task(page(session, url, h, counts)) for url, h in zip(urls, hellos)]
            await asyncio.wait_for(asyncio.gather(*(h.wait() for h in hellos)), 120)
            ready.put(len(urls))
            while not stop.is_set():
                await asyncio.sleep(0.2)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        received.put(counts[0])

    asyncio.run(main())


def reporting_node_worker(central: str, first: int, count: int, slots: int, ready, stop, results,
                          spread: bool = False) -> None:
    """Nodes that report each accepted job trained at once; at the end, per job the wall
    time its AssignJob arrived, and every refusal of a report. ``spread``: a connection
    per node (centrals sharing a port get connections, not calls, from the kernel)."""
    from fake_node import FakeNode

    async def main() -> None:
        channel = grpc.aio.insecure_channel(central)
        channels = [grpc.aio.insecure_channel(central, options=[("grpc.use_local_subchannel_pool", 1)])
                    for _ in range(count)] if spread else []
        assigned_at: dict[str, float] = {}
        refused: list[str] = []
        tasks: set[asyncio.Task] = set()

        async def report(node: FakeNode, job_id: str, attempt: int) -> None:
            try:
                await node.complete(job_id, attempt=attempt)
            except grpc.aio.AioRpcError as exc:
                refused.append(f"{exc.code().name}: {exc.details()}"[:300])

        def on_assign(node: FakeNode):
            def accepted(a) -> None:
                assigned_at.setdefault(a.job_id, time.time())
                task = asyncio.ensure_future(report(node, a.job_id, a.attempt))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            return accepted

        nodes = [FakeNode(channels[k] if spread else channel, node_id=f"bench-{i:04d}", slots=slots)
                 for k, i in enumerate(range(first, first + count))]
        for node in nodes:
            node.on_assign = on_assign(node)
            await node.start()
            node.start_heartbeats(5.0)
        ready.put(count)
        while not stop.is_set():
            await asyncio.sleep(0.2)
        await asyncio.gather(*tasks, return_exceptions=True)
        results.put((assigned_at, refused))
        for node in nodes:
            await node.stop()
        for c in [channel, *channels]:
            await c.close()

    asyncio.run(main())


def _channels(target: str, count: int) -> list:
    """``count`` connections (a channel each: gRPC would otherwise share one subchannel)."""
    return [grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)]) for _ in range(count)]


async def submit_closed(target: str, n: int, concurrency: int, prefix: str, connections: int = 1) -> dict[str, float]:
    """``concurrency`` submits in flight; the wall time each was sent."""
    channels = _channels(target, connections)
    stubs = [job_pb2_grpc.JobServiceStub(c) for c in channels]
    sent: dict[str, float] = {}
    next_index = iter(range(n))

    async def worker(stub) -> None:
        for i in next_index:
            job_id = f"{prefix}-{i:06d}"
            sent[job_id] = time.time()
            await _submit(stub, job_id, sent)

    await asyncio.gather(*(worker(stubs[k % len(stubs)]) for k in range(concurrency)))
    for c in channels:
        await c.close()
    return sent


SUBMIT_ERRORS: collections.Counter = collections.Counter()  # code: detail -> count, for the report


async def _submit(stub, job_id: str, sent: dict[str, float]) -> None:
    """One SubmitJob; a failed one is counted (and left out of the latencies), not raised."""
    try:
        await stub.SubmitJob(job_pb2.SubmitJobRequest(config=_bench_config(job_id)), timeout=60)
    except grpc.aio.AioRpcError as exc:
        sent.pop(job_id, None)
        SUBMIT_ERRORS[f"{exc.code().name}: {(exc.details() or '')[:200]}"] += 1


async def submit_open(target: str, n: int, rate: float, prefix: str, connections: int = 1) -> dict[str, float]:
    """Submits at ``rate`` per second on a fixed schedule, never waiting for answers."""
    channels = _channels(target, connections)
    stubs = [job_pb2_grpc.JobServiceStub(c) for c in channels]
    sent: dict[str, float] = {}
    calls = []
    started = time.perf_counter()
    for i in range(n):
        await asyncio.sleep(max(0.0, started + i / rate - time.perf_counter()))
        job_id = f"{prefix}-{i:06d}"
        sent[job_id] = time.time()
        calls.append(asyncio.ensure_future(_submit(stubs[i % len(stubs)], job_id, sent)))
    await asyncio.gather(*calls)
    for c in channels:
        await c.close()
    return sent


def _bench_config(job_id: str) -> job_pb2.JobConfig:
    return job_pb2.JobConfig(job_id=job_id, job_type=job_pb2.JOB_TYPE_TRAINING, epochs=1, batch_size=32,
                             dataset_uri="synthetic://classification?n=64")


def report_load(nats_url: str, work: Path, nodes: int, per_process: int, slots: int, jobs: int, concurrency: int,
                open_rate: float, centrals: int = 0) -> dict:
    """Closed loop, then open loop, against one central with reporting nodes.

    ``centrals`` >= 1: that many central processes on one gRPC port (``--share-port``),
    every node on a connection of its own and submits over 16 connections, so the kernel
    spreads the calls (0: one central, one connection per node process, as before)."""
    home = work / "reports"
    home.mkdir(parents=True)
    spread = centrals >= 1
    central, info = start_central(nats_url, home, *(["--share-port"] if spread else []))
    others, infos = [], [info]
    for k in range(1, centrals):
        other_home = work / f"reports-{k}"
        other_home.mkdir(parents=True)
        port = info["grpc"].rsplit(":", 1)[1]
        other, other_info = start_central(nats_url, other_home, "--share-port", grpc_port=port)
        others.append(other)
        infos.append(other_info)
    connections = 16 if spread else 1
    ctx = mp.get_context("spawn")
    ready, stop, results = ctx.Queue(), ctx.Event(), ctx.Queue()
    workers = [ctx.Process(target=reporting_node_worker,
                           args=(info["grpc"], first, min(per_process, nodes - first), slots, ready, stop, results,
                                 spread))
               for first in range(0, nodes, per_process)]
    for w in workers:
        w.start()
    try:
        registered = sum(ready.get(timeout=300) for _ in workers)
        pids = [p.pid for c in [central, *others] for p in [psutil.Process(c.pid), *psutil.Process(c.pid).children()]]
        inside = CentralsInside([central, *others], infos)
        cpu_before, t0 = _cpu(pids), time.perf_counter()
        closed = asyncio.run(submit_closed(info["grpc"], jobs, concurrency, "closed", connections))
        cpu_closed = sum(_cpu(pids)) - sum(cpu_before)
        closed_s = time.perf_counter() - t0
        inside_closed = inside.since()
        opened = asyncio.run(submit_open(info["grpc"], jobs, open_rate, "open", connections))
        time.sleep(2.0)  # the last assignments and reports
        inside_open = inside.since()
        stored = asyncio.run(stream_stages(nats_url))
    finally:
        stop.set()
        assigned_at: dict[str, float] = {}
        refused: list[str] = []
        for _ in workers:
            got, bad = results.get(timeout=120)
            assigned_at.update(got)
            refused += bad
        for w in workers:
            w.join(60)
        for process in [central, *others]:
            stop_central(process)

    def latencies(sent: dict[str, float]) -> list[float]:
        return [(assigned_at[j] - t) * 1000 for j, t in sent.items() if j in assigned_at]

    lat_closed, lat_open = latencies(closed), latencies(opened)

    def stages(sent: dict[str, float]) -> dict:
        """Where the time goes, p50/p99 ms: the submit until its JobSubmitted is stored, that
        until the JobAssigned is stored (the scheduler), that until the node has the call."""
        parts = {"submit_to_stored": [], "stored_to_assigned": [], "assigned_to_node": []}
        for job_id, t in sent.items():
            times = stored.get(job_id, {})
            if "JobSubmitted" in times and "JobAssigned" in times and job_id in assigned_at:
                parts["submit_to_stored"].append((times["JobSubmitted"] - t) * 1000)
                parts["stored_to_assigned"].append((times["JobAssigned"] - times["JobSubmitted"]) * 1000)
                parts["assigned_to_node"].append((assigned_at[job_id] - times["JobAssigned"]) * 1000)
        return {k: [round(percentile(v, 0.5), 1), round(percentile(v, 0.99), 1)] for k, v in parts.items() if v}
    closed_span = max(assigned_at[j] for j in closed if j in assigned_at) - min(closed.values())
    return {
        "mode": "heavy reports: nodes report each job trained at once", "nodes": registered, "jobs_per_loop": jobs,
        "central_processes": max(1, centrals), "connections_spread": spread,
        "closed_loop": {"in_flight": concurrency, "assigned": len(lat_closed),
                        "assignments_per_s": round(len(lat_closed) / closed_span),
                        "submit_to_assign_ms_p50": round(statistics.median(lat_closed), 1),
                        "submit_to_assign_ms_p99": round(percentile(lat_closed, 0.99), 1),
                        "stages_ms_p50_p99": stages(closed),
                        "central_cores_busy": round(cpu_closed / closed_s, 2),
                        "per_central": inside_closed},
        "open_loop": {"rate_per_s": open_rate, "assigned": len(lat_open),
                      "submit_to_assign_ms_p50": round(statistics.median(lat_open), 1),
                      "submit_to_assign_ms_p99": round(percentile(lat_open, 0.99), 1),
                      "stages_ms_p50_p99": stages(opened),
                      "per_central": inside_open},
        "reports_refused": len(refused), "refusals": sorted(set(refused))[:5],
        "submit_errors": dict(SUBMIT_ERRORS.most_common(5)),
        "central_log_tail": [line for line in (home / "central.log").read_text(errors="replace").splitlines()
                             if "WARNING" in line or "ERROR" in line][-8:],
    }


class CentralsInside:
    """Each central process's own view of a phase of the load: its CPU (the process, and
    its event loop's thread alone: 1.0 is a saturated loop), how late its loop ran timers,
    and (the lease holder) its scheduling passes, read from its ``/metrics``."""

    HISTOGRAMS = {"loop_lag_ms": "cyxwiz_event_loop_lag_seconds", "scheduler_pass_ms": "cyxwiz_scheduler_pass_seconds",
                  "append_ms": "cyxwiz_append_seconds"}

    def __init__(self, processes: list[subprocess.Popen], infos: list[dict]) -> None:
        self.processes, self.infos = [psutil.Process(p.pid) for p in processes], infos
        self._last = self._snapshot()

    def _snapshot(self) -> list[dict]:
        out = []
        for process, info in zip(self.processes, self.infos):
            main = next((t for t in process.threads() if t.id == process.pid), None)
            times = process.cpu_times()
            out.append({"at": time.perf_counter(), "cpu": times.user + times.system,
                        "loop_cpu": (main.user_time + main.system_time) if main else 0.0,
                        "metrics": _scrape(info["rest"])})
        return out

    def since(self) -> list[dict]:
        """Per central, what happened since the last call."""
        now, before = self._snapshot(), self._last
        self._last = now
        out = []
        for a, b in zip(before, now):
            span = b["at"] - a["at"]
            assigned = ("cyxwiz_assignments_total", frozenset())
            row = {"holder": b["metrics"].get(assigned, 0) > a["metrics"].get(assigned, 0),
                   "cores_busy": round((b["cpu"] - a["cpu"]) / span, 2),
                   "loop_thread_busy": round((b["loop_cpu"] - a["loop_cpu"]) / span, 2)}
            for key, name in self.HISTOGRAMS.items():
                quantiles = _bucket_quantiles(a["metrics"], b["metrics"], name)
                if quantiles:
                    row[key + "_p50_p99"] = quantiles
            out.append(row)
        return out


def _scrape(rest: str) -> dict[tuple[str, frozenset], float]:
    """``/metrics`` as ``metrics_text.samples`` reads it (an unreachable central: {})."""
    import urllib.request

    from metrics_text import samples

    try:
        with urllib.request.urlopen(f"{rest}/metrics", timeout=10) as answer:
            return samples(answer.read().decode())
    except OSError:
        return {}


def _bucket_quantiles(before: dict, after: dict, name: str) -> list[float] | None:
    """p50 and p99 (ms, the upper bound of the bucket they fall in) of the observations of
    the unlabelled histogram ``name`` between two scrapes."""
    bucket = name + "_bucket"
    counts = sorted((float(dict(labels)["le"]), count - before.get((n, labels), 0.0))
                    for (n, labels), count in after.items() if n == bucket)
    total = counts[-1][1] if counts else 0
    if not total:
        return None

    def bound(q: float) -> float:
        return next(le for le, c in counts if c >= q * total) * 1000

    return [round(bound(0.5), 2), round(bound(0.99), 2)]


# --- central as a subprocess -------------------------------------------------------------


def start_central(nats_url: str, home: Path, *args: str, grpc_port: str = "0") -> tuple[subprocess.Popen, dict]:
    ready = home / "ready.json"
    log = open(home / "central.log", "ab")
    process = subprocess.Popen(
        [sys.executable, *(["-m", "cProfile", "-o", os.environ["CENTRAL_PROFILE"]] if os.environ.get("CENTRAL_PROFILE") else []),
         "-m", "central", "central", "--nats", nats_url, "--home", str(home), "--grpc-port", grpc_port,
         "--rest-port", "0", "--ready-file", str(ready), *args],
        stdout=subprocess.DEVNULL, stderr=log, env={**os.environ, "CYXWIZ_LOG_LEVEL": "WARNING"}, cwd=ROOT,
    )
    deadline = time.monotonic() + 900
    while not ready.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"central did not start: {(home / 'central.log').read_text()[-2000:]}")
        time.sleep(0.05)
    if os.environ.get("CENTRAL_PYSPY"):  # a flame graph of central (py-spy installed by hand: not a dependency)
        raw = os.environ.get("CENTRAL_PYSPY_FORMAT") == "raw"  # collapsed stacks, for grep and sort
        subprocess.Popen(["py-spy", "record", "--pid", str(process.pid), "--subprocesses", "--rate", "200",
                          *(["--format", "raw"] if raw else []),
                          *os.environ.get("CENTRAL_PYSPY_ARGS", "").split(),  # e.g. --gil: what holds the GIL
                          "--output", f"{os.environ['CENTRAL_PYSPY']}-{home.name}.{'txt' if raw else 'svg'}"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return process, json.loads(ready.read_text())


def stop_central(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()


# --- 1. throughput and latency ------------------------------------------------------------


async def submit_all(target: str, n: int, concurrency: int) -> float:
    channel = grpc.aio.insecure_channel(target)
    stub = job_pb2_grpc.JobServiceStub(channel)
    config = job_pb2.JobConfig(job_type=job_pb2.JOB_TYPE_TRAINING, epochs=1, batch_size=32,
                               dataset_uri="synthetic://classification?n=64")
    next_index = iter(range(n))

    async def worker() -> None:
        for i in next_index:
            await stub.SubmitJob(job_pb2.SubmitJobRequest(config=job_pb2.JobConfig(**{
                **{f.name: v for f, v in config.ListFields()}, "job_id": f"job-{i:06d}"})), timeout=60)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    await channel.close()
    return elapsed


async def stream_times(nats_url: str, n: int, timeout: float = 300.0) -> tuple[dict, dict]:
    bus = await EventBus.connect(nats_url, setup=False)
    submitted: dict[str, int] = {}
    assigned: dict[str, int] = {}
    deadline = time.monotonic() + timeout
    start = 1
    while len(assigned) < n and time.monotonic() < deadline:
        async for msg in bus.read(start):
            start = msg.seq + 1
            kind = msg.headers.get("Cyxwiz-Event-Type")
            job_id = msg.subject.rsplit(".", 1)[-1]
            if kind == "JobSubmitted":
                submitted[job_id] = msg.time_ns
            elif kind == "JobAssigned":
                assigned.setdefault(job_id, msg.time_ns)
        await asyncio.sleep(0.2)
    await bus.close()
    return submitted, assigned


async def stream_stages(nats_url: str) -> dict[str, dict[str, float]]:
    """Per job, the wall time (the NATS server's clock: one machine) each of its first
    JobSubmitted and JobAssigned was stored."""
    bus = await EventBus.connect(nats_url, setup=False)
    out: dict[str, dict[str, float]] = {}
    try:
        async for msg in bus.read(1, subjects="events.job.>"):
            kind = msg.headers.get("Cyxwiz-Event-Type")
            if kind in ("JobSubmitted", "JobAssigned"):
                out.setdefault(msg.subject.rsplit(".", 1)[-1], {}).setdefault(kind, msg.time_ns / 1e9)
    finally:
        await bus.close()
    return out


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def throughput(nats_url: str, work: Path, nodes: int, per_process: int, slots: int, jobs: int, concurrency: int,
               prefill: bool = False, nats_pid: int | None = None, sse_clients: int = 0, name: str = "") -> dict:
    """``prefill``: submit every job before any node exists, then start the nodes: the
    assignment rate is then the scheduler's and dispatcher's own, not the submit rate."""
    home = work / (name or ("backlog" if prefill else "throughput"))
    home.mkdir()
    central, info = start_central(nats_url, home)
    if prefill:
        submit_s = asyncio.run(submit_all(info["grpc"], jobs, concurrency))
    ctx = mp.get_context("spawn")
    ready, stop = ctx.Queue(), ctx.Event()
    workers = [ctx.Process(target=node_worker, args=(info["grpc"], first, min(per_process, nodes - first), slots, ready, stop))
               for first in range(0, nodes, per_process)]
    for w in workers:
        w.start()
    pages = None
    if sse_clients:
        page_ready, frames = ctx.Queue(), ctx.Queue()
        pages = ctx.Process(target=sse_worker, args=(info["rest"], sse_clients, page_ready, stop, frames))
        pages.start()
    try:
        registered = sum(ready.get(timeout=300) for _ in workers)
        open_pages = page_ready.get(timeout=300) if pages is not None else 0
        helpers = [c.pid for c in psutil.Process(central.pid).children()]  # its dispatch worker
        pids = [central.pid, *helpers, os.getpid(), *(w.pid for w in workers), *([nats_pid] if nats_pid else [])]
        if pages is not None:
            pids.append(pages.pid)
        cpu_before = _cpu(pids)
        if not prefill:
            submit_s = asyncio.run(submit_all(info["grpc"], jobs, concurrency))
        cpu_after = _cpu(pids)
        submitted, assigned = asyncio.run(stream_times(nats_url, jobs))
        rss = psutil.Process(central.pid).memory_info().rss
    finally:
        stop.set()
        for w in workers:
            w.join(60)
        frames_received = frames.get(timeout=60) if pages is not None else 0
        if pages is not None:
            pages.join(60)
        stop_central(central)
    latencies = [(assigned[j] - submitted[j]) / 1e6 for j in assigned if j in submitted]
    first = min(assigned.values()) if prefill else min(submitted.values())
    span_s = (max(assigned.values()) - first) / 1e9
    if prefill:
        return {"mode": "backlog: jobs queued first, then nodes start", "nodes": registered, "jobs": jobs,
                "assigned": len(assigned), "assignments_per_s": round(len(assigned) / span_s),
                "central_rss_mb": round(rss / 2**20)}
    return {
        "mode": "live: nodes up, jobs submitted through gRPC", "nodes": registered, "node_processes": len(workers), "slots_per_node": slots, "jobs": jobs,
        "submit_concurrency": concurrency, "assigned": len(assigned), "submit_s": round(submit_s, 2),
        "submits_per_s": round(jobs / submit_s), "assignments_per_s": round(len(assigned) / span_s),
        "latency_ms_p50": round(statistics.median(latencies), 1), "latency_ms_p99": round(percentile(latencies, 0.99), 1),
        "latency_ms_max": round(max(latencies), 1), "central_rss_mb": round(rss / 2**20),
        "open_dashboard_pages": open_pages, "sse_frames_received": frames_received,
        "central_cpu_ms_per_assignment": round((cpu_after[0] - cpu_before[0]) * 1000 / max(1, len(assigned)), 3),
        "cpu_cores_busy_while_submitting": {
            name: round((cpu_after[i] - cpu_before[i]) / submit_s, 2)
            for i, name in enumerate(["central", *(f"central_helper{k}" for k in range(len(helpers))), "client",
                                      *(f"nodes{k}" for k in range(len(workers))), *(["nats-server"] if nats_pid else []),
                                      *(["page_reader"] if pages is not None else [])])},
    }


def _cpu(pids: list[int]) -> list[float]:
    """CPU seconds (user + system) each process has used so far."""
    out = []
    for pid in pids:
        times = psutil.Process(pid).cpu_times()
        out.append(times.user + times.system)
    return out


# --- 2. memory with a long history --------------------------------------------------------


async def write_history(nats_url: str, n: int) -> None:
    bus = await EventBus.connect(nats_url)
    await bus.append(NodeRegistered(node_id="history-node", endpoint="127.0.0.1:1", slots=8))
    batch = []
    for i in range(n):
        job = f"old-{i:07d}"
        batch += [
            JobSubmitted(job_id=job, spec=JobSpec(epochs=1, dataset_uri="builtin://iris", model_definition='{"type": "mlp"}',
                                                  hyperparameters={"learning_rate": "0.01", "seed": str(i)})),
            JobAssigned(job_id=job, node_id="history-node"),
            JobStarted(job_id=job, node_id="history-node"),
            EpochCompleted(job_id=job, node_id="history-node", epoch=1, loss=0.5, accuracy=0.9, checkpoint_uri=f"nats://c/{job}/1"),
            JobCompleted(job_id=job, node_id="history-node", metrics={"loss": 0.5, "accuracy": 0.9},
                         artifact_uri=f"nats://cyxwiz-models/{job}", sha256="0" * 64, size_bytes=1000),
        ]
        if len(batch) >= 10_000:
            await bus.append_many(batch)
            batch = []
    if batch:
        await bus.append_many(batch)
    await bus.close()


def memory(work: Path, history: int) -> dict:
    server = start_server(work / "nats-history", port=0)
    os.environ[CREDS_ENV] = str(server.seed("central"))  # this process and its children
    try:
        started = time.perf_counter()
        asyncio.run(write_history(server.url, history))
        written_s = time.perf_counter() - started
        home = work / "memory"
        home.mkdir()
        started = time.perf_counter()
        central, _ = start_central(server.url, home)
        ready_s = time.perf_counter() - started
        rss = psutil.Process(central.pid).memory_info().rss
        stop_central(central)
    finally:
        server.kill()
    return {"history_jobs": history, "history_events": history * 5 + 1, "append_s": round(written_s, 1),
            "central_start_and_replay_s": round(ready_s, 1), "central_rss_mb": round(rss / 2**20)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=200)
    parser.add_argument("--nodes-per-process", type=int, default=50)
    parser.add_argument("--slots", type=int, default=64)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--history", type=int, default=100_000)
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--sse-clients", type=int, default=0, help="compare live runs without and with N open pages")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--reports-only", action="store_true", help="only the heavy report load (2.)")
    parser.add_argument("--open-rate", type=float, default=500.0, help="submits/s of the open loop")
    parser.add_argument("--report-slots", type=int, default=8, help="slots per reporting node")
    parser.add_argument("--centrals", type=int, default=0,
                        help="the report load against N central processes sharing one gRPC port (--share-port), "
                             "connections spread (a connection per node); 0: one central as before")
    parser.add_argument("--cluster", action="store_true",
                        help="the report load on a 3-server NATS cluster on loopback (R3) instead of one server")
    parser.add_argument("--compare-fsync", action="store_true",
                        help="the report load with fsync always (ours) and with nats-server's default, one run")
    args = parser.parse_args()
    if args.sse_clients:
        return compare_pages(args)
    with tempfile.TemporaryDirectory(prefix="central-bench-") as tmp:
        work = Path(tmp)
        print(json.dumps({"machine": f"{os.cpu_count()} cores", "load_average": round(os.getloadavg()[0], 1)}),
              flush=True)
        if args.reports_only:
            runs = {}
            for sync in (["always", None] if args.compare_fsync else ["always"]):
                name = sync or "default"
                if args.cluster:  # three servers, streams and buckets with 3 replicas (central's default there)
                    server = start_cluster(work / f"nats-reports-{name}", size=3, sync_interval=sync)
                    stop_server = server.stop
                else:
                    server = start_server(work / f"nats-reports-{name}", port=0, sync_interval=sync)
                    stop_server = server.kill
                os.environ[CREDS_ENV] = str(server.seed("central"))
                try:
                    runs[name] = report_load(server.url, work / name, args.nodes, args.nodes_per_process,
                                             args.report_slots, args.jobs, args.concurrency, args.open_rate,
                                             args.centrals)
                    print(json.dumps({"fsync": name, "nats": "3-server cluster" if args.cluster else "one server",
                                      **runs[name]}), flush=True)
                finally:
                    stop_server()
            if len(runs) == 2:
                always, default = runs["always"]["closed_loop"], runs["default"]["closed_loop"]
                print(json.dumps({"fsync_always_over_default": {
                    "assignments_per_s": round(always["assignments_per_s"] / default["assignments_per_s"], 2),
                    "p99": round(always["submit_to_assign_ms_p99"] / default["submit_to_assign_ms_p99"], 2)}}))
            print(json.dumps({"load_average_at_end": round(os.getloadavg()[0], 1)}), flush=True)
            return
        server = start_server(work / "nats", port=0)
        os.environ[CREDS_ENV] = str(server.seed("central"))  # this process and its children
        try:
            result = {"throughput": throughput(server.url, work, args.nodes, args.nodes_per_process, args.slots,
                                               args.jobs, args.concurrency, nats_pid=server.pid)}
            print(json.dumps(result["throughput"]), flush=True)
        finally:
            server.kill()
        server = start_server(work / "nats-backlog", port=0)
        os.environ[CREDS_ENV] = str(server.seed("central"))  # this process and its children
        try:
            result["backlog"] = throughput(server.url, work, args.nodes, args.nodes_per_process, args.slots,
                                           args.jobs, args.concurrency, prefill=True)
            print(json.dumps(result["backlog"]), flush=True)
        finally:
            server.kill()
        if not args.skip_memory:
            result["memory"] = memory(work, args.history)
            print(json.dumps(result["memory"]), flush=True)


def compare_pages(args) -> None:
    runs: dict[int, list[dict]] = {0: [], args.sse_clients: []}
    with tempfile.TemporaryDirectory(prefix="central-bench-") as tmp:
        work = Path(tmp)
        for r in range(args.repeat):
            for clients in runs:
                server = start_server(work / f"nats-{r}-{clients}", port=0)
                os.environ[CREDS_ENV] = str(server.seed("central"))
                try:
                    result = throughput(server.url, work, args.nodes, args.nodes_per_process, args.slots, args.jobs,
                                        args.concurrency, nats_pid=server.pid, sse_clients=clients,
                                        name=f"live-{r}-{clients}")
                finally:
                    server.kill()
                runs[clients].append(result)
                print(json.dumps(result), flush=True)
    rate = {c: statistics.median(x["assignments_per_s"] for x in v) for c, v in runs.items()}
    cpu = {c: statistics.median(x["central_cpu_ms_per_assignment"] for x in v) for c, v in runs.items()}
    with_pages = args.sse_clients
    print(json.dumps({"open_pages": with_pages, "repeat": args.repeat,
                      "assignments_per_s_median": {"without": rate[0], "with": rate[with_pages]},
                      "rate_with_pages_over_without": round(rate[with_pages] / rate[0], 3),
                      "central_cpu_ms_per_assignment_median": {"without": cpu[0], "with": cpu[with_pages]},
                      "cpu_with_pages_over_without": round(cpu[with_pages] / cpu[0], 3)}), flush=True)


if __name__ == "__main__":
    main()
