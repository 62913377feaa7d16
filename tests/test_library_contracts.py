"""Contracts with the libraries whose internals we lean on (pinned in pyproject.toml):
when an upgrade moves one of them, these fail before anything else does."""

from __future__ import annotations

import asyncio
import inspect
from importlib import metadata

import nats.aio.client

from bus.client import FastHeadersClient
from bus.credentials import credentials_from_file
from waiting import eventually


def test_nats_py_private_members_we_override_keep_their_shape():
    base = nats.aio.client.Client
    for name, params in (("_flush_pending", ["self", "force_flush"]), ("_process_headers", ["self", "headers"])):
        member = getattr(base, name, None)
        assert member is not None and inspect.iscoroutinefunction(member), f"nats-py has no coroutine {name}"
        assert list(inspect.signature(member).parameters) == params, f"nats-py changed {name}'s signature"


async def test_nats_py_private_state_we_read_is_there_on_a_connected_client(nats_server):
    client = FastHeadersClient()
    client.flush_linger_s = 0.001
    await client.connect(nats_server.url, **credentials_from_file(nats_server.seed("central")).connect_options())
    try:
        assert isinstance(client._flush_queue, asyncio.Queue)
        assert isinstance(client._pending_data_size, int)
        assert client._flusher_task is not None
        got: list[dict] = []

        async def received(msg) -> None:
            got.append(msg.headers)

        await client.subscribe("contract", cb=received)
        await client.publish("contract", b"x", headers={"Nats-Msg-Id": "1", "Cyxwiz-Event-Type": "JobSubmitted"})
        await client.flush()
        await eventually(lambda: got, message="the lingered publish arrives")
        assert got == [{"Nats-Msg-Id": "1", "Cyxwiz-Event-Type": "JobSubmitted"}], "a lingered publish arrives, parsed"
    finally:
        await client.close()


def test_generated_grpc_code_matches_the_pinned_generator():
    from protos import job_pb2_grpc

    assert job_pb2_grpc.GRPC_GENERATED_VERSION == metadata.version("grpcio-tools"), (
        "regenerate with `just protos` and pin grpcio-tools to the version in pyproject.toml")
