"""The dashboard's server side against real parts: the page and its vendored files, /docs
and /metrics, the jobs list paged over a real projection, the event log, and the live
streams of a real central (nats-server, gRPC, a fake node that reports epochs)."""

from __future__ import annotations

import asyncio
import re
import signal
import time

import aiohttp
import grpc
import msgspec
import pytest
import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST

from central.adapters.dashboard import STATIC
from central.adapters.live import QUEUE_FRAMES, LiveFeed
from central.adapters.rest import make_app, serve_rest
from central.readmodel.projection import Projection
from central.readmodel.projector import Projector
from central.server import CentralConfig, CentralServer
from events import JobSpec, JobSubmitted
from fake_node import FakeNode
from protos import job_pb2, job_pb2_grpc
from protos.convert import bearer_metadata
from waiting import eventually

KEY = "k3y"


@pytest.fixture
async def bare(bus, tmp_path):
    """(base url) of an app over a projection of 120 jobs (j000 oldest ... j119 newest)."""
    await bus.append_many([JobSubmitted(job_id=f"j{i:03d}", spec=JobSpec(name="even" if i % 2 == 0 else "odd"))
                           for i in range(120)])
    projection = Projection(tmp_path / "p.duckdb")
    await Projector(projection, bus).catch_up()
    runner, port = await serve_rest(make_app(projection, scheduler_status=dict, scheduler_queue=list), "127.0.0.1", 0)
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()
    projection.close()


async def fetch(url: str, headers: dict | None = None) -> tuple[int, str, bytes]:
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as response:
        return response.status, response.headers.get("Content-Type", ""), await response.read()


async def test_the_page_and_its_files_ship_in_the_package_without_a_cdn(bare):
    status, kind, page = await fetch(bare + "/")
    assert status == 200 and kind.startswith("text/html") and b'src="/ui/app.js"' in page
    for path in ("/ui/app.js", "/ui/app.css", "/ui/vendor/uplot/uPlot.iife.min.js", "/ui/vendor/uplot/uPlot.min.css",
                 "/ui/vendor/swagger-ui/swagger-ui-bundle.js"):
        status, _, body = await fetch(bare + path)
        assert status == 200 and len(body) > 1000, path
    assert "MIT" in (STATIC / "vendor/uplot/LICENSE").read_text()
    assert "Apache License" in (STATIC / "vendor/swagger-ui/LICENSE").read_text()
    for own in ("index.html", "app.js", "app.css"):  # nothing is fetched from elsewhere
        assert not re.search(r"https?://", (STATIC / own).read_text()), own
    status, kind, docs = await fetch(bare + "/docs")
    assert status == 200 and kind.startswith("text/html")
    assert b"/ui/vendor/swagger-ui/swagger-ui-bundle.js" in docs and b"cdn." not in docs
    assert (await fetch(bare + "/ui/nothing.js"))[0] == 404


async def test_metrics_answers_prometheus_text(bare):
    status, kind, body = await fetch(bare + "/metrics")
    assert status == 200 and kind == CONTENT_TYPE_LATEST
    assert b"# TYPE python_info gauge" in body


async def test_jobs_are_paged_filtered_and_counted(bare):
    status, _, body = await fetch(bare + "/api/v1/jobs?limit=50&offset=100")
    page = msgspec.json.decode(body)
    assert status == 200 and page["total"] == 120 and page["counts"] == {"queued": 120}
    assert [j["job_id"] for j in page["jobs"]] == [f"j{i:03d}" for i in range(19, -1, -1)]
    page = msgspec.json.decode((await fetch(bare + "/api/v1/jobs?q=J11&limit=5"))[2])
    assert page["total"] == 10 and [j["job_id"] for j in page["jobs"]] == ["j119", "j118", "j117", "j116", "j115"]
    page = msgspec.json.decode((await fetch(bare + "/api/v1/jobs?q=even&state=queued&limit=1"))[2])
    assert page["total"] == 60 and page["jobs"][0]["job_id"] == "j118"
    page = msgspec.json.decode((await fetch(bare + "/api/v1/jobs?state=running"))[2])
    assert (page["total"], page["jobs"]) == (0, [])
    status, _, body = await fetch(bare + "/api/v1/jobs?offset=-1")
    assert (status, msgspec.json.decode(body)) == (400, {"error": {
        "code": 400, "message": "offset must be between 0 and 1000000000 (got -1)"}})


