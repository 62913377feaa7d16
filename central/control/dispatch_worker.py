"""The process that makes central's ``AssignJob`` calls, off central's event loop.

A gRPC call costs a Python process several hundred microseconds of its one core (the
HTTP/2 framing, the completion callbacks, the syscalls); at a thousand assignments a
second that is most of what central could spend. Central keeps every decision (which
node, what a refusal means, the backoff, the JobRejected event) and hands this process
only the call: the endpoint and the serialized request in, the serialized answer or
the gRPC status out.

Frames on stdin/stdout: a 4-byte big-endian length, then msgpack.
    in:  [call_id, endpoint, request_bytes, timeout_s]   (timeout_s < 0: close the endpoint's channel)
    out: [call_id, 0, response_bytes] | [call_id, status_code, details]

    python -m central.control.dispatch_worker          # started by central; ends at stdin's EOF
"""

from __future__ import annotations

import asyncio
import logging
import os
import struct
import subprocess
import sys
from typing import Any

import grpc
import msgspec

from bus.loop import wait_for_future
from bus.server import die_with_parent

log = logging.getLogger("cyxwiz.central.dispatch_worker")

ASSIGN_JOB = "/cyxwiz.protocol.NodeService/AssignJob"
_HEADER = struct.Struct(">I")
_STATUS_BY_CODE = {status.value[0]: status for status in grpc.StatusCode}
_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder().decode


def frame(message: list[Any]) -> bytes:
    body = _encode(message)
    return _HEADER.pack(len(body)) + body


async def read_frame(reader: asyncio.StreamReader) -> list[Any]:
    (size,) = _HEADER.unpack(await reader.readexactly(_HEADER.size))
    return _decode(await reader.readexactly(size))


class Outbox:
    """Frames written to a pipe once per loop turn: a scheduling pass dispatches many jobs
    at once, and one write syscall carries them all."""

    def __init__(self, write) -> None:
        self._write = write
        self._frames: list[bytes] = []

    def send(self, data: bytes) -> None:
        if not self._frames:
            asyncio.get_running_loop().call_soon(self._flush)
        self._frames.append(data)

    def _flush(self) -> None:
        data, self._frames = b"".join(self._frames), []
        try:
            self._write(data)
        except (BrokenPipeError, ConnectionResetError, RuntimeError):
            pass  # the other side is gone: its reader fails what was in flight


class WorkerCallError(grpc.RpcError):
    """A failed call, as the worker saw it: the gRPC status and its details."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self._code = code
        self._details = details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


class DispatchWorker:
    """Central's side: starts the worker, sends calls, resolves their futures.

    If the worker dies, its calls in flight fail as UNAVAILABLE (the dispatcher turns
    that into JobRejected, so the jobs are placed again) and the next call starts a new
    worker.
    """

    def __init__(self) -> None:
        self._proc: asyncio.subprocess.Process | None = None
        self._reader_task: asyncio.Task | None = None
        self._pending: dict[int, asyncio.Future] = {}
        self._next_id = 0
        self._starting: asyncio.Lock | None = None
        self._outbox: Outbox | None = None

    async def start(self) -> None:
        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:
            if self._proc is not None and self._proc.returncode is None:
                return
            self._proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "central.control.dispatch_worker",
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, preexec_fn=die_with_parent,
                limit=64 * 1024 * 1024,
            )
            self._outbox = Outbox(self._proc.stdin.write)
            self._reader_task = asyncio.create_task(self._read(self._proc), name="dispatch-worker-reader")

    async def call(self, endpoint: str, request: bytes, timeout_s: float) -> bytes:
        """The response bytes of ``AssignJob`` on ``endpoint``; raises ``WorkerCallError``."""
        if self._proc is None or self._proc.returncode is not None:
            await self.start()
        self._next_id += 1
        call_id = self._next_id
        future = asyncio.get_running_loop().create_future()
        self._pending[call_id] = future
        try:
            self._outbox.send(frame([call_id, endpoint, request, timeout_s]))
            # the worker's own deadline answers first; this one covers a worker that hangs
            answer = await wait_for_future(future, timeout_s + 5.0, None)
        finally:
            self._pending.pop(call_id, None)
        if answer is None:
            raise WorkerCallError(grpc.StatusCode.DEADLINE_EXCEEDED, "no answer from the dispatch worker")
        return answer

    def forget(self, endpoint: str) -> None:
        if self._proc is not None and self._proc.returncode is None:
            self._outbox.send(frame([0, endpoint, b"", -1.0]))

    async def _read(self, proc: asyncio.subprocess.Process) -> None:
        try:
            while True:
                call_id, code, payload = await read_frame(proc.stdout)
                future = self._pending.get(call_id)
                if future is None or future.done():
                    continue
                if code == 0:
                    future.set_result(payload)
                else:
                    future.set_exception(WorkerCallError(_STATUS_BY_CODE.get(code, grpc.StatusCode.UNKNOWN), payload))
        except (asyncio.IncompleteReadError, ConnectionResetError):
            pass
        except Exception:
            log.exception("dispatch worker: unreadable answer; restarting it")
            proc.kill()
        for future in list(self._pending.values()):
            if not future.done():
                future.set_exception(WorkerCallError(grpc.StatusCode.UNAVAILABLE, "the dispatch worker exited"))

    async def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.returncode is None:
            proc.stdin.close()
            try:
                async with asyncio.timeout(5):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()
        if self._reader_task is not None:
            await asyncio.gather(self._reader_task, return_exceptions=True)


# --- the worker process ---------------------------------------------------------------------


async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    channels: dict[str, grpc.aio.Channel] = {}
    calls: dict[str, Any] = {}
    tasks: set[asyncio.Task] = set()
    answers = Outbox(writer.write)

    async def assign(call_id: int, endpoint: str, request: bytes, timeout_s: float) -> None:
        method = calls.get(endpoint)
        if method is None:
            channel = channels[endpoint] = grpc.aio.insecure_channel(endpoint, options=[("grpc.enable_retries", 0)])
            method = calls[endpoint] = channel.unary_unary(ASSIGN_JOB)
        try:
            answer = [call_id, 0, await method(request, timeout=timeout_s)]
        except grpc.aio.AioRpcError as exc:
            answer = [call_id, exc.code().value[0], exc.details() or ""]
        except Exception as exc:  # a bad endpoint string, ...: the call failed, the worker goes on
            answer = [call_id, grpc.StatusCode.UNAVAILABLE.value[0], f"{type(exc).__name__}: {exc}"]
        answers.send(frame(answer))

    while True:
        try:
            call_id, endpoint, request, timeout_s = await read_frame(reader)
        except asyncio.IncompleteReadError:
            break  # central closed our stdin: finish
        if timeout_s < 0:
            calls.pop(endpoint, None)
            channel = channels.pop(endpoint, None)
            if channel is not None:
                await channel.close()
            continue
        task = asyncio.create_task(assign(call_id, endpoint, request, timeout_s))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    await asyncio.gather(*tasks, return_exceptions=True)
    await asyncio.sleep(0)  # the last answers' write
    for channel in channels.values():
        await channel.close()


async def main() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=64 * 1024 * 1024)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin.buffer)
    transport, protocol = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin, os.fdopen(sys.stdout.fileno(), "wb", 0))
    writer = asyncio.StreamWriter(transport, protocol, reader, loop)
    await serve(reader, writer)
    transport.close()


if __name__ == "__main__":
    asyncio.run(main())
