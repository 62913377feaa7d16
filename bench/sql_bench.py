"""GET /api/v1/jobs latency while users' SQL runs long, and what a hostile value costs.

    python bench/sql_bench.py [--jobs 1000] [--gets 300] [--slow 8] [--reference-tree DIR]

A real nats-server, ``--jobs`` JobSubmitted events, and central as a subprocess (``python
-m central central``, its REST API on a free port). Once its projection holds every job:

1. idle: ``--gets`` sequential ``GET /api/v1/jobs?limit=100``: p50 / p99 / max;
2. loaded: ``--slow`` concurrent queries that each run until central's timeout stops
   them (a cross join of two ranges of a million rows), and meanwhile the same GETs;
3. a value of ``--huge`` bytes (``SELECT repeat('x', 1000000000)``): status, seconds,
   central's RSS before and its peak while it answers (psutil, sampled every 20 ms).

``--reference-tree DIR`` runs the same phases first against a central started from
another checkout (e.g. ``git archive <commit> | tar -x -C DIR``: the code before the SQL
limits) as the reference, with fewer GETs in phase 2 (each may wait for a query).
"""

from __future__ import annotations

import os

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")  # before gRPC is imported (why: protos/__init__.py)

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bus import CREDS_ENV, EventBus, start_server  # noqa: E402
from events import JobSpec, JobSubmitted  # noqa: E402

SLOW = "SELECT sum(a.range * b.range) FROM range(1000000) a, range(1000000) b"


def start_central(tree: Path, nats_url: str, home: Path) -> tuple[subprocess.Popen, dict]:
    home.mkdir(parents=True, exist_ok=True)
    ready = home / "ready.json"
    log = open(home / "central.log", "ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "central", "central", "--nats", nats_url, "--home", str(home), "--grpc-port", "0",
         "--rest-port", "0", "--ready-file", str(ready)],
        stdout=subprocess.DEVNULL, stderr=log, cwd=tree,
        env={**os.environ, "PYTHONPATH": str(tree), "CYXWIZ_LOG_LEVEL": "WARNING"},
    )
    deadline = time.monotonic() + 300
    while not ready.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"central did not start: {(home / 'central.log').read_text()[-2000:]}")
        time.sleep(0.05)
    return process, json.loads(ready.read_text())


def percentiles(samples: list[float]) -> dict:
    ms = sorted(s * 1000 for s in samples)
    p99 = ms[min(len(ms) - 1, round(0.99 * (len(ms) - 1)))]
    return {"n": len(ms), "p50_ms": round(statistics.median(ms), 1), "p99_ms": round(p99, 1), "max_ms": round(ms[-1], 1)}


async def gets(session: aiohttp.ClientSession, rest: str, n: int, until: float | None = None) -> list[float]:
    samples = []
    for _ in range(n):
        if until is not None and time.monotonic() > until:
            break
        started = time.monotonic()
        async with session.get(f"{rest}/api/v1/jobs?limit=100") as response:
            assert response.status == 200, response.status
            await response.read()
        samples.append(time.monotonic() - started)
    return samples


async def sql(session: aiohttp.ClientSession, rest: str, query: str) -> tuple[int, str, float]:
    started = time.monotonic()
    async with session.post(f"{rest}/api/v1/sql", json={"sql": query}) as response:
        body = await response.read()
    return response.status, body[:200].decode(errors="replace"), time.monotonic() - started


async def measure(rest: str, pid: int, args) -> dict:
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for _ in range(20):  # warm-up
            await gets(session, rest, 1)
        idle = await gets(session, rest, args.gets)
        slow = [asyncio.create_task(sql(session, rest, SLOW)) for _ in range(args.slow)]
        await asyncio.sleep(0.5)  # the long queries are running
        loaded = await gets(session, rest, args.loaded_gets, until=time.monotonic() + args.window)
        running_at_end = sum(not t.done() for t in slow)
        answers = await asyncio.gather(*slow)
        process = psutil.Process(pid)
        rss_before = peak = process.memory_info().rss
        huge = asyncio.create_task(sql(session, rest, f"SELECT repeat('x', {args.huge})"))
        while not huge.done():  # central's peak RSS while it answers
            peak = max(peak, process.memory_info().rss)
            await asyncio.sleep(0.02)
        status, body, seconds = huge.result()
    return {
        "idle": percentiles(idle), "loaded": percentiles(loaded), "slow_queries_running_at_end": running_at_end,
        "slow_answers": sorted({(a[0], a[1][:90]) for a in answers}), "slow_seconds_max": round(max(a[2] for a in answers), 1),
        "huge_value": {"bytes": args.huge, "status": status, "seconds": round(seconds, 1), "body": body[:120],
                       "rss_before_mb": round(rss_before / 2**20), "rss_peak_mb": round(peak / 2**20)},
    }


async def fill(nats_url: str, jobs: int) -> None:
    bus = await EventBus.connect(nats_url)
    try:
        events = [JobSubmitted(job_id=f"bench-{i:05d}", spec=JobSpec(dataset_uri="builtin://iris", name=f"job {i}"))
                  for i in range(jobs)]
        for first in range(0, jobs, 500):
            await bus.append_many(events[first:first + 500])
    finally:
        await bus.close()


async def wait_projected(rest: str, seq: int) -> None:
    async with aiohttp.ClientSession() as session:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            async with session.get(f"{rest}/api/health") as response:
                if (await response.json())["projection_seq"] >= seq:
                    return
            await asyncio.sleep(0.2)
    raise SystemExit("the projection did not catch up")


def run(tree: Path, args, label: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        auth = (tree / "bus" / "credentials.py").exists()  # a reference tree from before NATS users has none
        server = start_server(home / "nats", port=0, auth=auth)
        if auth:
            os.environ[CREDS_ENV] = str(server.seed("central"))  # this process and its children
        else:
            os.environ.pop(CREDS_ENV, None)
        try:
            asyncio.run(fill(server.url, args.jobs))
            process, info = start_central(tree, server.url, home / "central")
            try:
                asyncio.run(wait_projected(info["rest"], args.jobs))
                result = asyncio.run(measure(info["rest"], process.pid, args))
            finally:
                process.terminate()
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    process.kill()
        finally:
            server.kill()
    print(json.dumps({label: result}, indent=1), flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--gets", type=int, default=300)
    parser.add_argument("--slow", type=int, default=8)
    parser.add_argument("--loaded-gets", type=int, default=300)
    parser.add_argument("--window", type=float, default=25.0, help="seconds of GETs while the long queries run")
    parser.add_argument("--huge", type=int, default=1_000_000_000, help="bytes of the repeat() value of phase 3")
    parser.add_argument("--reference-tree", type=Path)
    args = parser.parse_args()
    results = {}
    if args.reference_tree:
        results["reference"] = run(args.reference_tree.resolve(), args, "reference")
    results["ours"] = run(ROOT, args, "ours")
    if "reference" in results:
        ref, ours = results["reference"]["loaded"], results["ours"]["loaded"]
        print(json.dumps({"loaded_p99_reference_over_ours": round(ref["p99_ms"] / ours["p99_ms"], 1)}))


if __name__ == "__main__":
    main()
