"""Trust, against real servers (nats-server, central, fake nodes as real gRPC servers):
no single event or request stops the platform, node ids cannot be taken over, central's
own pauses are not node failures, and retries are safe."""

from __future__ import annotations

import asyncio
import os
import signal
from collections import Counter

import grpc
import pytest

from central.control.commands import Commands
from central.lifecycle.deciders import Assign, Progress, Submit
from central.lifecycle.state import CentralState
from central.server import CentralServer
from events import JobSpec, JobSubmitted, encode
from fake_node import FakeNode
from protos import common_pb2, job_pb2, job_pb2_grpc, node_pb2
from test_central_flow import central, config, free_port, jobs, make_config, start_central_process, state_of, stream_events  # noqa: F401
from waiting import eventually


async def test_a_misplaced_event_and_garbage_do_not_stop_scheduling_and_survive_a_restart(
        central, jobs, nats_server, tmp_path, bus):  # noqa: F811
    """A JobSubmitted for job B published on job A's subject, and garbage on A's subject:
    anomalies for every consumer; job A can still be submitted, assigned and cancelled,
    and every other job is scheduled, before and after central restarts."""
    await bus.js.publish("events.job.A", encode(JobSubmitted(job_id="B", spec=JobSpec(epochs=1))))
    await bus.js.publish("events.job.A", b"\x00not an event")
    node = await FakeNode(central.grpc_address, node_id="n1", slots=3).start()
    node.start_heartbeats(0.2)
    try:
        await jobs.SubmitJob(job_pb2.SubmitJobRequest(config=config(job_id="A")))
        await jobs.SubmitJob(job_pb2.SubmitJobRequest(config=config(job_id="normal")))
        await eventually(lambda: {a.job_id for a in node.assignments} == {"A", "normal"}, message="both assigned")
        assert "B" not in central.state.jobs, "the ghost never became a job"
        await jobs.CancelJob(job_pb2.CancelJobRequest(job_id="A"))
        assert (await state_of(jobs, "A")).state == "running" or "A" in (await node.heartbeat(["A"])).jobs_to_cancel
        await node.progress("A", 0, cancelled=True)
        assert (await state_of(jobs, "A")).status == common_pb2.STATUS_CANCELLED
        kinds = [kind for _, kind, _ in central.state.anomalies]
        assert kinds[:2] == ["JobSubmitted", "invalid"]
    finally:
        await node.stop()
    again = CentralServer(make_config(nats_server, tmp_path / "again"))
    await again.start()
    node = await FakeNode(again.grpc_address, node_id="n2").start()
    channel = grpc.aio.insecure_channel(again.grpc_address)
    try:
        stub = job_pb2_grpc.JobServiceStub(channel)
        await stub.SubmitJob(job_pb2.SubmitJobRequest(config=config(job_id="after-restart")))
        await eventually(lambda: [a.job_id for a in node.assignments] == ["after-restart"], message="scheduled")
    finally:
        await channel.close()
        await node.stop()
        await again.stop()


async def test_a_node_id_cannot_be_taken_over(nats_server, tmp_path):
    server = CentralServer(make_config(nats_server, tmp_path / "home", node_token="tok", heartbeat_s=1.0, node_timeout_s=30.0))
    await server.start()
    real = await FakeNode(server.grpc_address, node_id="n1", node_token="tok").start()
    impostor = await FakeNode(server.grpc_address, node_id="n1", node_token="tok").start()
    channel = grpc.aio.insecure_channel(server.grpc_address)
    try:
        stub = job_pb2_grpc.JobServiceStub(channel)
        await stub.SubmitJob(job_pb2.SubmitJobRequest(config=config(job_id="j")))
        await eventually(lambda: real.assignments, message="the real node holds the job")
        impostor.node_id = "n1"  # the same id and the operator's node token, but not n1's session token
        await impostor.register()
        assert impostor.node_id != "n1", "the impostor got a fresh id"
        assert server.state.nodes["n1"].endpoint == f"127.0.0.1:{real.port}", "n1 still points at the real node"
        assert (await real.heartbeat(["j"])).keep_alive, "the real node's session still works"
        assert (await state_of(stub, "j")).current_node_id == "n1"
        assert (await real.progress("j", 1)).continue_job
        assert await real.register() == "n1", "the real node proves it holds n1 and registers it again"
    finally:
        await channel.close()
        await real.stop()
        await impostor.stop()
        await server.stop()