async def test_the_event_log_filters_and_pages_by_sequence(bare):
    first = msgspec.json.decode((await fetch(bare + "/api/v1/events?type=JobSubmitted&limit=50"))[2])
    assert [e["seq"] for e in first["events"]] == list(range(120, 70, -1)) and first["types"] == ["JobSubmitted"]
    assert msgspec.json.decode(first["events"][0]["raw"])["job_id"] == "j119"
    older = msgspec.json.decode((await fetch(bare + "/api/v1/events?type=JobSubmitted&limit=50&before=71"))[2])
    assert older["events"][0]["seq"] == 70
    one = msgspec.json.decode((await fetch(bare + "/api/v1/events?aggregate=j007"))[2])
    assert [e["aggregate_id"] for e in one["events"]] == ["j007"]
    assert msgspec.json.decode((await fetch(bare + "/api/v1/events?type=NodeLost"))[2])["events"] == []
    status, _, body = await fetch(bare + "/api/v1/events?limit=many")
    assert status == 400 and msgspec.json.decode(body)["error"]["message"] == "limit must be an integer (got 'many')"


async def test_without_a_live_feed_the_streams_say_so(bare):
    status, _, body = await fetch(bare + "/api/v1/live/jobs")
    assert status == 503 and "no live feed" in msgspec.json.decode(body)["error"]["message"]


async def test_serving_rest_leaves_the_signal_handlers_to_central(tmp_path):
    assert hasattr(uvicorn.Server, "capture_signals")  # the hook rest_server overrides
    before = signal.getsignal(signal.SIGTERM)
    runner, _ = await serve_rest(make_app(None, scheduler_status=dict, scheduler_queue=list), "127.0.0.1", 0)
    try:
        assert signal.getsignal(signal.SIGTERM) is before
    finally:
        await runner.cleanup()


async def test_a_taken_port_is_an_oserror_at_once():
    runner, port = await serve_rest(make_app(None, scheduler_status=dict, scheduler_queue=list), "127.0.0.1", 0)
    try:
        with pytest.raises(OSError):
            await serve_rest(make_app(None, scheduler_status=dict, scheduler_queue=list), "127.0.0.1", port)
    finally:
        await runner.cleanup()


# --- the live streams of a real central ---------------------------------------------------------


@pytest.fixture
async def stack(nats_server, tmp_path):
    config = CentralConfig.load(env={}, home=tmp_path / "home", nats_url=nats_server.url, grpc_port=0, rest_port=0,
                                host="127.0.0.1", api_key=KEY, heartbeat_s=0.5, node_timeout_s=30)
    central = CentralServer(config)
    await central.start()
    node = await FakeNode(central.grpc_address, slots=1).start()
    node.start_heartbeats(0.5)
    channel = grpc.aio.insecure_channel(central.grpc_address)
    stub = job_pb2_grpc.JobServiceStub(channel)
    await stub.SubmitJob(job_pb2.SubmitJobRequest(config=job_pb2.JobConfig(
        job_type=job_pb2.JOB_TYPE_TRAINING, epochs=3, batch_size=8, dataset_uri="builtin://iris", job_id="live-1")),
        metadata=bearer_metadata(KEY))
    await eventually(lambda: node.assignments, message="the fake node got the job")
    stopped = False

    async def stop() -> None:
        nonlocal stopped
        if not stopped:
            stopped = True
            await node.stop()
            await channel.close()
            await central.stop()

    yield central, node, stop
    await stop()


