"""Central's health checking, reflection and Prometheus metrics, against a real nats-server
and central's real gRPC and REST servers."""

from __future__ import annotations

import asyncio
import signal

import aiohttp
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from central.server import CentralServer
from events import JobSpec, JobSubmitted
from fake_node import FakeNode
from metrics_text import samples, total, value
from protos import job_pb2, job_pb2_grpc
from test_central_flow import central, config, jobs, make_config, submit  # noqa: F401
from waiting import eventually

pytestmark = pytest.mark.timeout(90)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
CENTRAL_SERVICES = {
    "cyxwiz.protocol.JobService", "cyxwiz.protocol.NodeService", "cyxwiz.protocol.NodeDiscoveryService",
    "cyxwiz.protocol.JobStatusService", "cyxwiz.protocol.DeploymentService", "cyxwiz.protocol.TerminalService",
    "cyxwiz.protocol.TerminalAuditService", "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection",
}


async def health(address: str, service: str = "") -> int:
    async with grpc.aio.insecure_channel(address) as channel:
        answer = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service),
                                                                 timeout=10, wait_for_ready=True)
        return answer.status


def reflected_services(address: str) -> set[str]:
    """The service names reflection lists, each resolved to its file descriptor (blocking)."""
    with grpc.insecure_channel(address) as channel:
        db = ProtoReflectionDescriptorDatabase(channel)
        names = set(db.get_services())
        for name in names:
            found = db.FindFileContainingSymbol(name)
            assert any(f"{found.package}.{s.name}" == name for s in found.service), (name, found.name)
        return names


async def scrape(central: CentralServer) -> str:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{central.rest_url}/metrics") as response:
            assert response.status == 200
            assert response.headers["content-type"].startswith("text/plain")
            return await response.text()


async def test_health_is_not_serving_while_central_replays_then_serving(nats_server, bus, tmp_path):
    for i in range(20):
        await bus.append(JobSubmitted(job_id=f"old-{i}", spec=JobSpec(dataset_uri="builtin://iris", epochs=1)))
    server = CentralServer(make_config(nats_server, tmp_path / "home"))
    starting = asyncio.create_task(server.start())
    paused = False
    try:
        await eventually(lambda: server.grpc_port or starting.done(), interval=0, message="central listens")
        nats_server.process.send_signal(signal.SIGSTOP)  # the replay cannot finish while NATS is stopped
        paused = True
        assert not starting.done()
        assert await health(server.grpc_address) == NOT_SERVING
        assert await health(server.grpc_address, "cyxwiz.protocol.JobService") == NOT_SERVING
        async with grpc.aio.insecure_channel(server.grpc_address) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await job_pb2_grpc.JobServiceStub(channel).GetJobStatus(
                    job_pb2.GetJobStatusRequest(job_id="old-1"), timeout=10)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
            assert refused.value.details().startswith("503: central is replaying its event stream (")
            updates = job_pb2_grpc.JobServiceStub(channel).StreamJobUpdates(
                job_pb2.GetJobStatusRequest(job_id="old-1"), timeout=10)
            with pytest.raises(grpc.aio.AioRpcError) as streamed:
                await updates.read()
            assert streamed.value.code() == grpc.StatusCode.UNAVAILABLE
            watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""))
            assert (await watch.read()).status == NOT_SERVING
            assert await asyncio.to_thread(reflected_services, server.grpc_address) == CENTRAL_SERVICES
            nats_server.process.send_signal(signal.SIGCONT)
            paused = False
            assert (await asyncio.wait_for(watch.read(), 30)).status == SERVING
            watch.cancel()
            await asyncio.wait_for(starting, 30)
            status = await job_pb2_grpc.JobServiceStub(channel).GetJobStatus(
                job_pb2.GetJobStatusRequest(job_id="old-1"), timeout=10)
            assert status.status.job_id == "old-1"
        for name in CENTRAL_SERVICES - {"grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"}:
            assert await health(server.grpc_address, name) == SERVING, name
        with pytest.raises(grpc.aio.AioRpcError) as unknown:
            await health(server.grpc_address, "cyxwiz.protocol.NoSuchService")
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        if paused:
            nats_server.process.send_signal(signal.SIGCONT)
        if not starting.done():
            await asyncio.wait_for(asyncio.shield(starting), 30)
        await server.stop()