async def test_central_stalled_past_the_node_timeout_loses_no_node(nats_server, tmp_path, bus):
    home = tmp_path / "home"
    home.mkdir()
    process, info = await start_central_process(nats_server.url, home, free_port(), node_timeout=2.0)
    node = await FakeNode(info["grpc"], node_id="steady").start()
    node.start_heartbeats(0.2)
    try:
        await eventually(lambda: _beats_ok(node), message="heartbeating")
        os.kill(process.pid, signal.SIGSTOP)  # a VM pause, a long GC: central hears nothing
        await asyncio.sleep(5.0)  # the stall under test, two and a half node timeouts long
        os.kill(process.pid, signal.SIGCONT)
        node.beats_ok = 0
        await eventually(lambda: node.beats_ok >= 15, timeout=30, message="three seconds of heartbeats after the stall")
        assert [e.node_id for e in await stream_events(bus, "NodeLost")] == []
    finally:
        os.kill(process.pid, signal.SIGCONT)
        await node.stop()
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)


def _beats_ok(node: FakeNode) -> bool:
    return node.beats_ok > 0


async def test_a_requeued_job_avoids_the_node_it_left_while_another_fits(central, jobs):  # noqa: F811
    first = await FakeNode(central.grpc_address, node_id="a1").start()
    first.start_heartbeats(0.2)
    try:
        [job_id] = [(await jobs.SubmitJob(job_pb2.SubmitJobRequest(config=config()))).job_id]
        await eventually(lambda: first.assignments, message="on a1")
        second = await FakeNode(central.grpc_address, node_id="b2").start()
        second.start_heartbeats(0.2)
        await first.complete(job_id, status=common_pb2.STATUS_FAILED, error="flaky GPU", retryable=True)
        await eventually(lambda: second.assignments, message="requeued onto b2, not back onto a1")
        assert (second.assignments[0].job_id, second.assignments[0].attempt) == (job_id, 2)
        assert len(first.assignments) == 1
        await second.stop()
    finally:
        await first.stop()


async def test_a_completion_of_an_attempt_requeued_after_all_its_epochs_is_kept(central, jobs, bus):  # noqa: F811
    slow = await FakeNode(central.grpc_address, node_id="slow").start()
    slow.start_heartbeats(0.2)
    other = None
    try:
        [job_id] = [(await jobs.SubmitJob(job_pb2.SubmitJobRequest(config=config()))).job_id]
        await eventually(lambda: slow.assignments, message="assigned")
        await slow.train(job_id)  # every epoch reported...
        slow.stop_heartbeats()  # ...then it falls silent before its completion gets through
        other = await FakeNode(central.grpc_address, node_id="other").start()
        other.start_heartbeats(0.2)
        await eventually(lambda: other.assignments, timeout=10, message="requeued elsewhere")
        await slow.complete(job_id, attempt=1)
        status = await state_of(jobs, job_id)
        assert status.status == common_pb2.STATUS_COMPLETED and status.current_node_id == "slow"
        assert job_id in (await other.heartbeat([job_id])).jobs_to_cancel, "the new attempt is told to stop"
        completed = [e for e in await stream_events(bus, "JobCompleted")]
        assert [(e.job_id, e.attempt) for e in completed] == [(job_id, 1)]
    finally:
        await slow.stop()
        if other is not None:
            await other.stop()


async def test_submit_is_idempotent_on_job_id(central, jobs, bus):  # noqa: F811
    first = await jobs.SubmitJob(job_pb2.SubmitJobRequest(config=config(job_id="same")))
    again = await jobs.SubmitJob(job_pb2.SubmitJobRequest(config=config(job_id="same")))
    assert (first.job_id, again.job_id, again.status) == ("same", "same", common_pb2.STATUS_SUCCESS)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await jobs.SubmitJob(job_pb2.SubmitJobRequest(config=job_pb2.JobConfig(job_id="same", job_type=job_pb2.JOB_TYPE_TRAINING, epochs=9, batch_size=8, dataset_uri="builtin://iris")))
    assert info.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert "already exists with a different spec" in info.value.details()
    assert Counter(e.job_id for e in await stream_events(bus, "JobSubmitted")) == {"same": 1}


async def test_the_python_client_chooses_the_id_so_a_retry_is_the_same_job(central, bus):  # noqa: F811
    from central.client import Client

    def submit_twice() -> tuple[str, str]:
        with Client(central.grpc_address) as client:
            job_id = client.submit(dataset_uri="builtin://iris", epochs=1)
            return job_id, client.submit(dataset_uri="builtin://iris", epochs=1, job_id=job_id)

    job_id, again = await asyncio.to_thread(submit_twice)
    assert job_id == again and len(job_id) == 32
    assert Counter(e.job_id for e in await stream_events(bus, "JobSubmitted")) == {job_id: 1}


