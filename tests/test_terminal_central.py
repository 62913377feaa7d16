"""The terminal through central, against real servers: a real nats-server, central's real
gRPC server and DuckDB file, and a real node (in this process) with real PTYs.

Central mints the grant; the node checks it; the node's audit facts reach central over
gRPC (nodes may not publish to events.>) and become events and terminal_sessions rows."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import grpc
import pytest

from bus import EventBus
from central.server import CentralConfig, CentralServer
from node.agent import Backoff
from node.config import NodeConfig
from node.main import Node
from protos import deployment_pb2 as d
from protos import deployment_pb2_grpc as dg
from protos import terminal_audit_pb2 as audit_pb2
from protos import terminal_audit_pb2_grpc as audit_grpc
from protos.convert import bearer_metadata
from terminal_harness import Attached
from waiting import eventually

API_KEY = "cluster-key"


@pytest.fixture
async def central(nats_server, tmp_path):
    config = CentralConfig.load(env={}, home=tmp_path / "central", nats_url=nats_server.url, grpc_port=0,
                                rest_port=0, host="127.0.0.1", heartbeat_s=0.2, node_timeout_s=5.0, api_key=API_KEY)
    server = CentralServer(config)
    await server.start()
    yield server
    await server.stop()


async def _node(central, nats_server, home: Path, *, register: bool = True, **settings) -> Node:
    values = dict(central=central.grpc_address, nats=nats_server.url, node_port=0, deploy_port=0, terminal_port=0,
                  bind_host="127.0.0.1", advertise_host="127.0.0.1", heartbeat_s=0.2, slots=1, home=home,
                  data_roots=(home,), name="term-node", terminal=True, api_key=API_KEY)
    values.update(settings)
    node = Node(NodeConfig(**values), backoff=Backoff(first=0.05, cap=0.3))
    await node.start()
    if register:
        await node.register()
    return node


def _sql(central, sql: str):
    return central._projection.query(sql).rows


async def test_a_shell_through_central_is_audited_in_events_and_duckdb(central, nats_server, tmp_path):
    node = await _node(central, nats_server, tmp_path / "node")
    try:
        await eventually(lambda: central.terminals.ports.get(node.node_id), message="the node announced its terminal")
        async with grpc.aio.insecure_channel(central.grpc_address) as channel:
            stub = dg.TerminalServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as exc:
                await stub.CreateSession(d.CreateTerminalSessionRequest(node_id=node.node_id))
            assert exc.value.code() == grpc.StatusCode.UNAUTHENTICATED
            with pytest.raises(grpc.aio.AioRpcError) as exc:
                await stub.CreateSession(d.CreateTerminalSessionRequest(node_id="nope"), metadata=bearer_metadata(API_KEY))
            assert exc.value.code() == grpc.StatusCode.NOT_FOUND
            with pytest.raises(grpc.aio.AioRpcError) as exc:
                await stub.CreateSession(d.CreateTerminalSessionRequest(deployment_id="dep-1"),
                                         metadata=bearer_metadata(API_KEY))
            assert exc.value.code() == grpc.StatusCode.NOT_FOUND
            answer = await stub.CreateSession(d.CreateTerminalSessionRequest(node_id="term-node", user_id="alice"),
                                              metadata=bearer_metadata(API_KEY))
        assert answer.terminal_endpoint == node.endpoint("terminal") and answer.node_id == node.node_id
        grant = bearer_metadata(answer.grant)
        async with grpc.aio.insecure_channel(answer.terminal_endpoint) as channel:
            stub = dg.TerminalServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as exc:  # a refusal on the node: audited as denied
                await stub.CreateSession(d.CreateTerminalSessionRequest(), metadata=bearer_metadata("wrong"))
            assert exc.value.code() == grpc.StatusCode.UNAUTHENTICATED
            created = await stub.CreateSession(d.CreateTerminalSessionRequest(user_id="alice"), metadata=grant)
            term = Attached(stub, created.session.session_id, metadata=grant)
            term.send("echo via-central; exit 5\n")
            await term.expect("via-central")
            assert await term.end() == 5
        query = ("SELECT state, principal, user_id, exit_code, bytes_in > 0, bytes_out > 0, reason "
                 "FROM terminal_sessions ORDER BY seq")
        rows = await eventually(lambda: (r := _sql(central, query)) and r[-1][0] == "closed" and r,
                                timeout=20, message="terminal_sessions rows")
        assert len(rows) == 2, rows
        assert rows[0][0] == "denied" and rows[0][1].startswith("unauthenticated (ipv4:127.0.0.1:")
        assert rows[0][6].startswith("UNAUTHENTICATED: wrong credential")
        assert rows[1] == ["closed", "grant:alice", "alice", 5, True, True, "shell exited"]
        kinds = _sql(central, f"SELECT type FROM events WHERE subject = 'events.node.{node.node_id}' ORDER BY seq")
        assert [k[0] for k in kinds if k[0].startswith("Terminal")] == [
            "TerminalSessionDenied", "TerminalSessionOpened", "TerminalSessionClosed"]
        raw = _sql(central, "SELECT raw::VARCHAR FROM events WHERE type LIKE 'Terminal%'")
        assert all("via-central" not in r[0] and created.session.session_id not in r[0] for r in raw)
    finally:
        await node.stop(grace=2.0)


async def test_records_wait_until_the_node_is_registered(central, nats_server, tmp_path):
    node = await _node(central, nats_server, tmp_path / "node", register=False)
    try:
        async with grpc.aio.insecure_channel(node.endpoint("terminal")) as channel:
            with pytest.raises(grpc.aio.AioRpcError):
                await dg.TerminalServiceStub(channel).CreateSession(d.CreateTerminalSessionRequest(), metadata=())
        assert len(node.terminal_audit.queue) == 1
        await asyncio.sleep(0.3)
        assert len(node.terminal_audit.queue) == 1  # nobody to send it to yet
        await node.register()
        await eventually(lambda: _sql(central, "SELECT count(*) FROM terminal_sessions WHERE state = 'denied'")[0][0] == 1,
                         timeout=20)
        assert not node.terminal_audit.queue
    finally:
        await node.stop(grace=2.0)


async def test_the_audit_intake_checks_the_session_token_and_every_record(central, nats_server, tmp_path):
    node = await _node(central, nats_server, tmp_path / "node", terminal=False)
    try:
        record = audit_pb2.TerminalAuditRecord(event_id=str(uuid.uuid4()), kind=audit_pb2.TERMINAL_AUDIT_DENIED,
                                               principal="x", occurred_at=1.0)
        request = audit_pb2.ReportTerminalActivityRequest(node_id=node.node_id, records=[record])
        async with grpc.aio.insecure_channel(central.grpc_address) as channel:
            stub = audit_grpc.TerminalAuditServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as exc:
                await stub.ReportTerminalActivity(request, metadata=bearer_metadata("not-the-token"))
            assert exc.value.code() == grpc.StatusCode.UNAUTHENTICATED
            token = bearer_metadata(node.agent.session_token)
            with pytest.raises(grpc.aio.AioRpcError) as exc:  # occurred_at 1970: refused, nothing appended
                await stub.ReportTerminalActivity(request, metadata=token)
            assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "records[0].occurred_at" in exc.value.details()
            bad_id = audit_pb2.ReportTerminalActivityRequest(node_id=node.node_id, records=[
                audit_pb2.TerminalAuditRecord(event_id="x", kind=audit_pb2.TERMINAL_AUDIT_OPENED)])
            with pytest.raises(grpc.aio.AioRpcError) as exc:
                await stub.ReportTerminalActivity(bad_id, metadata=token)
            assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            terminal = dg.TerminalServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as exc:  # this node runs without --terminal
                await terminal.CreateSession(d.CreateTerminalSessionRequest(node_id=node.node_id),
                                             metadata=bearer_metadata(API_KEY))
            assert exc.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert "--terminal" in exc.value.details()
        bus = await EventBus.connect(nats_server.url)
        try:
            seq = await bus.last_sequence()
        finally:
            await bus.close()
        assert seq >= 1
        assert _sql(central, "SELECT count(*) FROM events WHERE type LIKE 'Terminal%'") == [[0]]
    finally:
        await node.stop(grace=2.0)


def test_terminal_sessions_are_the_same_folded_in_one_batch_or_one_by_one(tmp_path):
    from bus import StoredMessage
    from central.readmodel.projection import Projection
    from events import NodeRegistered, TerminalSessionClosed, TerminalSessionDenied, TerminalSessionOpened, encode, subject_for

    events = [
        NodeRegistered(node_id="n1", endpoint="127.0.0.1:1"),
        TerminalSessionOpened(node_id="n1", session_ref="r1", principal="grant:a", user_id="a"),
        TerminalSessionDenied(node_id="n1", principal="api-key", reason="RESOURCE_EXHAUSTED: too many"),
        TerminalSessionOpened(node_id="n1", session_ref="r2", principal="api-key", user_id="op"),
        TerminalSessionClosed(node_id="n1", session_ref="r1", principal="grant:a", user_id="a", bytes_in=3,
                              bytes_out=9, exit_code=0, duration_s=1.5, reason="shell exited"),
        TerminalSessionClosed(node_id="n1", session_ref="r9", principal="api-key", exit_code=None, reason="idle"),
    ]
    messages = [StoredMessage(i, subject_for(e), encode(e), {}, i) for i, e in enumerate(events, start=1)]
    query = ("SELECT node_id, session_ref, state, principal, user_id, bytes_in, bytes_out, exit_code, duration_s, "
             "reason FROM terminal_sessions ORDER BY seq")
    whole = Projection(tmp_path / "a.duckdb")
    whole.apply("CYXWIZ_EVENTS", messages)
    single = Projection(tmp_path / "b.duckdb")
    for message in messages:
        single.apply("CYXWIZ_EVENTS", [message])
    assert whole.query(query).rows == single.query(query).rows == [
        ["n1", "r1", "closed", "grant:a", "a", 3, 9, 0, 1.5, "shell exited"],
        ["n1", "", "denied", "api-key", "", None, None, None, None, "RESOURCE_EXHAUSTED: too many"],
        ["n1", "r2", "open", "api-key", "op", None, None, None, None, None],
        ["n1", "r9", "closed", "api-key", "", 0, 0, None, 0.0, "idle"],
    ]
    assert whole.query("SELECT count(*) FROM anomalies").rows == [[0]]
    whole.close()
    single.close()