class Frames:
    """An open SSE response read frame by frame: (event, data)."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response
        self.buffer = b""

    async def next(self, timeout: float = 10.0) -> tuple[str, object] | None:
        deadline = time.monotonic() + timeout
        while b"\n\n" not in self.buffer:
            chunk = await asyncio.wait_for(self.response.content.readany(), max(0.01, deadline - time.monotonic()))
            if not chunk:
                return None
            self.buffer += chunk
        block, self.buffer = self.buffer.split(b"\n\n", 1)
        fields = dict(line.split(b": ", 1) for line in block.split(b"\n") if b": " in line and not line.startswith(b":"))
        if b"event" not in fields:
            return await self.next(timeout)
        return fields[b"event"].decode(), msgspec.json.decode(fields[b"data"])

    async def until(self, kind: str, timeout: float = 10.0):
        while True:
            got = await self.next(timeout)
            assert got is not None, f"the stream ended before {kind!r}"
            if got[0] == kind:
                return got[1]


async def test_a_job_page_gets_each_epoch_and_the_list_gets_changes(stack):
    central, node, _ = stack
    base, auth = central.rest_url, {"Authorization": f"Bearer {KEY}"}
    async with aiohttp.ClientSession() as session:
        async with session.get(base + "/api/v1/live/jobs/live-1") as refused:
            assert refused.status == 401 and (await refused.json())["error"]["code"] == 401
        async with session.get(base + "/api/v1/live/jobs/live-1", headers=auth) as job_page, \
                session.get(base + "/api/v1/live/jobs", headers=auth) as job_list:
            assert job_page.headers["Content-Type"].startswith("text/event-stream")
            page, listing = Frames(job_page), Frames(job_list)
            await page.until("hello")
            await listing.until("hello")
            await node.progress("live-1", 1, loss=0.9)
            epoch = await page.until("epoch")
            assert (epoch["job_id"], epoch["epoch"], epoch["loss"]) == ("live-1", 1, 0.9)
            changed = await listing.until("jobs")
            assert [(j["job_id"], j["state"], j["current_epoch"]) for j in changed] == [("live-1", "running", 1)]
            await node.progress("live-1", 2, loss=0.5)
            assert (await page.until("epoch"))["loss"] == 0.5
            await node.complete("live-1")
            assert (await page.until("epoch"))["epoch"] == 3
            assert (await page.until("job"))["state"] == "completed"
    await eventually(lambda: central.live.open_pages == 0, message="closed pages are forgotten")


async def test_stopping_central_ends_the_open_streams(stack):
    central, _, stop = stack
    async with aiohttp.ClientSession() as session:
        async with session.get(central.rest_url + "/api/v1/live/jobs/live-1",
                               headers={"Authorization": f"Bearer {KEY}"}) as response:
            frames = Frames(response)
            await frames.until("hello")
            started = time.monotonic()
            await asyncio.wait_for(stop(), 30)
            assert time.monotonic() - started < 15
            assert await frames.next(timeout=10) is None


# --- the fan-out alone ---------------------------------------------------------------------------


async def test_a_page_that_falls_behind_is_told_to_reset_and_closed():
    from central.lifecycle.jobs import JobState
    from events import EpochCompleted

    live = LiveFeed()
    frames = live.job_frames("j")
    assert b"event: hello" in await anext(frames)
    for epoch in range(QUEUE_FRAMES + 5):
        live.on_event(EpochCompleted(job_id="j", epoch=epoch + 1), None, JobState(job_id="j"))
    kinds = [frame.split(b"\n", 1)[0] async for frame in frames]
    assert len(kinds) == QUEUE_FRAMES + 1 and kinds[-1] == b"event: reset"
    assert live.open_pages == 0


async def test_with_an_api_key_only_the_page_docs_health_and_metrics_are_open():
    runner, port = await serve_rest(make_app(None, scheduler_status=dict, scheduler_queue=list, api_key=KEY),
                                    "127.0.0.1", 0)
    base = f"http://127.0.0.1:{port}"
    try:
        for path in ("/", "/ui/app.js", "/docs", "/api/v1/openapi.json", "/api/health", "/metrics"):
            assert (await fetch(base + path))[0] == 200, path
        for path in ("/api/v1/live/jobs", "/api/v1/events", "/api/v1/deployments", "/api/v1/nothing"):
            status, _, body = await fetch(base + path)
            assert (status, msgspec.json.decode(body)["error"]["code"]) == (401, 401), path
        status, _, _ = await fetch(base + "/api/v1/nothing", {"Authorization": f"Bearer {KEY}"})
        assert status == 404
    finally:
        await runner.cleanup()


async def test_an_idle_page_gets_keepalive_comments_and_close_ends_it():
    live = LiveFeed(keepalive_s=0.05)
    frames = live.list_frames()
    assert b"event: hello" in await anext(frames)
    assert await asyncio.wait_for(anext(frames), 10) == b": keepalive\n\n"
    live.close()
    assert [frame async for frame in frames] in ([], [b": keepalive\n\n"])
    assert live.open_pages == 0


async def test_serving_rest_leaves_the_process_logging_alone():
    """uvicorn's own logging setup (dictConfig) would put its handlers on its loggers and
    close every other handler of the process; central configures logging itself."""
    import logging

    runner, _ = await serve_rest(make_app(None, scheduler_status=dict, scheduler_queue=list), "127.0.0.1", 0)
    await runner.cleanup()
    assert logging.getLogger("uvicorn").handlers == [] and logging.getLogger("uvicorn.access").handlers == []