async def test_a_report_before_central_folded_its_own_assignment_is_not_refused(bus):
    """The node answers AssignJob and reports at once; central's state may not have
    folded the JobAssigned it appended yet. The report waits for it instead of a 409."""
    state = CentralState()
    hold_back: list = []
    release = asyncio.Event()

    async def follow() -> None:  # central's subscription, with the JobAssigned held back for a moment
        async for batch in bus.subscribe_batches(1):
            for msg in batch:
                if msg.headers.get("Cyxwiz-Event-Type") == "JobAssigned" and not release.is_set():
                    hold_back.append(msg)
                    asyncio.get_running_loop().call_later(0.3, release.set)
                else:
                    state.apply_batch([msg])

    async def flush_on_release() -> None:
        await release.wait()
        if hold_back:
            state.apply_batch(list(hold_back))
            hold_back.clear()

    tasks = [asyncio.create_task(follow()), asyncio.create_task(flush_on_release())]
    try:
        commands = Commands(state, bus)
        await commands.job("j", Submit("j", JobSpec(epochs=2)))
        [(event, seq)] = await commands.decide_each([("j", Assign("n1"))])
        assert isinstance(seq, int) and state.jobs["j"].status == "queued", "not folded yet"
        await commands.job("j", Progress("n1", attempt=1, epoch=1))
        assert (state.jobs["j"].status, state.jobs["j"].epochs_done) == ("running", 1)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_a_report_on_a_job_another_central_wrote_waits_for_its_events(bus):
    """Several centrals: the lease holder assigns, the node reports to another central
    whose state has not folded the job yet. It reads the stream up to its end before it
    answers "unknown job"."""
    from central.adapters.grpc_base import Services
    from central.lifecycle.errors import Refused

    state = CentralState()
    held: list = []

    async def follow() -> None:  # this central's subscription, a moment behind on the job
        async for batch in bus.subscribe_batches(1):
            for msg in batch:
                if msg.headers.get("Cyxwiz-Event-Type") == "JobSubmitted" and not held:
                    held.append(msg)
                    await asyncio.sleep(0.3)
                state.apply_batch([msg])

    task = asyncio.create_task(follow())
    try:
        services = Services(state, bus, Commands(state, bus), None, None, None)
        await bus.append(JobSubmitted(job_id="elsewhere", spec=JobSpec(epochs=1)), expected_version=0)  # central A
        await eventually(lambda: held, message="the JobSubmitted reached this central and is held back")
        assert "elsewhere" not in state.jobs
        assert (await services.reported_job("elsewhere")).job_id == "elsewhere"
        with pytest.raises(Refused, match="unknown job 'nowhere'"):  # a job no central wrote: still unknown
            await services.reported_job("nowhere")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_node_metrics_need_the_session_token(central):  # noqa: F811
    from node.metrics import MetricsHistory
    from node.service import NodeServicer
    from protos import node_pb2_grpc

    server = grpc.aio.server()
    node_pb2_grpc.add_NodeServiceServicer_to_server(
        NodeServicer(executor=None, metrics=MetricsHistory(), node_id=lambda: "me", session_token=lambda: "s3cret"),
        server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = node_pb2_grpc.NodeServiceStub(channel)
            for metadata in (None, (("authorization", "Bearer wrong"),)):
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await stub.GetNodeMetrics(node_pb2.GetNodeMetricsRequest(node_id="me"), metadata=metadata)
                assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
            answer = await stub.GetNodeMetrics(node_pb2.GetNodeMetricsRequest(node_id="me"),
                                               metadata=(("authorization", "Bearer s3cret"),))
            assert not answer.HasField("error")
    finally:
        await server.stop(0)


async def test_a_job_no_node_can_run_says_why_it_waits(central, jobs):  # noqa: F811
    node = await FakeNode(central.grpc_address, node_id="cpu-only").start()
    node.start_heartbeats(0.2)
    try:
        gpu_job = config(job_id="needs-gpu", required_device=common_pb2.DEVICE_CUDA)
        await jobs.SubmitJob(job_pb2.SubmitJobRequest(config=gpu_job))
        await eventually(lambda: _waiting(jobs, "needs-gpu"), message="a reason")
        assert (await state_of(jobs, "needs-gpu")).waiting_reason == "no online node has a cuda device"
    finally:
        await node.stop()


async def _waiting(jobs, job_id: str) -> str:
    return (await state_of(jobs, job_id)).waiting_reason
