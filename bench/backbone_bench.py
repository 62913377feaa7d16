"""Event backbone benchmark: append throughput, projection rebuild, projection lag.

    python bench/backbone_bench.py                       # the full run (1,000,000 events)
    python bench/backbone_bench.py --events 100000 --append-events 50000 --lag-seconds 5

Runs its own nats-server (JetStream, file storage) in a temporary folder and measures,
in one run, side by side:
  (a) raw nats-py ``publish_async`` of pre-encoded event bytes into a stream: the ceiling;
  (b) ``EventBus.append_many`` of typed events from this process (a script) while the
      projector runs in its own process (central's), until the last one is committed in
      DuckDB; and the ratio (b)/(a);
  (c) rebuilding a fresh projection from ``--events`` events in the stream;
  (d) projection lag (append in this process -> committed in DuckDB by the projector
      process, which reports each commit on a pipe) at a steady rate, p50/p99/max;
  (e) with authorization on: (a)'s publishes as central (a user without limits) and as
      the publisher role (every publish checked against its permissions), alternated;
  (f) durability and replication: ``append_many`` (pipelined) and one ``append`` at a
      time (each awaited: the latency of one command's event) on one server and on a
      3-server cluster (R3), each with ``sync_interval: always`` (ours) and with
      nats-server's default (fsync every 2 min), every figure also as a ratio to one
      server with the default, in the same run. ``--durability-only`` runs (f) alone.

The projector process is ``tests/projector_proc.py --follow``. The server runs with
its nkey users (``bus.credentials``) and every connection is central's, as in the
platform; ``--no-auth`` runs the same without users (the reference for what
authorization costs).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import nats  # noqa: E402
import psutil  # noqa: E402
from nats.js import api  # noqa: E402

from bus import CREDS_ENV, EventBus, credentials_from_file, start_server  # noqa: E402
from bus.cluster import start_cluster  # noqa: E402
from bus.loop import run as run_loop  # noqa: E402
from central.readmodel.projector import rebuild  # noqa: E402
from events import (  # noqa: E402
    EpochCompleted,
    Event,
    JobAssigned,
    JobCompleted,
    JobSpec,
    JobStarted,
    JobSubmitted,
    encode,
)


def job_history(first_job: int, count: int, epochs: int = 5) -> Iterator[Event]:
    """``count`` events of whole jobs: submitted, assigned, started, epochs, completed."""
    made, job = 0, first_job
    while made < count:
        jid, node = f"job-{job}", f"n{job % 16}"
        chain: list[Event] = [
            JobSubmitted(job_id=jid, spec=JobSpec(epochs=epochs, hyperparameters={"lr": "0.01"})),
            JobAssigned(job_id=jid, node_id=node),
            JobStarted(job_id=jid, node_id=node),
            *(EpochCompleted(job_id=jid, node_id=node, epoch=e, loss=1 / e, accuracy=0.5 + e / 20) for e in range(1, epochs + 1)),
            JobCompleted(job_id=jid, node_id=node, metrics={"loss": 0.2, "accuracy": 0.9}),
        ]
        for event in chain[: count - made]:
            yield event
        made += len(chain)
        job += 1


def chunks(events: Iterator[Event], size: int) -> Iterator[list[Event]]:
    chunk: list[Event] = []
    for event in events:
        chunk.append(event)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


async def raw_ceiling(bus: EventBus, n: int) -> float:
    """(a): plain nats-py (its own client, none of ours), pre-encoded bytes,
    ``publish_async``, every ack awaited; msg/s."""
    seed = os.environ.get(CREDS_ENV)
    nc = await nats.connect(bus.url, **({"nkeys_seed": seed} if seed else {}))
    js = nc.jetstream(publish_async_max_pending=4000)
    await js.add_stream(api.StreamConfig(name="BENCH_RAW", subjects=["bench.>"], storage=api.StorageType.FILE))
    payloads = [(f"bench.job.{i // 9}", encode(e)) for i, e in enumerate(job_history(10_000_000, n))]
    started = time.perf_counter()
    for start in range(0, n, 10_000):
        futures = [await js.publish_async(s, p) for s, p in payloads[start : start + 10_000]]
        await asyncio.gather(*futures)
    rate = n / (time.perf_counter() - started)
    await js.delete_stream("BENCH_RAW")
    await nc.close()
    return rate


async def role_publish_rate(url: str, seed: Path, n: int, server_pid: int) -> tuple[float, float]:
    """(e): like (a), with ``seed``'s user, into ``CYXWIZ_EVENTS`` on ``events.bench.*``
    (the one stream a publisher may write); msg/s, and nats-server's CPU us per message
    (CPU time, unlike a rate, barely moves with what else the machine runs)."""
    nc = await nats.connect(url, **credentials_from_file(seed).connect_options())
    js = nc.jetstream(publish_async_max_pending=4000)
    payloads = [(f"events.bench.{i // 9}", encode(e)) for i, e in enumerate(job_history(20_000_000, n))]
    nats_cpu = psutil.Process(server_pid)
    cpu_before = sum(nats_cpu.cpu_times()[:2])
    started = time.perf_counter()
    for start in range(0, n, 10_000):
        futures = [await js.publish_async(s, p) for s, p in payloads[start : start + 10_000]]
        await asyncio.gather(*futures)
    rate = n / (time.perf_counter() - started)
    cpu_us = (sum(nats_cpu.cpu_times()[:2]) - cpu_before) / n * 1e6
    await nc.close()
    return rate, cpu_us


async def authorization_cost(server, n: int, rounds: int = 4) -> dict[str, tuple[float, float]]:
    """(e): the same publishes as central (no limits) and as the publisher role (each
    publish checked against its permissions), ``rounds`` times in alternating order (the
    stream grows as it goes); per role the best rate and the median server CPU."""
    runs: dict[str, list[tuple[float, float]]] = {"central": [], "publisher": []}
    for round_ in range(rounds):
        for role in ("central", "publisher") if round_ % 2 == 0 else ("publisher", "central"):
            runs[role].append(await role_publish_rate(server.url, server.seed(role), n, server.pid))
    return {role: (max(r for r, _ in got), statistics.median(c for _, c in got)) for role, got in runs.items()}


class ProjectorProcess:
    """``tests/projector_proc.py --follow`` on ``path``: the time each commit was reported."""

    def __init__(self, url: str, path: Path) -> None:
        self.url, self.path = url, path
        self.applied = 0
        self.on_applied: list = []  # callbacks (seq, perf_counter time)
        self._changed = asyncio.Event()

    async def start(self) -> None:
        script = Path(__file__).resolve().parents[1] / "tests" / "projector_proc.py"
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, str(script), self.url, str(self.path), "20000", "--follow",
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, limit=1 << 20)
        while (line := await self.proc.stdout.readline()) and line.strip() != b"ready":
            if not line:
                raise RuntimeError("projector process ended")
        self.reader = asyncio.create_task(self._read())
        await asyncio.sleep(0.5)  # its live subscription is up

    async def _read(self) -> None:
        while line := await self.proc.stdout.readline():
            now = time.perf_counter()
            self.applied = int(line.split()[1])
            for callback in self.on_applied:
                callback(self.applied, now)
            self._changed.set()

    async def wait_for(self, seq: int, timeout: float) -> float:
        """The time the projector reported ``seq`` committed."""
        deadline = time.perf_counter() + timeout
        while self.applied < seq:
            self._changed.clear()
            await asyncio.wait_for(self._changed.wait(), max(0.001, deadline - time.perf_counter()))
        return time.perf_counter()

    async def stop(self) -> None:
        self.proc.stdin.close()
        await self.proc.wait()
        await asyncio.gather(self.reader, return_exceptions=True)


async def append_until_visible(bus: EventBus, workdir: Path, n: int) -> tuple[float, float]:
    """(b): append_many here, the projector in its own process; (acked msg/s, committed msg/s)."""
    projector = ProjectorProcess(bus.url, workdir / "live.duckdb")
    await projector.start()
    events = list(job_history(0, n))
    started = time.perf_counter()
    last = 0
    for chunk in chunks(iter(events), 10_000):
        last = (await bus.append_many(chunk))[-1]
    appended = time.perf_counter() - started
    visible = await projector.wait_for(last, timeout=600) - started
    await projector.stop()
    return n / appended, n / visible


async def append_alone(bus: EventBus, n: int) -> float:
    """``append_many`` with nothing else running: our own overhead against (a)."""
    started = time.perf_counter()
    for chunk in chunks(job_history(20_000_000, n), 10_000):
        await bus.append_many(chunk)
    return n / (time.perf_counter() - started)


async def fill(bus: EventBus, n: int, first_job: int) -> None:
    for chunk in chunks(job_history(first_job, n), 10_000):
        await bus.append_many(chunk)


async def measure_rebuild(bus: EventBus, workdir: Path) -> tuple[int, float]:
    total = await bus.last_sequence()
    started = time.perf_counter()
    await rebuild(workdir / "rebuilt.duckdb", bus)
    return total, total / (time.perf_counter() - started)


async def measure_lag(bus: EventBus, workdir: Path, rate: int, seconds: float) -> list[float]:
    """(d): append ``rate`` events/s in 10 ms ticks here, the projector (on the large
    rebuilt projection, caught up) in its own process; lag per event in ms."""
    sent_at: dict[int, float] = {}
    lags: list[float] = []
    pending: list[int] = []

    def on_applied(seq: int, now: float) -> None:
        while pending and pending[0] <= seq:
            lags.append((now - sent_at.pop(pending.pop(0))) * 1000)

    projector = ProjectorProcess(bus.url, workdir / "rebuilt.duckdb")
    projector.on_applied.append(on_applied)
    await projector.start()
    per_tick = max(1, rate // 100)
    events = job_history(50_000_000, int(rate * seconds))
    started = time.perf_counter()
    tick = 0
    while True:
        batch = [e for _, e in zip(range(per_tick), events)]
        if not batch:
            break
        t = time.perf_counter()
        for seq in await bus.append_many(batch):
            sent_at[seq] = t
            pending.append(seq)
        tick += 1
        await asyncio.sleep(max(0.0, started + tick * 0.01 - time.perf_counter()))
    await projector.wait_for(max(sent_at) if sent_at else 0, timeout=30)
    await projector.stop()
    return lags


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def machine() -> str:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores, {model or platform.processor()}, Python {platform.python_version()}"


async def append_rates(url: str, seed: Path, n: int, singles: int) -> tuple[float, float, float, int]:
    """(f) on one setup: pipelined msg/s, one-at-a-time p50 and p99 ms, the replicas."""
    bus = await EventBus.connect(url, credentials=seed)
    try:
        started = time.perf_counter()
        for chunk in chunks(job_history(60_000_000, n), 10_000):
            await bus.append_many(chunk)
        rate = n / (time.perf_counter() - started)
        latencies = []
        for event in job_history(70_000_000, singles):
            t = time.perf_counter()
            await bus.append(event)
            latencies.append((time.perf_counter() - t) * 1000)
        return rate, statistics.median(latencies), percentile(latencies, 99), bus.replicas
    finally:
        await bus.close()


async def durability(workdir: Path, n: int, singles: int) -> None:
    """(f): one server and a 3-server cluster, fsync always and the default, one run."""
    rows = []
    for where in ("one server", "3-server cluster"):
        for sync in ("always", None):
            root = workdir / f"f-{len(rows)}"
            if where == "one server":
                server = start_server(root, port=0, sync_interval=sync)
                url, seed, stop = server.url, server.seed("central"), server.kill
            else:
                cluster = start_cluster(root, size=3, sync_interval=sync)
                url, seed, stop = cluster.url, cluster.seed("central"), cluster.stop
            try:
                rows.append((where, sync or "default (2 min)", *await append_rates(url, seed, n, singles)))
            finally:
                stop()
    base_rate, base_p50 = rows[1][2], rows[1][3]
    for where, sync, rate, p50, p99, replicas in rows:
        print(f"(f) {where:16} R{replicas} fsync {sync:15}: append_many {rate:9,.0f} msg/s = {rate / base_rate:.2f}; "
              f"one append p50 {p50:.2f} ms = {p50 / base_p50:.2f}x, p99 {p99:.2f} ms")


async def main(args: argparse.Namespace) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="cyxwiz-bench-"))
    if args.durability_only:
        print(f"machine: {machine()}; load average {os.getloadavg()[0]:.1f}")
        await durability(workdir, args.append_events, args.single_appends)
        print(f"load average at the end: {os.getloadavg()[0]:.1f}")
        return
    server = start_server(workdir / "nats", port=0, auth=not args.no_auth)
    if args.no_auth:
        os.environ.pop(CREDS_ENV, None)
    else:
        os.environ[CREDS_ENV] = str(server.seed("central"))  # this process and the projector's
    bus = await EventBus.connect(server.url)
    try:
        print(f"machine: {machine()}; load average {os.getloadavg()[0]:.1f}; "
              f"NATS authorization {'off' if args.no_auth else 'on (nkey users)'}")
        raw = await raw_ceiling(bus, args.append_events)
        print(f"(a) raw publish_async into a stream:        {raw:10,.0f} msg/s")
        alone = await append_alone(bus, args.append_events)
        print(f"    append_many alone, typed events:        {alone:10,.0f} msg/s  = {alone / raw:.2f} of (a)")
        appended, visible = await append_until_visible(bus, workdir, args.append_events)
        print(f"(b) append_many, typed events (acked):      {appended:10,.0f} msg/s")
        print(f"(b) append_many until visible in DuckDB:    {visible:10,.0f} msg/s  = {visible / raw:.2f} of (a)  (target >= 0.70)")
        await fill(bus, max(0, args.events - 2 * args.append_events), first_job=1_000_000)
        total, rate = await measure_rebuild(bus, workdir)
        print(f"(c) rebuild from {total:,} events:         {rate:10,.0f} events/s  (target >= 25,000)")
        lags = await measure_lag(bus, workdir, args.lag_rate, args.lag_seconds)
        print(
            f"(d) lag at {args.lag_rate:,} events/s for {args.lag_seconds:.0f} s ({len(lags):,} events): "
            f"p50 {statistics.median(lags):.1f} ms, p99 {percentile(lags, 99):.1f} ms, max {max(lags):.1f} ms  (target p99 < 100 ms)"
        )
        if not args.no_auth:
            cost = await authorization_cost(server, args.append_events // 4)
            (rate_c, cpu_c), (rate_p, cpu_p) = cost["central"], cost["publisher"]
            print(f"(e) publish_async as central (no limits):    {rate_c:10,.0f} msg/s, nats-server {cpu_c:.1f} us CPU/msg")
            print(f"(e) publish_async as the publisher role:     {rate_p:10,.0f} msg/s, nats-server {cpu_p:.1f} us CPU/msg"
                  f"  = {rate_p / rate_c:.2f} of central's rate, {cpu_p / cpu_c:.3f} of its server CPU")
        await durability(workdir, args.append_events // 4, args.single_appends)
        print(f"load average at the end: {os.getloadavg()[0]:.1f}")
    finally:
        await bus.close()
        server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000, help="events in the stream for the rebuild (c)")
    parser.add_argument("--append-events", type=int, default=200_000, help="events for (a) and (b)")
    parser.add_argument("--lag-rate", type=int, default=1000, help="events/s for the lag measurement (d)")
    parser.add_argument("--lag-seconds", type=float, default=20.0)
    parser.add_argument("--no-auth", action="store_true", help="nats-server without users (the reference)")
    parser.add_argument("--durability-only", action="store_true", help="only (f): fsync and replication")
    parser.add_argument("--single-appends", type=int, default=1000, help="one-at-a-time appends in (f)")
    run_loop(main(parser.parse_args()))  # the loop our processes run on (uvloop where installed)
