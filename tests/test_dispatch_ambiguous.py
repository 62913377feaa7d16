"""An AssignJob with no answer in time may have reached the node: central asks again
before rejecting, so a job the node took is not requeued under it (the rare 409 "does
not hold job" on its completion)."""

from __future__ import annotations

import asyncio
from collections import Counter

from bus import EventBus
from central.server import CentralConfig, CentralServer
from fake_node import FakeNode
from protos import common_pb2, job_pb2, job_pb2_grpc, node_pb2
import grpc
from waiting import eventually


class SlowFirstAnswer(FakeNode):
    """Takes every job at once; its first answer comes after central's deadline."""

    def __init__(self, *args, delay_s: float, **kw) -> None:
        super().__init__(*args, **kw)
        self.delay_s = delay_s
        self.calls = 0

    async def AssignJob(self, request, context):
        self.calls += 1
        answer = await super().AssignJob(request, context)
        if self.calls == 1:
            await asyncio.sleep(self.delay_s)
        return answer


async def test_a_late_answer_is_asked_again_and_the_completion_is_kept(nats_server, tmp_path, bus):
    config = CentralConfig.load(env={}, home=tmp_path / "home", nats_url=nats_server.url, grpc_port=0, rest_port=0,
                                host="127.0.0.1", heartbeat_s=0.5, node_timeout_s=10)
    server = CentralServer(config)
    await server.start()
    server.dispatcher.timeout_s = 2.0  # the repeat must be answered within it on a loaded machine
    node = await SlowFirstAnswer(server.grpc_address, node_id="slow", delay_s=3.0).start()
    channel = grpc.aio.insecure_channel(server.grpc_address)
    try:
        stub = job_pb2_grpc.JobServiceStub(channel)
        await stub.SubmitJob(job_pb2.SubmitJobRequest(config=job_pb2.JobConfig(
            job_id="late", job_type=job_pb2.JOB_TYPE_TRAINING, epochs=1, batch_size=8, dataset_uri="builtin://iris")))
        await eventually(lambda: node.calls >= 2, timeout=20, message="AssignJob asked again")
        answer = await node.complete("late", attempt=1)
        assert answer.status == common_pb2.STATUS_SUCCESS
        kinds = Counter()
        async for msg in bus.read(1, subjects="events.job.late"):
            kinds[msg.headers["Cyxwiz-Event-Type"]] += 1
        assert kinds == Counter(JobSubmitted=1, JobAssigned=1, JobStarted=1, EpochCompleted=1, JobCompleted=1)
    finally:
        await channel.close()
        await node.stop()
        await server.stop()
