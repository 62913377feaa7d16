"""A terminal server for tests: the node's real TerminalServicer on a real gRPC server
(port 0, loopback) with real PTYs; grants minted as central would."""

from __future__ import annotations

import asyncio
import time
import uuid
from contextlib import asynccontextmanager

import grpc

from node.terminal import TerminalServicer, TerminalSettings
from protos import deployment_pb2 as d
from protos import deployment_pb2_grpc as dg
from protos.convert import bearer_metadata
from protos.grant import Grant, grant_key, mint_grant

API_KEY = "test-api-key"
SESSION_TOKEN = "session-token-of-node-1"
NODE_ID = "node-1"


def grant(user: str = "alice", *, deployment: str = "", key_holder: bool = True, node_id: str = NODE_ID,
          expires_in: float = 300, token: str = SESSION_TOKEN) -> str:
    return mint_grant(grant_key(token), Grant(user=user, node_id=node_id, deployment_id=deployment,
                                              expires_at=int(time.time() + expires_in), grant_id=uuid.uuid4().hex,
                                              key_holder=key_holder))


KEY = bearer_metadata(API_KEY)


@asynccontextmanager
async def terminal_server(tmp_path, **settings):
    values = dict(enabled=True, api_key=API_KEY, home=tmp_path / "home", shell="/bin/sh")
    values.update(settings)
    servicer = TerminalServicer(TerminalSettings(**values), node_id=lambda: NODE_ID,
                                session_token=lambda: SESSION_TOKEN)
    server = grpc.aio.server()
    dg.add_TerminalServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    servicer.address = f"127.0.0.1:{port}"
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield servicer, dg.TerminalServiceStub(channel)
    finally:
        await channel.close()
        await servicer.close()
        await server.stop(0)


async def create(stub, metadata=KEY, **fields) -> str:
    response = await stub.CreateSession(d.CreateTerminalSessionRequest(**fields), metadata=metadata, timeout=20)
    return response.session.session_id


class Attached:
    """One attached stream: send keys, read output until a text appears, see the end."""

    def __init__(self, stub, session_id: str, metadata=KEY) -> None:
        self.session_id = session_id
        self.keys: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.output = bytearray()
        self.messages: list[d.TerminalData] = []
        self.call = stub.StreamTerminal(self._requests(), metadata=metadata)
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _requests(self):
        yield d.TerminalData(session_id=self.session_id)
        while (data := await self.keys.get()) is not None:
            yield d.TerminalData(session_id=self.session_id, data=data)

    async def _read(self) -> None:
        async for message in self.call:
            self.messages.append(message)
            self.output += message.data

    def send(self, text: str | bytes) -> None:
        self.keys.put_nowait(text.encode() if isinstance(text, str) else text)

    async def expect(self, text: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while text.encode() not in self.output:
            if self._reader.done():
                self._reader.result()
                raise AssertionError(f"stream ended without {text!r}: {bytes(self.output[-400:])!r}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {text!r} within {timeout}s: {bytes(self.output[-400:])!r}")
            await asyncio.sleep(0.01)

    async def end(self, timeout: float = 20.0) -> int:
        """Wait for the stream's end; the exit code from its trailing metadata."""
        await asyncio.wait_for(self._reader, timeout)
        trailer = dict(await self.call.trailing_metadata())
        return int(trailer["cyxwiz-exit-code"])

    def close(self) -> None:
        self.keys.put_nowait(None)
        self.call.cancel()
        self._reader.cancel()
