"""The dashboard's speed targets, against a real nats-server and central as a subprocess.

    python bench/dashboard_bench.py [--history 10000] [--epochs 200] [--clients 50]

1. First paint with ``--history`` finished jobs in the stream (7 events each): headless
   Chromium (Debian's ``chromium`` + ``chromium-driver``, driven by selenium) opens
   ``/#/jobs``; reported are the browser's first-contentful-paint and the moment the
   first page of jobs is on screen (the page's ``cyxwiz:jobs-shown`` mark, taken in the
   animation frame after the table is in the DOM), both from navigation start, for a
   cold browser and then warm reloads; and ``GET /api/v1/jobs`` alone (first page and
   page 100). Target: at most 1 s.
2. Epoch latency: a job is made running by appended events, ``--clients`` SSE clients
   (aiohttp, in a process of their own) and one Chromium page hold its job page open, and
   ``--epochs`` EpochCompleted are appended one by one (20 a second), as a node's report
   through central would be. Latency: from just before the append to the client
   receiving the frame (SSE), or to the page's chart showing the point (Chromium:
   a MutationObserver on the chart's ``data-points``; wall clocks of one machine).
   Target: at most 200 ms.

3. Fan-out cost alone: central's REST app and live feed in this process (uvicorn, as
   central serves it), ``--clients`` pages (half the jobs list, half job pages) read by
   another process, fed ``--events-per-s`` job events (JobAssigned, 20 batches a second)
   for 10 s, without and with the pages, twice: this process's CPU time. The difference
   is what the open pages cost central; divided by central's CPU per assignment
   (``bench/central_bench.py``) it is the share of the live assignment rate they take.

Where Chromium or chromedriver is missing, the browser parts are skipped and say so.
"""

from __future__ import annotations

import os

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")

import argparse
import asyncio
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bus import CREDS_ENV, EventBus, start_server  # noqa: E402
from events import (  # noqa: E402
    EpochCompleted, JobAssigned, JobCompleted, JobSpec, JobStarted, JobSubmitted,
)

LIVE_JOB = "bench-live"


def start_central(nats_url: str, home: Path) -> tuple[subprocess.Popen, dict]:
    ready = home / "ready.json"
    log = open(home / "central.log", "ab")
    env = {**os.environ, "CYXWIZ_LOG_LEVEL": "WARNING", "CYXWIZ_HEARTBEAT_S": "600", "CYXWIZ_NODE_TIMEOUT_S": "3600"}
    process = subprocess.Popen(
        [sys.executable, "-m", "central", "central", "--nats", nats_url, "--home", str(home), "--grpc-port", "0",
         "--rest-port", "0", "--ready-file", str(ready)], stdout=subprocess.DEVNULL, stderr=log, env=env, cwd=ROOT)
    deadline = time.monotonic() + 600
    while not ready.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"central did not start: {(home / 'central.log').read_text()[-2000:]}")
        time.sleep(0.05)
    return process, json.loads(ready.read_text())


async def write_history(nats_url: str, n: int) -> int:
    bus = await EventBus.connect(nats_url)
    batch = []
    for i in range(n):
        job = f"hist-{i:06d}"
        batch += [JobSubmitted(job_id=job, spec=JobSpec(epochs=3, name=f"sweep-{i % 17}", dataset_uri="builtin://iris")),
                  JobAssigned(job_id=job, node_id="hist-node"), JobStarted(job_id=job, node_id="hist-node")]
        batch += [EpochCompleted(job_id=job, node_id="hist-node", epoch=e, loss=1.0 / e, accuracy=0.3 * e)
                  for e in (1, 2, 3)]
        batch.append(JobCompleted(job_id=job, node_id="hist-node", metrics={"loss": 0.33, "accuracy": 0.9},
                                  artifact_uri=f"nats://cyxwiz-models/{job}", sha256="0" * 64, size_bytes=1000))
        if len(batch) >= 10_000:
            await bus.append_many(batch)
            batch = []
    batch += [JobSubmitted(job_id=LIVE_JOB, spec=JobSpec(epochs=100_000, name="live")),
              JobAssigned(job_id=LIVE_JOB, node_id="bench-node"), JobStarted(job_id=LIVE_JOB, node_id="bench-node")]
    await bus.append_many(batch)
    last = await bus.last_sequence()
    await bus.close()
    return last


async def wait_projected(rest: str, seq: int, timeout: float = 600) -> float:
    started = time.monotonic()
    async with aiohttp.ClientSession() as session:
        while time.monotonic() - started < timeout:
            async with session.get(rest + "/api/health") as r:
                if (await r.json())["projection_seq"] >= seq:
                    return time.monotonic() - started
            await asyncio.sleep(0.1)
    raise SystemExit(f"the projection did not reach {seq} in {timeout:.0f} s")


def browser():
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not driver:
        return None
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(driver), options=options)


