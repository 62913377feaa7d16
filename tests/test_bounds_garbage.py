"""Raw bytes that are not the request message, sent to real gRPC servers of central and of
a node: INVALID_ARGUMENT with one line, and no traceback in the server's log."""

from __future__ import annotations

import logging

import grpc
import pytest
from prometheus_client import CollectorRegistry
from fake_central import FakeCentral, running_node

from central.server import CentralConfig, CentralServer
from protos import deployment_pb2, deployment_pb2_grpc, job_pb2, job_pb2_grpc
from protos.call_metrics import CallCounter, grpc_handled_counter
from protos.decode_guard import DecodeGuard

# a field-1 length prefix that never ends: no protobuf message parses from it
GARBAGE = b"\x0a" + b"\xff" * 12
P = "/cyxwiz.protocol."


def test_the_garbage_does_not_parse():
    with pytest.raises(Exception):
        job_pb2.SubmitJobRequest.FromString(GARBAGE)


async def call(address: str, method: str, streaming: bool = False) -> grpc.aio.AioRpcError:
    async with grpc.aio.insecure_channel(address) as channel:
        make = channel.unary_stream if streaming else channel.unary_unary
        rpc = make(method, request_serializer=None, response_deserializer=None)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            if streaming:
                async for _ in rpc(GARBAGE, timeout=10):
                    pass
            else:
                await rpc(GARBAGE, timeout=10)
        return info.value


def assert_refused(error: grpc.aio.AioRpcError, method: str, message: str) -> None:
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (method, error)
    assert error.details() == (f"{method}: the {len(GARBAGE)} bytes sent are not a valid cyxwiz.protocol.{message} "
                               "message (DecodeError); send the message the method takes")


def assert_no_traceback(caplog, capfd) -> None:
    assert not [r for r in caplog.records if r.exc_info], [r.getMessage() for r in caplog.records if r.exc_info]
    assert "Traceback" not in caplog.text and "deserializ" not in caplog.text.lower()
    assert "Traceback" not in capfd.readouterr().err


@pytest.mark.parametrize("method, message, streaming", [
    ("JobService/SubmitJob", "SubmitJobRequest", False),
    ("JobService/GetJobStatus", "GetJobStatusRequest", False),
    ("JobService/StreamJobUpdates", "GetJobStatusRequest", True),
    ("NodeService/RegisterNode", "RegisterNodeRequest", False),
    ("NodeService/Heartbeat", "HeartbeatRequest", False),
    ("NodeDiscoveryService/ListNodes", "ListNodesRequest", False),
])
async def test_central_answers_invalid_argument_without_a_traceback(nats_server, tmp_path, caplog, capfd,
                                                                    method, message, streaming):
    caplog.set_level(logging.DEBUG)
    config = CentralConfig.load(env={}, home=tmp_path / "home", nats_url=nats_server.url, grpc_port=0, rest_port=0,
                                host="127.0.0.1")
    server = CentralServer(config)
    await server.start()
    try:
        assert_refused(await call(server.grpc_address, P + method, streaming), P + method, message)
        assert_no_traceback(caplog, capfd)
    finally:
        await server.stop()


async def test_every_node_server_answers_invalid_argument_without_a_traceback(nats_server, tmp_path, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    central = await FakeCentral().start()
    try:
        async with running_node(central, nats_server.url, tmp_path, register=False) as node:
            for server, method, message in [
                ("node", "NodeService/AssignJob", "AssignJobRequest"),
                ("node", "NodeService/GetNodeMetrics", "GetNodeMetricsRequest"),
                ("deploy", "DeploymentService/CreateDeployment", "CreateDeploymentRequest"),
                ("terminal", "TerminalService/CreateSession", "CreateTerminalSessionRequest"),
            ]:
                assert_refused(await call(node.endpoint(server), P + method), P + method, message)
        assert_no_traceback(caplog, capfd)
    finally:
        await central.stop()


class EchoJobs(job_pb2_grpc.JobServiceServicer):
    """A JobService that answers with the job id it is asked about (unary and streamed)."""

    async def GetJobStatus(self, request, context):
        return job_pb2.GetJobStatusResponse(status=job_pb2.JobStatus(job_id=request.job_id))

    async def StreamJobUpdates(self, request, context):
        for _ in range(2):
            yield job_pb2.JobUpdateStream(job_id=request.job_id)


async def test_valid_requests_still_reach_the_servicer(caplog):
    """The guard changes nothing for bytes that parse: a real call gets the servicer's
    answer; garbage is refused and counted, and an unknown method is UNIMPLEMENTED and not
    counted (the node's servers: the call counter, then the guard)."""

    class Terminal(deployment_pb2_grpc.TerminalServiceServicer):
        async def StreamTerminal(self, requests, context):
            async for data in requests:
                yield data

    handled = grpc_handled_counter(CollectorRegistry())
    server = grpc.aio.server(interceptors=[CallCounter(handled), DecodeGuard()])
    job_pb2_grpc.add_JobServiceServicer_to_server(EchoJobs(), server)
    deployment_pb2_grpc.add_TerminalServiceServicer_to_server(Terminal(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = job_pb2_grpc.JobServiceStub(channel)
            status = await stub.GetJobStatus(job_pb2.GetJobStatusRequest(job_id="j1"))
            assert status.status.job_id == "j1"
            updates = [u.job_id async for u in stub.StreamJobUpdates(job_pb2.GetJobStatusRequest(job_id="j1"))]
            assert updates == ["j1", "j1"]
            assert_refused(await call(f"127.0.0.1:{port}", P + "JobService/GetJobStatus"),
                           P + "JobService/GetJobStatus", "GetJobStatusRequest")
            echo = channel.stream_stream(P + "TerminalService/StreamTerminal", request_serializer=None,
                                         response_deserializer=None)
            good = deployment_pb2.TerminalData(session_id="s1").SerializeToString()
            call_ = echo(iter([good, GARBAGE, good]), timeout=10)
            assert deployment_pb2.TerminalData.FromString(await call_.read()).session_id == "s1"
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await call_.read()
            assert_refused(info.value, P + "TerminalService/StreamTerminal", "TerminalData")
            with pytest.raises(grpc.aio.AioRpcError) as unknown:
                await channel.unary_unary(P + "JobService/NoSuchMethod")(b"", timeout=10)
            assert unknown.value.code() == grpc.StatusCode.UNIMPLEMENTED
    finally:
        await server.stop(0)

    def counted(method: str, code: str) -> float:
        return handled.labels("unary", "cyxwiz.protocol.JobService", method, code)._value.get()

    assert counted("GetJobStatus", "OK") == 1 and counted("GetJobStatus", "INVALID_ARGUMENT") == 1
    assert counted("NoSuchMethod", "UNIMPLEMENTED") == 0
