"""Central's scheduler against a real nats-server and gRPC: a script's JobSubmitted that
no node could run fails at once (400, not retried, never assigned); a waiting job's
reason is a JobWaiting event, appended once per change; the Wait decision."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from bus import EventBus
from central.lifecycle.deciders import Assign, Wait, decide
from central.lifecycle.errors import Refused
from central.lifecycle.jobs import JobState, JobStatus, evolve
from central.server import CentralConfig, CentralServer
from events import JobSpec, JobSubmitted, JobWaiting, Requirements
from fake_node import FakeNode
from waiting import eventually

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)


@pytest.fixture
async def central(nats_server, tmp_path):
    config = CentralConfig.load(env={}, home=tmp_path / "home", nats_url=nats_server.url, grpc_port=0, rest_port=0,
                                host="127.0.0.1", heartbeat_s=0.2, node_timeout_s=1.0)
    server = CentralServer(config)
    await server.start()
    yield server
    await server.stop()


async def events_of(bus: EventBus, job_id: str) -> list:
    return [m.decode() async for m in bus.read(1, subjects=f"events.job.{job_id}")]


async def test_a_scripts_job_that_no_node_can_run_fails_at_once(central, bus):
    node = await FakeNode(central.grpc_address, name="a", slots=2).start()
    node.start_heartbeats(0.2)
    try:
        await bus.append(JobSubmitted(job_id="bad", spec=JobSpec(dataset_uri="builtin://nosuch")))
        await bus.append(JobSubmitted(job_id="good", spec=JobSpec(dataset_uri="builtin://iris")))
        await eventually(lambda: central.state.jobs.get("bad") is not None and central.state.jobs["bad"].done,
                         message="the bad job failed")
        await eventually(lambda: any(a.job_id == "good" for a in node.assignments), message="the good one runs")
        bad = central.state.jobs["bad"]
        assert (bad.status, bad.error_code, bad.retryable) == (JobStatus.FAILED, 400, False)
        assert bad.error == "spec.dataset_uri 'builtin://nosuch': no built-in data set 'nosuch': choose digits, iris, diabetes"
        assert [type(e).__name__ for e in await events_of(bus, "bad")] == ["JobSubmitted", "JobFailed"]
        assert not any(a.job_id == "bad" for a in node.assignments)
    finally:
        await node.stop()


async def test_a_waiting_reason_is_appended_once_per_change(central, bus):
    await bus.append(JobSubmitted(job_id="gpu", spec=JobSpec(dataset_uri="builtin://iris",
                                                             requirements=Requirements(device="cuda"))))
    await eventually(lambda: central.state.jobs.get("gpu") is not None
                     and central.state.jobs["gpu"].waiting_reason == "no node is online", message="no node")
    node = await FakeNode(central.grpc_address, name="cpu-only", slots=1).start()
    node.start_heartbeats(0.2)
    try:
        await eventually(lambda: central.state.jobs["gpu"].waiting_reason == "no online node has a cuda device",
                         message="a node without cuda")
        for _ in range(20):  # every pass explains again; the reason is the same: nothing new is appended
            central.scheduler.schedule_pass()
            await central.scheduler.commands.catch_up()
        reasons = [e.reason for e in await events_of(bus, "gpu") if isinstance(e, JobWaiting)]
        assert reasons == ["no node is online", "no online node has a cuda device"]
    finally:
        await node.stop()


def test_wait_decides_only_on_a_queued_job_and_only_a_new_reason():
    queued = evolve(None, JobSubmitted(job_id="j", spec=JobSpec(dataset_uri="builtin://iris")))
    (event,) = decide(queued, Wait("all slots busy"), NOW, 3)
    assert isinstance(event, JobWaiting) and event.reason == "all slots busy"
    waiting = evolve(queued, event)
    assert waiting.waiting_reason == "all slots busy"
    assert decide(waiting, Wait("all slots busy"), NOW, 4) == []
    assigned = evolve(waiting, decide(waiting, Assign("n1"), NOW, 4)[0])
    assert assigned.waiting_reason == "" and isinstance(assigned, JobState)
    with pytest.raises(Refused) as info:
        decide(assigned, Wait("all slots busy"), NOW, 5)
    assert info.value.code == 409
    assert evolve(assigned, JobWaiting(job_id="j", reason="late")) == assigned, "an anomaly changes nothing"
