"""Event backbone benchmark: append throughput, projection rebuild, projection lag.

    python bench/backbone_bench.py                       # the full run (1,000,000 events)
    python bench/backbone_bench.py --events 100000 --append-events 50000 --lag-seconds 5

Runs its own nats-server (JetStream, file storage) in a temporary folder and measures,
in one run, side by side:
  (a) raw nats-py ``publish_async`` of pre-encoded event bytes into a stream: the ceiling;
  (b) ``EventBus.append_many`` of typed events, with a ``Projector`` running in the same
      process, until the last one is visible in DuckDB; and the ratio (b)/(a);
  (c) rebuilding a fresh projection from ``--events`` events in the stream;
  (d) projection lag (append -> committed in DuckDB) at a steady rate, p50/p99/max.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nats.js import api  # noqa: E402

from bus import EventBus, start_server  # noqa: E402
from central.projection import EVENTS_STREAM, Projection, Projector, rebuild  # noqa: E402
from events import (  # noqa: E402
    EpochCompleted,
    Event,
    JobAssigned,
    JobCompleted,
    JobSpec,
    JobStarted,
    JobSubmitted,
    NodeRegistered,
    encode,
    headers_for,
    subject_for,
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
    """(a): pre-encoded bytes, publish_async, every ack awaited; msg/s."""
    await bus.js.add_stream(api.StreamConfig(name="BENCH_RAW", subjects=["bench.>"], storage=api.StorageType.FILE))
    payloads = [(f"bench.job.{i // 9}", encode(e)) for i, e in enumerate(job_history(10_000_000, n))]
    started = time.perf_counter()
    for start in range(0, n, 10_000):
        futures = [await bus.js.publish_async(s, p) for s, p in payloads[start : start + 10_000]]
        await asyncio.gather(*futures)
    rate = n / (time.perf_counter() - started)
    await bus.js.delete_stream("BENCH_RAW")
    return rate


async def append_until_visible(bus: EventBus, workdir: Path, n: int) -> tuple[float, float]:
    """(b): append_many with the projector running; (append msg/s, visible-in-DuckDB msg/s)."""
    projection = Projection(workdir / "live.duckdb")
    projector = Projector(projection, bus, telemetry=False)
    task = asyncio.create_task(projector.run())
    events = list(job_history(0, n))
    started = time.perf_counter()
    last = 0
    for chunk in chunks(iter(events), 10_000):
        last = (await bus.append_many(chunk))[-1]
    appended = time.perf_counter() - started
    if not await projector.wait_for_seq(last, timeout=600):
        raise RuntimeError("projection did not catch up")
    visible = time.perf_counter() - started
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    projection.close()
    return n / appended, n / visible


async def fill(bus: EventBus, n: int, first_job: int) -> None:
    for chunk in chunks(job_history(first_job, n), 10_000):
        await bus.append_many(chunk)


async def measure_rebuild(bus: EventBus, workdir: Path) -> tuple[int, float]:
    total = await bus.last_sequence()
    started = time.perf_counter()
    await rebuild(workdir / "rebuilt.duckdb", bus)
    return total, total / (time.perf_counter() - started)


async def measure_lag(bus: EventBus, workdir: Path, rate: int, seconds: float) -> list[float]:
    """(d): append ``rate`` events/s in 10 ms ticks with the projector live; lag per event in ms."""
    projection = Projection(workdir / "rebuilt.duckdb")  # a large projection, caught up
    sent_at: dict[int, float] = {}
    lags: list[float] = []
    pending: list[int] = []

    def on_applied(stream: str, seq: int) -> None:
        now = time.perf_counter()
        while pending and pending[0] <= seq:
            lags.append((now - sent_at.pop(pending.pop(0))) * 1000)

    projector = Projector(projection, bus, telemetry=False, on_applied=on_applied)
    await projector.catch_up()
    task = asyncio.create_task(projector.run())
    await asyncio.sleep(0.5)  # the subscription is live
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
    await projector.wait_for_seq(pending[-1] if pending else 0, timeout=30)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    projection.close()
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


async def main(args: argparse.Namespace) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="cyxwiz-bench-"))
    server = start_server(workdir / "nats", port=0)
    bus = await EventBus.connect(server.url)
    try:
        print(f"machine: {machine()}")
        raw = await raw_ceiling(bus, args.append_events)
        print(f"(a) raw publish_async into a stream:        {raw:10,.0f} msg/s")
        appended, visible = await append_until_visible(bus, workdir, args.append_events)
        print(f"(b) append_many, typed events (acked):      {appended:10,.0f} msg/s")
        print(f"(b) append_many until visible in DuckDB:    {visible:10,.0f} msg/s  = {visible / raw:.2f} of (a)  (target >= 0.70)")
        await fill(bus, max(0, args.events - args.append_events), first_job=1_000_000)
        total, rate = await measure_rebuild(bus, workdir)
        print(f"(c) rebuild from {total:,} events:         {rate:10,.0f} events/s  (target >= 25,000)")
        lags = await measure_lag(bus, workdir, args.lag_rate, args.lag_seconds)
        print(
            f"(d) lag at {args.lag_rate:,} events/s for {args.lag_seconds:.0f} s ({len(lags):,} events): "
            f"p50 {statistics.median(lags):.1f} ms, p99 {percentile(lags, 99):.1f} ms, max {max(lags):.1f} ms  (target p99 < 100 ms)"
        )
    finally:
        await bus.close()
        server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000, help="events in the stream for the rebuild (c)")
    parser.add_argument("--append-events", type=int, default=200_000, help="events for (a) and (b)")
    parser.add_argument("--lag-rate", type=int, default=1000, help="events/s for the lag measurement (d)")
    parser.add_argument("--lag-seconds", type=float, default=20.0)
    asyncio.run(main(parser.parse_args()))
