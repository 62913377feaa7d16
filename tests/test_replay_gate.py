"""Central's replay gate on a real grpc.aio server: closed, every method but health and
reflection answers UNAVAILABLE (unary and streamed alike); open, calls go through."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from test_bounds_garbage import EchoJobs

from central.adapters.readiness import ReplayGate
from protos import job_pb2, job_pb2_grpc
from protos.decode_guard import DecodeGuard


async def test_the_gate_refuses_until_open_and_never_health():
    gate = ReplayGate(progress=lambda: "3 of 10 events")
    server = grpc.aio.server(interceptors=[gate, DecodeGuard()])  # as central orders them
    job_pb2_grpc.add_JobServiceServicer_to_server(EchoJobs(), server)
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            jobs = job_pb2_grpc.JobServiceStub(channel)
            ask = job_pb2.GetJobStatusRequest(job_id="j1")
            for call in (lambda: jobs.GetJobStatus(ask, timeout=10),
                         lambda: _drain(jobs.StreamJobUpdates(ask, timeout=10))):
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await call()
                assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
                assert "replaying its event stream (3 of 10 events); retry" in refused.value.details()
            check = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
            assert check.status == health_pb2.HealthCheckResponse.SERVING
            gate.open()
            assert (await jobs.GetJobStatus(ask, timeout=10)).status.job_id == "j1"
            assert [u.job_id for u in await _drain(jobs.StreamJobUpdates(ask, timeout=10))] == ["j1", "j1"]
    finally:
        await server.stop(0)


async def _drain(call) -> list:
    return [message async for message in call]
