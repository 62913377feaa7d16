"""The node's TerminalService with real PTYs on a real gRPC server: echo, resize, exit
code, scrubbed environment, every refusal, limits, timers, back-pressure, no leftovers."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import grpc
import pytest

from node.terminal.pty_process import session_members
from protos import deployment_pb2 as d
from protos.convert import bearer_metadata
from terminal_harness import KEY, Attached, create, grant, terminal_server
from waiting import eventually


def _code(exc: pytest.ExceptionInfo) -> grpc.StatusCode:
    return exc.value.code()


async def test_echo_round_trip_resize_and_exit_code(tmp_path):
    async with terminal_server(tmp_path) as (_, stub):
        session_id = await create(stub, rows=30, cols=100)
        term = Attached(stub, session_id)
        term.send("echo hello-$((6*7))\n")
        await term.expect("hello-42")
        term.send("stty size\n")
        await term.expect("30 100")
        await stub.ResizeTerminal(d.TerminalResize(session_id=session_id, rows=50, cols=200), metadata=KEY)
        term.send("stty size; exit 3\n")
        await term.expect("50 200")
        assert await term.end() == 3
        assert term.messages[-1].is_eof
        numbers = [m.sequence_number for m in term.messages]
        assert numbers == list(range(1, len(numbers) + 1))
        assert all(len(m.data) <= 64 * 1024 for m in term.messages)


async def test_the_shell_gets_a_scrubbed_environment_in_its_own_session(tmp_path, monkeypatch):
    for name in ("CYXWIZ_API_KEY", "CYXWIZ_NODE_TOKEN", "CYXWIZ_NATS_CREDS", "NATS_TOKEN", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "leaked-secret")
    async with terminal_server(tmp_path) as (servicer, stub):
        session_id = await create(stub)
        shell_pid = servicer.table.sessions[session_id].pty.pid
        term = Attached(stub, session_id)
        term.send("env; echo sid=$(ps -o sid= -p $$ | tr -d ' ') pgid=$(ps -o pgid= -p $$ | tr -d ' '); "
                  "echo cwd=$(pwd); exit 0\n")
        await term.expect("cwd=")
        assert await term.end() == 0
    text = term.output.decode()
    assert "leaked-secret" not in text
    assert "TERM=xterm-256color" in text
    assert f"sid={shell_pid} pgid={shell_pid}" in text
    assert f"cwd={(tmp_path / 'home').resolve()}" in text


async def test_terminal_off_answers_failed_precondition(tmp_path):
    async with terminal_server(tmp_path, enabled=False) as (_, stub):
        calls = [
            stub.CreateSession(d.CreateTerminalSessionRequest(), metadata=KEY),
            stub.ResizeTerminal(d.TerminalResize(session_id="x", rows=1, cols=1), metadata=KEY),
            stub.CloseSession(d.CloseTerminalSessionRequest(session_id="x"), metadata=KEY),
        ]
        for call in calls:
            with pytest.raises(grpc.aio.AioRpcError) as exc:
                await call
            assert _code(exc) == grpc.StatusCode.FAILED_PRECONDITION
            assert exc.value.details().startswith("terminal access is not enabled on this node")
        stream = stub.StreamTerminal(iter([d.TerminalData(session_id="x")]), metadata=KEY)
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await stream.read()
        assert _code(exc) == grpc.StatusCode.FAILED_PRECONDITION


# built when the test runs, not when it is collected: grants last five minutes
@pytest.mark.parametrize("metadata, status, text", [
    (lambda: (), grpc.StatusCode.UNAUTHENTICATED, "missing credential"),
    (lambda: bearer_metadata("wrong-key"), grpc.StatusCode.UNAUTHENTICATED, "wrong credential"),
    (lambda: bearer_metadata(grant(expires_in=-60)), grpc.StatusCode.UNAUTHENTICATED, "expired"),
    (lambda: bearer_metadata(grant(node_id="node-2")), grpc.StatusCode.UNAUTHENTICATED, "not this node"),
    (lambda: bearer_metadata(grant(token="another-registration")), grpc.StatusCode.UNAUTHENTICATED, "signature"),
    (lambda: bearer_metadata(grant(expires_in=3600)), grpc.StatusCode.UNAUTHENTICATED, "longer than 5 minutes"),
    (lambda: bearer_metadata(grant(key_holder=False)), grpc.StatusCode.PERMISSION_DENIED, "needs the cluster API key"),
    (lambda: bearer_metadata(grant(deployment="dep-1")), grpc.StatusCode.PERMISSION_DENIED, "grant is for deployment"),
], ids=["none", "wrong-key", "expired", "other-node", "other-registration", "too-long", "home-without-key",
        "other-deployment"])
async def test_each_refused_credential(tmp_path, metadata, status, text):
    async with terminal_server(tmp_path) as (servicer, stub):
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await create(stub, metadata=metadata())
        assert _code(exc) == status
        assert text in exc.value.details()
        assert servicer.table.sessions == {}


async def test_bad_requests_are_named(tmp_path):
    async with terminal_server(tmp_path) as (_, stub):
        for fields, status, text in [
            (dict(rows=1001), grpc.StatusCode.INVALID_ARGUMENT, "rows must be 1..1000 (got 1001)"),
            (dict(cols=-1), grpc.StatusCode.INVALID_ARGUMENT, "cols must be 1..1000 (got -1)"),
            (dict(deployment_id="dep-1"), grpc.StatusCode.NOT_FOUND, "unknown deployment 'dep-1'"),
            (dict(node_id="node-9"), grpc.StatusCode.INVALID_ARGUMENT, "is not this node"),
        ]:
            with pytest.raises(grpc.aio.AioRpcError) as exc:
                await create(stub, **fields)
            assert (_code(exc), text in exc.value.details()) == (status, True), exc.value.details()
        session_id = await create(stub)
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await stub.ResizeTerminal(d.TerminalResize(session_id=session_id, rows=0, cols=80), metadata=KEY)
        assert _code(exc) == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await stub.CloseSession(d.CloseTerminalSessionRequest(session_id="nope"), metadata=KEY)
        assert _code(exc) == grpc.StatusCode.NOT_FOUND


async def test_a_session_belongs_to_its_principal_and_takes_one_stream(tmp_path):
    async with terminal_server(tmp_path) as (_, stub):
        alice = bearer_metadata(grant("alice"))
        session_id = await create(stub, metadata=alice)
        for other in (bearer_metadata(grant("bob")), KEY):
            with pytest.raises(grpc.aio.AioRpcError) as exc:
                await stub.CloseSession(d.CloseTerminalSessionRequest(session_id=session_id), metadata=other)
            assert _code(exc) == grpc.StatusCode.PERMISSION_DENIED
            stream = stub.StreamTerminal(iter([d.TerminalData(session_id=session_id)]), metadata=other)
            with pytest.raises(grpc.aio.AioRpcError) as exc:
                await stream.read()
            assert _code(exc) == grpc.StatusCode.PERMISSION_DENIED
        term = Attached(stub, session_id, metadata=alice)
        term.send("echo first-stream\n")
        await term.expect("first-stream")
        second = stub.StreamTerminal(iter([d.TerminalData(session_id=session_id)]), metadata=alice)
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await second.read()
        assert _code(exc) == grpc.StatusCode.FAILED_PRECONDITION
        assert "one stream at a time" in exc.value.details()
        await stub.CloseSession(d.CloseTerminalSessionRequest(session_id=session_id), metadata=alice)
        await term.end()


async def test_the_grant_that_opened_a_session_keeps_it_after_expiry_others_do_not(tmp_path):
    now = [1_000_000.0]
    async with terminal_server(tmp_path) as (servicer, stub):
        servicer.clock = lambda: now[0]
        from protos.grant import Grant, grant_key, mint_grant
        from terminal_harness import SESSION_TOKEN, NODE_ID
        opener = mint_grant(grant_key(SESSION_TOKEN), Grant("alice", NODE_ID, "", int(now[0]) + 300, "g1", True))
        other = mint_grant(grant_key(SESSION_TOKEN), Grant("alice", NODE_ID, "", int(now[0]) + 300, "g2", True))
        session_id = await create(stub, metadata=bearer_metadata(opener))
        now[0] += 3600
        resize = d.TerminalResize(session_id=session_id, rows=10, cols=10)
        await stub.ResizeTerminal(resize, metadata=bearer_metadata(opener))
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await stub.ResizeTerminal(resize, metadata=bearer_metadata(other))
        assert _code(exc) == grpc.StatusCode.UNAUTHENTICATED


async def test_limits_per_node_and_per_user(tmp_path):
    async with terminal_server(tmp_path) as (_, stub):
        await create(stub, user_id="u0")
        await create(stub, user_id="u0")
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await create(stub, user_id="u0")
        assert _code(exc) == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "user 'u0' already has 2 terminal sessions" in exc.value.details()
        for i in range(1, 7):
            await create(stub, user_id=f"u{i}")
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await create(stub, user_id="u9")
        assert _code(exc) == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "at most 8" in exc.value.details()


async def test_idle_timeout_and_maximum_lifetime_end_sessions(tmp_path):
    async with terminal_server(tmp_path, idle_timeout_s=0.5) as (servicer, stub):
        session_id = await create(stub)
        term = Attached(stub, session_id)
        term.send("echo still-here\n")
        await term.expect("still-here")
        code = await term.end()
        assert code == 128 + 1  # SIGHUP ended the shell
        assert session_id not in servicer.table.sessions
    async with terminal_server(tmp_path, max_lifetime_s=1.0) as (servicer, stub):
        session_id = await create(stub)
        term = Attached(stub, session_id)
        for _ in range(100):  # busy all the time: only the lifetime can end it
            term.send("echo busy\n")
            await asyncio.sleep(0.05)
            if session_id not in servicer.table.sessions:
                break
        await term.end()
        assert session_id not in servicer.table.sessions


async def test_a_full_buffer_stops_reading_the_pty_and_nothing_is_lost(tmp_path):
    async with terminal_server(tmp_path) as (servicer, stub):
        session_id = await create(stub)
        session = servicer.table.sessions[session_id]
        term = Attached(stub, session_id)
        term.send("stty -echo; head -c 3000000 /dev/zero | tr '\\0' x; echo; echo the-end\n")
        await eventually(lambda: session.output.total > 100_000, timeout=30)
        term.close()  # detached: output piles up to the bound, then the program waits
        await eventually(lambda: not session.attached, timeout=30, message="the node saw the stream go")
        await eventually(lambda: session.output.paused, timeout=30)
        held = len(session.output.buffer)
        assert held <= 1 << 20
        await asyncio.sleep(0.2)
        assert session.output.paused and len(session.output.buffer) == held  # nothing read: back-pressure
        again = Attached(stub, session_id)
        await again.expect("the-end", timeout=60)
        # what the buffer held when nobody listened reaches the next stream; what was in
        # flight on the stream that went away is lost with it
        assert held - 100 <= again.output.count(b"x") <= 3_000_000


async def test_a_hundred_open_close_cycles_leave_no_process_and_no_descriptor(tmp_path):
    async with terminal_server(tmp_path) as (servicer, stub):
        fds_before = len(os.listdir("/proc/self/fd"))
        pids = []
        for i in range(100):
            session_id = await create(stub, user_id=f"u{i % 3}")
            pids.append(servicer.table.sessions[session_id].pty.pid)
            if i % 10 == 0:  # some with a background job that ignores nothing
                term = Attached(stub, session_id)
                term.send("sleep 300 & echo started-bg\n")
                await term.expect("started-bg")
                term.close()
            await stub.CloseSession(d.CloseTerminalSessionRequest(session_id=session_id), metadata=KEY)
        assert servicer.table.sessions == {}
        assert [p for p in pids if Path(f"/proc/{p}").exists()] == []  # reaped: not even a zombie
        assert [p for p in pids if session_members(p)] == []
        await eventually(lambda: len(os.listdir("/proc/self/fd")) <= fds_before + 2, timeout=10)


async def test_node_stop_ends_every_session(tmp_path):
    async with terminal_server(tmp_path) as (servicer, stub):
        ids = [await create(stub, user_id=f"u{i}") for i in range(3)]
        pids = [servicer.table.sessions[i].pty.pid for i in ids]
        await servicer.close()
        assert [p for p in pids if Path(f"/proc/{p}").exists()] == []


async def test_open_mode_serves_loopback_callers_without_a_credential(tmp_path):
    async with terminal_server(tmp_path, api_key=None) as (_, stub):
        session_id = await create(stub, metadata=(), user_id="me")
        term = Attached(stub, session_id, metadata=())
        term.send("exit 0\n")
        assert await term.end() == 0


async def test_a_stopped_deployment_ends_its_sessions_only(tmp_path):
    lookup = {"dep-1": tmp_path, "dep-2": tmp_path}.get
    async with terminal_server(tmp_path, deployment_dir=lookup) as (servicer, stub):
        one = await create(stub, deployment_id="dep-1", user_id="a")
        two = await create(stub, deployment_id="dep-2", user_id="b")
        await servicer.end_deployment("dep-1")
        assert list(servicer.table.sessions) == [two]
        assert one not in servicer.table.sessions


async def test_a_session_ends_when_its_deployment_is_no_longer_active(tmp_path):
    active = {"dep-1": tmp_path}
    async with terminal_server(tmp_path, deployment_dir=active.get) as (servicer, stub):
        session_id = await create(stub, deployment_id="dep-1")
        term = Attached(stub, session_id)
        term.send("echo in-deployment\n")
        await term.expect("in-deployment")
        del active["dep-1"]  # the deployment stopped
        assert await term.end() == 128 + 1
        assert session_id not in servicer.table.sessions


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
async def test_terminal_user_and_the_deployment_folder(tmp_path):
    lookup = {"dep-1": Path("/")}.get
    async with terminal_server(tmp_path, user="nobody", deployment_dir=lookup) as (_, stub):
        session_id = await create(stub, metadata=bearer_metadata(grant(deployment="dep-1", key_holder=False)),
                                  deployment_id="dep-1")
        term = Attached(stub, session_id, metadata=bearer_metadata(grant(deployment="dep-1", key_holder=False)))
        term.send("echo user=$(id -un) dir=$(pwd); exit\n")
        await term.expect("dir=/")
        await term.end()
        assert "user=nobody dir=/" in term.output.decode()