async def test_health_turns_not_serving_when_central_stops(nats_server, tmp_path):
    server = CentralServer(make_config(nats_server, tmp_path / "home"))
    await server.start()
    stopping = None
    try:
        async with grpc.aio.insecure_channel(server.grpc_address) as channel:
            watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""))
            assert (await watch.read()).status == SERVING
            stopping = asyncio.create_task(server.stop())
            assert (await asyncio.wait_for(watch.read(), 10)).status == NOT_SERVING
    finally:
        await (stopping if stopping is not None else server.stop())


async def test_reflection_lists_every_central_service(central):
    assert await asyncio.to_thread(reflected_services, central.grpc_address) == CENTRAL_SERVICES


async def test_metrics_show_jobs_by_state_assignments_and_calls_by_code(central, jobs):
    before = samples(await scrape(central))
    assert value(before, "cyxwiz_central_ready") == 1
    ids = await submit(jobs, 2)
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await jobs.GetJobStatus(job_pb2.GetJobStatusRequest(job_id="no-such-job"))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND

    queued = samples(await scrape(central))
    assert value(queued, "cyxwiz_jobs", state="queued") == 2
    assert value(queued, "cyxwiz_jobs", state="assigned") == 0
    assert value(queued, "cyxwiz_queue_depth") == 2
    assert value(queued, "cyxwiz_assignments_total") == 0
    call = dict(grpc_type="unary", grpc_service="cyxwiz.protocol.JobService")
    assert (total(queued, "grpc_server_handled_total", grpc_method="SubmitJob", grpc_code="OK", **call)
            - total(before, "grpc_server_handled_total", grpc_method="SubmitJob", grpc_code="OK", **call)) == 2
    assert (total(queued, "grpc_server_handled_total", grpc_method="GetJobStatus", grpc_code="NOT_FOUND", **call)
            - total(before, "grpc_server_handled_total", grpc_method="GetJobStatus", grpc_code="NOT_FOUND", **call)) == 1
    assert value(queued, "cyxwiz_append_seconds_count") - value(before, "cyxwiz_append_seconds_count") >= 2

    async def projected():
        now = samples(await scrape(central))
        count = value(now, "cyxwiz_projection_lag_seconds_count") - value(before, "cyxwiz_projection_lag_seconds_count")
        seconds = value(now, "cyxwiz_projection_lag_seconds_sum") - value(before, "cyxwiz_projection_lag_seconds_sum")
        return count >= 1 and (count, seconds)
    count, seconds = await eventually(projected, message="the projector's commit of the two JobSubmitted is measured")
    assert 0 < seconds / count < 30, "lags in seconds, from the stream's store time to the commit"

    node = await FakeNode(central.grpc_address, node_id="n1", slots=2).start()
    node.start_heartbeats(0.1)  # central's test timeout declares a silent node lost after 1 s
    try:
        async def assigned():
            now = samples(await scrape(central))
            return (value(now, "cyxwiz_jobs", state="assigned") == 2 and value(now, "cyxwiz_jobs", state="queued") == 0
                    and value(now, "cyxwiz_queue_depth") == 0 and value(now, "cyxwiz_assignments_total") == 2
                    and value(now, "cyxwiz_nodes", status="online") == 1
                    and value(now, "cyxwiz_dispatch_total", outcome="accepted") == 2)
        await eventually(assigned, timeout=20, message="both jobs assigned to n1 and accepted")
        assert sorted(a.job_id for a in node.assignments) == sorted(ids)
        now = samples(await scrape(central))
        assert value(now, "cyxwiz_scheduler_pass_seconds_count") > value(before, "cyxwiz_scheduler_pass_seconds_count")

        async def loop_watched():
            lag = samples(await scrape(central))
            return value(lag, "cyxwiz_event_loop_lag_seconds_count") > value(now, "cyxwiz_event_loop_lag_seconds_count")
        await eventually(loop_watched, message="the event loop's lag is sampled while central runs")
    finally:
        await node.stop()


async def test_garbage_bytes_are_counted_as_invalid_argument(central):
    before = samples(await scrape(central))
    async with grpc.aio.insecure_channel(central.grpc_address) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as garbage:
            await channel.unary_unary("/cyxwiz.protocol.JobService/SubmitJob")(b"\xff\xff\xff", timeout=10)
    assert garbage.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    after = samples(await scrape(central))
    labels = dict(grpc_service="cyxwiz.protocol.JobService", grpc_method="SubmitJob", grpc_code="INVALID_ARGUMENT")
    assert total(after, "grpc_server_handled_total", **labels) - total(before, "grpc_server_handled_total", **labels) == 1
