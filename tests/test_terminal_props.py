"""Property tests of the terminal: hypothesis-built requests to every TerminalService
call never get INTERNAL or UNKNOWN from a real server; grants and environments."""

from __future__ import annotations

import asyncio
import threading

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from node.terminal.environment import Account, shell_environment
from protos import deployment_pb2 as d
from protos import deployment_pb2_grpc as dg
from protos.grant import Grant, GrantInvalid, grant_key, mint_grant, verify_grant
from terminal_harness import API_KEY, NODE_ID, SESSION_TOKEN, grant, terminal_server

BAD = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=300)
int32 = st.integers(min_value=-(2**31), max_value=2**31 - 1)
header = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=200)
metadata = st.one_of(
    st.just(()),
    st.just((("authorization", f"Bearer {API_KEY}"),)),
    st.builds(lambda v: (("authorization", v),), header),
    st.builds(lambda a, b: (("authorization", f"Bearer ey{a}.{b}"),), header, header),
    st.builds(lambda u, dep, e: (("authorization", f"Bearer {grant(u or 'x', deployment=dep, expires_in=e)}"),),
              st.text(alphabet="abc", max_size=5), st.sampled_from(["", "dep-1"]), st.sampled_from([-10, 100])),
)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A terminal server on its own loop in a thread, for a synchronous hypothesis client."""
    loop = asyncio.new_event_loop()
    ready, stop = threading.Event(), None
    holder: dict = {}

    async def serve():
        nonlocal stop
        stop = asyncio.Event()
        async with terminal_server(tmp_path_factory.mktemp("props"), idle_timeout_s=5.0) as (servicer, _):
            holder["servicer"] = servicer
            ready.set()
            await stop.wait()

    thread = threading.Thread(target=lambda: loop.run_until_complete(serve()), daemon=True)
    thread.start()
    assert ready.wait(30)
    channel = grpc.insecure_channel(holder["servicer"].address)
    yield dg.TerminalServiceStub(channel), holder["servicer"]
    channel.close()
    loop.call_soon_threadsafe(stop.set)
    thread.join(30)


def _never_internal(call) -> None:
    try:
        call()
    except grpc.RpcError as exc:
        assert exc.code() not in BAD, f"{exc.code()}: {exc.details()}"


SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@SETTINGS
@given(md=metadata, deployment=text, user=text, node=text, rows=int32, cols=int32)
def test_create_session_never_internal(server, md, deployment, user, node, rows, cols):
    stub, _ = server
    request = d.CreateTerminalSessionRequest(deployment_id=deployment, user_id=user, node_id=node, rows=rows, cols=cols)

    def call():
        answer = stub.CreateSession(request, metadata=md, timeout=20)
        stub.CloseSession(d.CloseTerminalSessionRequest(session_id=answer.session.session_id), metadata=md, timeout=20)
    _never_internal(call)


@SETTINGS
@given(md=metadata, session=st.one_of(text, st.just("real")), rows=int32, cols=int32)
def test_resize_and_close_never_internal(server, md, session, rows, cols):
    stub, _ = server
    key = (("authorization", f"Bearer {API_KEY}"),)
    real = session == "real"
    if real:
        session = stub.CreateSession(d.CreateTerminalSessionRequest(user_id="props"), metadata=key).session.session_id
    _never_internal(lambda: stub.ResizeTerminal(d.TerminalResize(session_id=session, rows=rows, cols=cols),
                                                metadata=md, timeout=20))
    _never_internal(lambda: stub.CloseSession(d.CloseTerminalSessionRequest(session_id=session), metadata=md,
                                              timeout=20))
    if real:
        _never_internal(lambda: stub.CloseSession(d.CloseTerminalSessionRequest(session_id=session), metadata=key))


message = st.builds(d.TerminalData, session_id=text, deployment_id=text,
                    data=st.binary(max_size=70_000), is_eof=st.booleans(), sequence_number=int32)


@SETTINGS
@given(md=metadata, messages=st.lists(message, max_size=4), real=st.booleans())
def test_stream_never_internal(server, md, messages, real):
    stub, _ = server
    key = (("authorization", f"Bearer {API_KEY}"),)
    if real:
        session = stub.CreateSession(d.CreateTerminalSessionRequest(user_id="props-stream"), metadata=key)
        messages = [d.TerminalData(session_id=session.session.session_id)] + messages
        md = key

    def call():
        stream = stub.StreamTerminal(iter(messages), metadata=md, timeout=1.5)
        for _ in stream:
            pass
    try:
        call()
    except grpc.RpcError as exc:
        assert exc.code() not in BAD, f"{exc.code()}: {exc.details()}"
    if real:
        try:
            stub.CloseSession(d.CloseTerminalSessionRequest(session_id=session.session.session_id), metadata=key)
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.NOT_FOUND


# --- pure parts ---------------------------------------------------------------------------

grants = st.builds(Grant, user=text, node_id=st.just(NODE_ID), deployment_id=text,
                   expires_at=st.integers(1_000_000, 1_000_300), grant_id=st.text("0123456789abcdef", min_size=1),
                   key_holder=st.booleans())


@given(g=grants, position=st.integers(min_value=0), char=st.sampled_from("AQgw_-.x"))
def test_a_grant_verifies_and_any_change_breaks_it(g, position, char):
    key = grant_key(SESSION_TOKEN)
    token = mint_grant(key, g)
    assert verify_grant(key, token, node_id=NODE_ID, now=1_000_000) == g
    i = position % len(token)
    changed = token[:i] + char + token[i + 1:]
    if changed != token:
        with pytest.raises(GrantInvalid):
            verify_grant(key, changed, node_id=NODE_ID, now=1_000_000)
    with pytest.raises(GrantInvalid):
        verify_grant(grant_key("another"), token, node_id=NODE_ID, now=1_000_000)
    with pytest.raises(GrantInvalid):
        verify_grant(key, token, node_id=NODE_ID, now=g.expires_at + 1)


@given(env=st.dictionaries(st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ_", min_size=1, max_size=20),
                           st.text(max_size=20), max_size=30))
def test_the_shell_environment_holds_only_allowed_names(env):
    env = {**env, "CYXWIZ_API_KEY": "secret", "NATS_CREDS": "secret"}
    out = shell_environment(env, Account(name="u", home="/home/u"), "/bin/sh", "/tmp")
    allowed = {"PATH", "TERM", "HOME", "USER", "LOGNAME", "SHELL", "PWD", "LANG", "LANGUAGE", "TZ"}
    assert all(name in allowed or name.startswith("LC_") for name in out)
    assert out["TERM"] == "xterm-256color"
    assert "secret" not in [v for k, v in out.items() if k != "PATH"]


def test_the_node_flags_of_the_terminal():
    from node.config import ConfigError, parse_config

    assert parse_config([], env={}).terminal is False
    on = parse_config(["--terminal", "--terminal-user", "nobody", "--terminal-idle-timeout", "60"], env={})
    assert (on.terminal, on.terminal_user, on.terminal_idle_timeout_s) == (True, "nobody", 60.0)
    assert parse_config([], env={"CYXWIZ_TERMINAL": "1", "CYXWIZ_API_KEY": "k"}).api_key == "k"
    assert parse_config([], env={"CYXWIZ_TERMINAL": "1"}).terminal is True
    for argv, env, text in [
        (["--terminal-idle-timeout", "0"], {}, "never kept forever"),
        ([], {"CYXWIZ_TERMINAL_IDLE_TIMEOUT_S": "inf"}, "never kept forever"),
        ([], {"CYXWIZ_TERMINAL": "maybe"}, "expected 1 or 0"),
    ]:
        with pytest.raises(ConfigError, match=text):
            parse_config(argv, env=env)


async def test_an_unknown_terminal_user_stops_the_node_at_start(tmp_path):
    from node.config import ConfigError, NodeConfig
    from node.main import Node

    node = Node(NodeConfig(central="127.0.0.1:1", nats="nats://127.0.0.1:1", node_port=0, deploy_port=0,
                           terminal_port=0, bind_host="127.0.0.1", home=tmp_path, terminal=True,
                           terminal_user="no-such-user-here"))
    with pytest.raises(ConfigError, match="no user 'no-such-user-here'"):
        node._start_terminal()