def wait_js(driver, script: str, timeout: float = 30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = driver.execute_script(script)
        if value:
            return value
        time.sleep(0.01)
    raise SystemExit(f"never true in the browser: {script}")


PAINT = """
const shown = performance.getEntriesByName('cyxwiz:jobs-shown')[0];
const fcp = performance.getEntriesByName('first-contentful-paint')[0];
return shown && fcp ? [fcp.startTime, shown.startTime, document.querySelectorAll('#jobs-table tbody tr').length] : null;
"""


def first_paint(rest: str, loads: int) -> dict:
    driver = browser()
    if driver is None:
        return {"skipped": "no chromium/chromedriver (apt-get install -y chromium chromium-driver)"}
    try:
        runs = []
        for i in range(loads):
            driver.get(f"{rest}/?run={i}#/jobs")
            runs.append(wait_js(driver, PAINT))
        driver.get(f"{rest}/?run=paged#/jobs?page=100")
        paged = wait_js(driver, PAINT)
    finally:
        driver.quit()
    warm = runs[1:] or runs
    return {"rows_shown": runs[0][2], "cold_fcp_ms": round(runs[0][0]), "cold_jobs_shown_ms": round(runs[0][1]),
            "warm_fcp_ms_median": round(statistics.median(r[0] for r in warm)),
            "warm_jobs_shown_ms_median": round(statistics.median(r[1] for r in warm)),
            "warm_jobs_shown_ms_max": round(max(r[1] for r in warm)), "page_101_jobs_shown_ms": round(paged[1])}


async def api_times(rest: str, n: int = 20) -> dict:
    out = {}
    async with aiohttp.ClientSession() as session:
        for name, path in (("first_page", "/api/v1/jobs?limit=50"), ("page_101", "/api/v1/jobs?limit=50&offset=5000"),
                           ("search", "/api/v1/jobs?limit=50&q=sweep-3")):
            times = []
            for _ in range(n):
                started = time.perf_counter()
                async with session.get(rest + path) as r:
                    await r.read()
                times.append((time.perf_counter() - started) * 1000)
            out[f"{name}_ms_median"] = round(statistics.median(times), 1)
    return out


# --- 2. epoch latency ---------------------------------------------------------------------


OBSERVE = """
window.__seen = {};
const box = document.getElementById('loss-chart');
new MutationObserver(() => { window.__seen[box.dataset.points] = Date.now(); })
  .observe(box, {attributes: true, attributeFilter: ['data-points']});
return true;
"""


def sse_clients(url: str, clients: int, ready, stop, out) -> None:
    """A process of its own: ``clients`` streams of one job page; puts {epoch: [receipt times]}."""
    async def client(session, seen: dict, hello: asyncio.Event) -> None:
        async with session.get(url) as response:
            buffer = b""
            async for chunk in response.content.iter_any():
                now = time.time()
                buffer += chunk
                while b"\n\n" in buffer:
                    block, buffer = buffer.split(b"\n\n", 1)
                    if b"event: hello" in block:
                        hello.set()
                    elif block.startswith(b"event: epoch"):
                        seen.setdefault(json.loads(block.split(b"data: ", 1)[1])["epoch"], []).append(now)

    async def main() -> None:
        seen: dict[int, list[float]] = {}
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            hellos = [asyncio.Event() for _ in range(clients)]
            tasks = [asyncio.create_task(client(session, seen, h)) for h in hellos]
            await asyncio.wait_for(asyncio.gather(*(h.wait() for h in hellos)), 120)
            ready.put(True)
            while not stop.is_set():
                await asyncio.sleep(0.05)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        out.put(seen)

    asyncio.run(main())


async def epoch_latency(nats_url: str, rest: str, epochs: int, clients: int, central_pid: int) -> dict:
    import multiprocessing as mp

    import psutil

    driver = await asyncio.to_thread(browser)
    if driver is not None:
        await asyncio.to_thread(driver.get, f"{rest}/#/job/{LIVE_JOB}")
        await asyncio.to_thread(wait_js, driver, "const b = document.getElementById('loss-chart');"
                                                 " return b && b.dataset.points === '0' && "
                                                 "document.getElementById('live-status').textContent.includes('live')")
        await asyncio.to_thread(driver.execute_script, OBSERVE)
    ctx = mp.get_context("spawn")
    ready, stop, out = ctx.Queue(), ctx.Event(), ctx.Queue()
    reader = ctx.Process(target=sse_clients, args=(f"{rest}/api/v1/live/jobs/{LIVE_JOB}", clients, ready, stop, out))
    reader.start()
    await asyncio.to_thread(ready.get, True, 180)
    bus = await EventBus.connect(nats_url)
    central = psutil.Process(central_pid)
    cpu_before, started = sum(central.cpu_times()[:2]), time.monotonic()
    sent: dict[int, float] = {}
    for epoch in range(1, epochs + 1):
        sent[epoch] = time.time()
        await bus.append(EpochCompleted(job_id=LIVE_JOB, node_id="bench-node", epoch=epoch, loss=1.0 / epoch))
        await asyncio.sleep(0.05)
    await asyncio.sleep(2.0)  # the last frames
    central_cores = (sum(central.cpu_times()[:2]) - cpu_before) / (time.monotonic() - started)
    stop.set()
    seen = await asyncio.to_thread(out.get, True, 120)
    reader.join(30)
    await bus.close()
    sse = [(t - sent[e]) * 1000 for e, times in seen.items() for t in times]
    result = {"epochs": epochs, "sse_clients": clients, "received": len(sse), "expected": epochs * clients,
              "sse_ms_p50": round(statistics.median(sse), 1), "sse_ms_p99": round(_pct(sse, 0.99), 1),
              "sse_ms_max": round(max(sse), 1), "central_cpu_cores_meanwhile": round(central_cores, 3)}
    if driver is None:
        result["browser"] = "skipped: no chromium/chromedriver"
        return result
    try:
        page_seen = await asyncio.to_thread(driver.execute_script, "return window.__seen")
    finally:
        await asyncio.to_thread(driver.quit)
    page = [(t / 1000 - sent[int(e)]) * 1000 for e, t in page_seen.items() if int(e) in sent]
    result.update({"browser_points": len(page), "browser_ms_p50": round(statistics.median(page), 1),
                   "browser_ms_p99": round(_pct(page, 0.99), 1), "browser_ms_max": round(max(page), 1)})
    return result


# --- 3. fan-out cost alone ---------------------------------------------------------------

PAGE_READER = r"""
import asyncio, sys, aiohttp
async def main(base, n):
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        async def page(url):
            async with session.get(url) as response:
                async for _ in response.content.iter_any():
                    pass
        await asyncio.gather(*(page(base + ("/api/v1/live/jobs" if i % 2 == 0 else f"/api/v1/live/jobs/job-{i:06d}"))
                               for i in range(n)))
asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


async def fanout_once(pages: int, events_per_s: int, seconds: float) -> float:
    from central.adapters.live import LiveFeed
    from central.adapters.rest import make_app, serve_rest
    from central.lifecycle.jobs import JobState, JobStatus

    live = LiveFeed()
    runner, port = await serve_rest(make_app(None, scheduler_status=dict, scheduler_queue=list, live=live),
                                    "127.0.0.1", 0)
    reader = None
    try:
        if pages:
            reader = subprocess.Popen([sys.executable, "-c", PAGE_READER, f"http://127.0.0.1:{port}", str(pages)])
            deadline = time.monotonic() + 60
            while live.open_pages < pages:
                if time.monotonic() > deadline:
                    raise SystemExit("the page reader did not connect")
                await asyncio.sleep(0.05)
        cpu, started, i = time.process_time(), time.monotonic(), 0
        while time.monotonic() - started < seconds:
            for _ in range(events_per_s // 20):
                job = f"job-{i:06d}"
                live.on_event(JobAssigned(job_id=job, node_id="n"), None,
                              JobState(job_id=job, status=JobStatus.ASSIGNED, node_id="n"))
                i += 1
            await asyncio.sleep(0.05)
        return (time.process_time() - cpu) / (time.monotonic() - started)
    finally:
        if reader is not None:
            reader.kill()
            reader.wait()
        await runner.cleanup()


async def fanout(pages: int, events_per_s: int, seconds: float = 10.0) -> dict:
    runs = {0: [], pages: []}
    for _ in range(2):
        for n in runs:
            runs[n].append(await fanout_once(n, events_per_s, seconds))
    base, loaded = statistics.median(runs[0]), statistics.median(runs[pages])
    return {"pages": pages, "job_events_per_s": events_per_s,
            "cpu_cores_without": round(base, 4), "cpu_cores_with": round(loaded, 4),
            "pages_cost_cpu_cores": round(loaded - base, 4),
            "pages_cost_us_per_job_event": round((loaded - base) / events_per_s * 1e6, 2)}


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--history", type=int, default=10_000)
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--loads", type=int, default=6)
    parser.add_argument("--events-per-s", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dashboard-bench-") as tmp:
        work = Path(tmp)
        server = start_server(work / "nats", port=0)
        os.environ[CREDS_ENV] = str(server.seed("central"))
        central = None
        try:
            last = asyncio.run(write_history(server.url, args.history))
            home = work / "home"
            home.mkdir()
            central, info = start_central(server.url, home)
            projected_s = asyncio.run(wait_projected(info["rest"], last))
            print(json.dumps({"history_jobs": args.history, "events": last, "projected_s": round(projected_s, 1)}),
                  flush=True)
            print(json.dumps({"first_paint": first_paint(info["rest"], args.loads)}), flush=True)
            print(json.dumps({"api": asyncio.run(api_times(info["rest"]))}), flush=True)
            print(json.dumps({"epoch_latency": asyncio.run(epoch_latency(server.url, info["rest"], args.epochs,
                                                                         args.clients, central.pid))}), flush=True)
            print(json.dumps({"fanout": asyncio.run(fanout(args.clients, args.events_per_s))}), flush=True)
        finally:
            if central is not None:
                central.terminate()
                try:
                    central.wait(30)
                except subprocess.TimeoutExpired:
                    central.kill()
            server.kill()


if __name__ == "__main__":
    main()
