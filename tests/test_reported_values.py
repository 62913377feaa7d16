"""What central answers about nodes and jobs is measured, not made up: available memory
from the latest heartbeat, a failed job's code as the node said it, compute time to the
millisecond, reputation from finished runs, and the preferred region first."""

from __future__ import annotations

import grpc

from events import NodeHeartbeat
from fake_node import FakeNode
from protos import common_pb2, job_pb2, node_pb2, node_pb2_grpc
from test_central_flow import central, config, jobs, state_of  # noqa: F401
from waiting import eventually


async def test_available_memory_and_heartbeat_telemetry_come_from_the_node(central, bus):  # noqa: F811
    node = await FakeNode(central.grpc_address, node_id="n1").start()
    seen: list[NodeHeartbeat] = []

    async def on_beat(msg) -> None:
        seen.append(msg_decode(msg))

    sub = await bus.nc.subscribe("telemetry.node.n1", cb=on_beat)
    await bus.nc.flush()  # the subscription is on the server before the beat
    try:
        status = node_pb2.NodeInfo(ram_total=8 << 30, ram_available=3 << 30, devices=[
            common_pb2.DeviceCapabilities(device_type=common_pb2.DEVICE_CPU, memory_total=8 << 30,
                                          memory_available=3 << 30)])
        await node.heartbeat(status=status)
        async with grpc.aio.insecure_channel(central.grpc_address) as channel:
            info = (await node_pb2_grpc.NodeDiscoveryServiceStub(channel).GetNodeInfo(
                node_pb2.GetNodeInfoRequest(node_id="n1"))).info
        assert (info.ram_total, info.ram_available, info.devices[0].memory_available) == (8 << 30, 3 << 30, 3 << 30)
        await eventually(lambda: seen, message="the heartbeat's telemetry")
        assert (seen[0].ram_total_bytes, seen[0].ram_used_bytes) == (8 << 30, 5 << 30)
    finally:
        await sub.unsubscribe()
        await node.stop()


def msg_decode(msg) -> NodeHeartbeat:
    from events import decode

    return decode(msg.data)


async def test_a_failure_keeps_the_nodes_code_and_compute_time_is_exact(central, jobs):  # noqa: F811
    node = await FakeNode(central.grpc_address, node_id="n1", slots=2).start()
    node.start_heartbeats(0.2)
    try:
        ok, bad = [(await jobs.SubmitJob(job_pb2.SubmitJobRequest(config=config()))).job_id for _ in range(2)]
        await eventually(lambda: len(node.assignments) == 2, message="both assigned")
        await node.train(ok)
        result = job_pb2.JobResult(job_id=ok, status=common_pb2.STATUS_COMPLETED, total_compute_time=2,
                                   compute_seconds=1.625)
        await node.stub.ReportCompletion(node_pb2.ReportCompletionRequest(node_id="n1", job_id=ok, result=result),
                                         metadata=node.metadata)
        assert central.state.jobs[ok].compute_seconds == 1.625
        failed = job_pb2.JobResult(job_id=bad, status=common_pb2.STATUS_FAILED)
        await node.stub.ReportCompletion(node_pb2.ReportCompletionRequest(
            node_id="n1", job_id=bad, result=failed, error=common_pb2.Error(code=422, message="loss is NaN")),
            metadata=node.metadata)
        status = await state_of(jobs, bad)
        assert (status.error.code, status.error.message) == (422, "loss is NaN")
    finally:
        await node.stop()


async def test_find_nodes_uses_reputation_and_the_preferred_region(central, jobs):  # noqa: F811
    east = await FakeNode(central.grpc_address, node_id="a-east", region="east").start()
    west = await FakeNode(central.grpc_address, node_id="b-west", region="west").start()
    east.start_heartbeats(0.2)
    west.start_heartbeats(0.2)
    try:
        [job_id] = [(await jobs.SubmitJob(job_pb2.SubmitJobRequest(config=config()))).job_id]
        await eventually(lambda: east.assignments or west.assignments, message="assigned")
        holder = east if east.assignments else west
        await holder.complete(job_id, status=common_pb2.STATUS_FAILED, error="broken")
        async with grpc.aio.insecure_channel(central.grpc_address) as channel:
            find = node_pb2_grpc.NodeDiscoveryServiceStub(channel).FindNodes
            found = await find(node_pb2.FindNodesRequest(preferred_region="west"))
            assert [n.node_id for n in found.nodes] == ["b-west", "a-east"]
            assert [n.region for n in found.nodes] == ["west", "east"]
            trusted = await find(node_pb2.FindNodesRequest(min_reputation=0.5))
            assert [n.node_id for n in trusted.nodes] == [("b-west" if holder is east else "a-east")]
            assert {n.node_id: n.reputation_score for n in found.nodes}[holder.node_id] == 0.0
    finally:
        await east.stop()
        await west.stop()
