"""Central's dispatch worker process: AssignJob calls made off central's event loop."""

from __future__ import annotations

import grpc
import pytest

from central.control.dispatch_worker import DispatchWorker, WorkerCallError
from fake_node import FakeNode
from protos import job_pb2, node_pb2
from test_central_flow import central, jobs, submit  # noqa: F401  (fixtures)
from waiting import eventually


def request(token: str, job_id: str = "j1") -> bytes:
    return node_pb2.AssignJobRequest(node_id="n", job=job_pb2.JobConfig(job_id=job_id), authorization_token=token).SerializeToString()


async def test_a_call_through_the_worker_reaches_the_node_and_answers():
    fake = FakeNode("127.0.0.1:1")
    await fake.start(register=False)
    worker = DispatchWorker()
    try:
        answer = node_pb2.AssignJobResponse.FromString(await worker.call(f"127.0.0.1:{fake.port}", request(""), 5.0))
        assert answer.accepted and answer.job_id == "j1" and fake.assignments[0].job_id == "j1"
        refused = node_pb2.AssignJobResponse.FromString(await worker.call(f"127.0.0.1:{fake.port}", request("wrong"), 5.0))
        assert not refused.accepted and refused.error.code == 401
        worker.forget(f"127.0.0.1:{fake.port}")  # a closed channel is opened again on the next call
        assert node_pb2.AssignJobResponse.FromString(
            await worker.call(f"127.0.0.1:{fake.port}", request("", "j2"), 5.0)).accepted
    finally:
        await worker.close()
        await fake.stop()


async def test_an_unreachable_or_malformed_endpoint_is_a_status_not_a_dead_worker():
    worker = DispatchWorker()
    try:
        with pytest.raises(WorkerCallError) as unreachable:
            await worker.call("127.0.0.1:1", request(""), 2.0)
        assert unreachable.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
        with pytest.raises(WorkerCallError):
            await worker.call("not an endpoint::", request(""), 2.0)
        with pytest.raises(WorkerCallError):
            await worker.call("127.0.0.1:1", request(""), 2.0)  # the same worker still answers
    finally:
        await worker.close()


async def test_a_killed_worker_fails_its_calls_and_the_next_call_starts_a_new_one():
    fake = FakeNode("127.0.0.1:1")
    await fake.start(register=False)
    worker = DispatchWorker()
    try:
        await worker.start()
        first = worker._proc
        first.kill()
        await first.wait()
        await eventually(lambda: worker._reader_task.done(), message="the reader saw the worker end")
        answer = await worker.call(f"127.0.0.1:{fake.port}", request(""), 5.0)
        assert node_pb2.AssignJobResponse.FromString(answer).accepted and worker._proc is not first
    finally:
        await worker.close()
        await fake.stop()


async def test_central_dispatches_through_its_worker_and_survives_its_death(central, jobs):  # noqa: F811
    assert central.dispatcher.worker is not None, "central makes its AssignJob calls from a worker process"
    node = await FakeNode(central.grpc_address, node_id="w-node", slots=4).start()
    node.start_heartbeats(0.2)
    try:
        await submit(jobs, 2)
        await eventually(lambda: len(node.assignments) == 2, message="assigned through the worker")
        central.dispatcher.worker._proc.kill()
        await central.dispatcher.worker._proc.wait()
        await submit(jobs, 1)
        await eventually(lambda: len(node.assignments) == 3, timeout=60,  # a new process: slow on a loaded machine
                         message="a new worker takes the next call")
    finally:
        await node.stop()
