"""Central against real servers: a real nats-server, central's real gRPC server, and fake
nodes that are real gRPC servers on port 0 (tests/fake_node.py)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

import grpc
import pytest

from bus import EventBus
from central.server import CentralConfig, CentralServer
from events import JobSpec, JobSubmitted
from fake_node import FakeNode
from protos import common_pb2, job_pb2, job_pb2_grpc
from protos.convert import bearer_metadata
from waiting import eventually

FAST = dict(heartbeat_s=0.2, node_timeout_s=1.0)


def make_config(nats_server, home: Path, **kw) -> CentralConfig:
    return CentralConfig.load(env={}, home=home, nats_url=nats_server.url, grpc_port=0, rest_port=0,
                              host="127.0.0.1", **{**FAST, **kw})


@pytest.fixture
async def central(nats_server, tmp_path):
    server = CentralServer(make_config(nats_server, tmp_path / "home"))
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def jobs(central):
    channel = grpc.aio.insecure_channel(central.grpc_address)
    yield job_pb2_grpc.JobServiceStub(channel)
    await channel.close()


def config(**kw) -> job_pb2.JobConfig:
    return job_pb2.JobConfig(job_type=job_pb2.JOB_TYPE_TRAINING, epochs=3, batch_size=8,
                             dataset_uri="builtin://iris", **kw)


async def submit(jobs, n: int = 1, **kw) -> list[str]:
    return [(await jobs.SubmitJob(job_pb2.SubmitJobRequest(config=config(**kw)))).job_id for _ in range(n)]


async def state_of(jobs, job_id: str) -> job_pb2.JobStatus:
    return (await jobs.GetJobStatus(job_pb2.GetJobStatusRequest(job_id=job_id))).status


async def stream_events(bus: EventBus, type_name: str | None = None) -> list:
    out = []
    async for msg in bus.read(1):
        event = msg.decode()
        if type_name is None or type(event).__name__ == type_name:
            out.append(event)
    return out


async def test_jobs_are_assigned_run_and_complete(central, jobs):
    node = await FakeNode(central.grpc_address, name="a", slots=2).start()
    node.start_heartbeats(0.2)
    try:
        ids = await submit(jobs, 3)
        await eventually(lambda: len(node.assignments) == 2, message="two slots filled")
        first = node.assignments[0]
        assert first.attempt == 1 and first.config.epochs == 3 and first.config.dataset_uri == "builtin://iris"
        assert (await node.progress(first.job_id, 1, checkpoint="nats://cyxwiz-checkpoints/c1")).continue_job
        status = await state_of(jobs, first.job_id)
        assert (status.state, status.current_epoch, status.metrics["loss"]) == ("running", 1, 0.5)
        await node.complete(first.job_id)
        await node.complete(first.job_id)  # a retried completion report is answered the same
        await eventually(lambda: len(node.assignments) == 3, message="the freed slot takes the third job")
        status = await state_of(jobs, first.job_id)
        assert status.status == common_pb2.STATUS_COMPLETED and status.model_size == 10
        assert {a.job_id for a in node.assignments} == set(ids)
        listed = await jobs.ListJobs(job_pb2.ListJobsRequest(page_size=2))
        assert listed.total_count == 3 and len(listed.jobs) == 2 and listed.next_page_token == "2"
    finally:
        await node.stop()


async def test_a_node_that_refuses_is_skipped(central, jobs):
    busy = await FakeNode(central.grpc_address, node_id="a-busy", refuse=429).start()
    good = await FakeNode(central.grpc_address, node_id="b-good").start()
    busy.start_heartbeats(0.2)  # alive: a loaded machine can take longer than the 1 s node timeout
    good.start_heartbeats(0.2)
    try:
        [job_id] = await submit(jobs)
        await eventually(lambda: good.assignments, timeout=30, message="the accepting node gets the job")
        rejected = await stream_events(central.bus, "JobRejected")
        assert [(e.job_id, e.node_id, e.reason) for e in rejected] == [(job_id, "a-busy", "busy")]
        assert central.dispatcher.excluded("a-busy")
        await eventually(lambda: _on_node(jobs, job_id, "b-good"), message="central's state shows it on b-good")
    finally:
        await busy.stop()
        await good.stop()


async def _on_node(jobs, job_id: str, node_id: str) -> bool:
    return (await state_of(jobs, job_id)).current_node_id == node_id


async def test_a_silent_node_is_lost_and_its_job_resumes_elsewhere(central, jobs):
    lost = await FakeNode(central.grpc_address, node_id="a-lost").start()
    lost.start_heartbeats(0.2)
    [job_id] = await submit(jobs)
    await eventually(lambda: lost.assignments)
    await lost.progress(job_id, 1)
    await lost.progress(job_id, 2, checkpoint="nats://cyxwiz-checkpoints/j/2")
    other = await FakeNode(central.grpc_address, node_id="b-other").start()
    other.start_heartbeats(0.2)
    try:
        lost.stop_heartbeats()
        await eventually(lambda: other.assignments, timeout=10, message="requeued onto the other node")
        again = other.assignments[0]
        assert (again.job_id, again.attempt) == (job_id, 2)
        assert (again.config.resume_checkpoint_uri, again.config.resume_from_epoch) == ("nats://cyxwiz-checkpoints/j/2", 2)
        assert [e.node_id for e in await stream_events(central.bus, "NodeLost")] == ["a-lost"]
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await lost.progress(job_id, 3)
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        answer = await lost.heartbeat([job_id])
        assert not answer.keep_alive and answer.error.code == 404
        await lost.register()  # it comes back: registers again, and is told to drop the job
        assert job_id in (await lost.heartbeat([job_id])).jobs_to_cancel
    finally:
        await lost.stop()
        await other.stop()


async def test_cancel_queued_at_once_running_through_the_node(central, jobs):
    node = await FakeNode(central.grpc_address, node_id="n").start()
    node.start_heartbeats(0.2)
    try:
        running, queued = await submit(jobs, 2)
        await eventually(lambda: node.assignments)
        await jobs.CancelJob(job_pb2.CancelJobRequest(job_id=queued, reason="not needed"))
        assert (await state_of(jobs, queued)).state == "cancelled"
        await jobs.CancelJob(job_pb2.CancelJobRequest(job_id=running))
        assert running in (await node.heartbeat([running])).jobs_to_cancel
        assert not (await node.progress(running, 1)).continue_job
        assert (await state_of(jobs, running)).state == "running"
        await node.progress(running, 1, cancelled=True)
        assert (await state_of(jobs, running)).state == "cancelled"
        assert not (await node.progress(running, 2)).continue_job
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await jobs.CancelJob(job_pb2.CancelJobRequest(job_id=running))
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    finally:
        await node.stop()


async def test_stream_job_updates_is_live(central, jobs):
    node = await FakeNode(central.grpc_address, node_id="n").start()
    node.start_heartbeats(0.2)  # alive: a loaded machine can take longer than the 1 s node timeout
    try:
        [job_id] = await submit(jobs)
        stream = jobs.StreamJobUpdates(job_pb2.GetJobStatusRequest(job_id=job_id))
        await eventually(lambda: node.assignments)
        await node.progress(job_id, 1)
        await node.complete(job_id)
        states = [update.status.state async for update in stream]
        assert states[-1] == "completed" and "running" in states
    finally:
        await node.stop()


async def test_auth_node_token_session_token_and_api_key(nats_server, tmp_path):
    server = CentralServer(make_config(nats_server, tmp_path / "home", node_token="nt", api_key="ak"))
    await server.start()
    channel = grpc.aio.insecure_channel(server.grpc_address)
    stub = job_pb2_grpc.JobServiceStub(channel)
    try:
        intruder = FakeNode(server.grpc_address, node_id="x", node_token="wrong")
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await intruder.start()
        await intruder.stop()
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        node = await FakeNode(server.grpc_address, node_id="x", node_token="nt").start()
        assert (await node.heartbeat()).keep_alive
        node.session_token = "stolen"
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await node.heartbeat()
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.SubmitJob(job_pb2.SubmitJobRequest(config=config()))
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "API key missing" in info.value.details()
        ok = await stub.SubmitJob(job_pb2.SubmitJobRequest(config=config()), metadata=bearer_metadata("ak"))
        assert ok.job_id
        await node.stop()
    finally:
        await channel.close()
        await server.stop()


async def test_two_centrals_on_one_stream_never_assign_a_job_twice(nats_server, tmp_path, bus):
    a = CentralServer(make_config(nats_server, tmp_path / "a", heartbeat_s=0.5, node_timeout_s=10))
    b = CentralServer(make_config(nats_server, tmp_path / "b", heartbeat_s=0.5, node_timeout_s=10))
    await a.start()
    await b.start()
    nodes = [await FakeNode(a.grpc_address if i % 2 else b.grpc_address, node_id=f"n{i}", slots=150).start()
             for i in range(4)]
    try:
        await bus.append_many(JobSubmitted(job_id=f"j{i}", spec=JobSpec(epochs=1, dataset_uri="builtin://iris")) for i in range(500))
        await eventually(lambda: sum(len(n.assignments) for n in nodes) >= 500, timeout=60, message="500 dispatched")
        assigned = Counter(e.job_id for e in await stream_events(bus, "JobAssigned"))
        assert len(assigned) == 500 and set(assigned.values()) == {1}
        received = Counter(x.job_id for n in nodes for x in n.assignments)
        assert set(received.values()) == {1}
        assert a.scheduler.assigned + b.scheduler.assigned == 500, "each JobAssigned appended by exactly one"
    finally:
        for node in nodes:
            await node.stop()
        await a.stop()
        await b.stop()


# --- kill -9 of a central subprocess ------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def start_central_process(nats_url: str, home: Path, port: int,
                                node_timeout: float = 3.0) -> tuple[subprocess.Popen, dict]:
    ready = home / "ready.json"
    ready.unlink(missing_ok=True)
    process = subprocess.Popen(
        [sys.executable, "-m", "central", "central", "--nats", nats_url, "--home", str(home), "--grpc-port", str(port),
         "--rest-port", "0", "--heartbeat", "0.2", "--node-timeout", str(node_timeout), "--ready-file", str(ready)],
        stdout=subprocess.DEVNULL, stderr=open(home / f"central-{port}.log", "ab"), start_new_session=True,
        env={**os.environ, "CYXWIZ_LOG_LEVEL": "WARNING"},
    )
    await eventually(lambda: ready.exists() or process.poll() is not None, timeout=60, message="central ready")
    assert process.poll() is None, (home / f"central-{port}.log").read_text()[-2000:]
    return process, json.loads(ready.read_text())


async def test_kill_9_with_jobs_queued_and_running_every_job_ends_once(nats_server, tmp_path, bus):
    home = tmp_path / "home"
    home.mkdir()
    port = free_port()
    process, info = await start_central_process(nats_server.url, home, port)
    node = await FakeNode(info["grpc"], node_id="n", slots=2).start()
    node.start_heartbeats(0.2)
    channel = grpc.aio.insecure_channel(info["grpc"])
    stub = job_pb2_grpc.JobServiceStub(channel)
    try:
        ids = await submit(stub, 6)
        await eventually(lambda: len(node.assignments) == 2)
        await node.progress(node.assignments[0].job_id, 1)
        await stub.CancelJob(job_pb2.CancelJobRequest(job_id=ids[-1]))
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        process, info = await start_central_process(nats_server.url, home, port)
        done: set[str] = set()
        while len(done) < 5:  # the node finishes whatever it holds, as central assigns it
            await eventually(lambda: len(node.assignments) > len(done), timeout=20, message="next assignment")
            for a in node.assignments:
                if a.job_id not in done:
                    await node.complete(a.job_id)
                    done.add(a.job_id)
        terminal = Counter(e.job_id for e in await stream_events(bus)
                           if type(e).__name__ in ("JobCompleted", "JobFailed", "JobCancelled"))
        assert set(terminal) == set(ids) and set(terminal.values()) == {1}
    finally:
        await channel.close()
        await node.stop()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
