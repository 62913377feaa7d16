"""More processes answering inference on the node's deploy port (``--serving-processes N``).

One Python gRPC server receives every request on one thread: for large requests (a
256 x 4096 float32 batch is 4 MiB) its receive, not the model, bounds what a node serves
(BENCHMARKS.md, issue 11). With N serving processes, each one
(``python -m node.serving.replica``) binds the same port with SO_REUSEPORT, so the kernel
spreads connections over the node and them; each answers InferenceService and the Open
Inference Protocol from its own copy of every deployment (the same bytes, SHA-256
pinned; on a GPU its own weights on the device) and forwards every other call
(DeploymentService, health, reflection) to the node over a private Unix socket.

The node keeps the one record of every deployment (its events, its metrics). Every
``SYNC_S`` a serving process sends what it holds, what failed to load and its request
records (they join the node's serving windows), and gets the node's deployments back.
The lifecycle waits for them: a deployment is RUNNING once every serving process has it
loaded (one that cannot load it fails it, saying which), and a stop returns once every
one has answered what it accepted. A serving process that dies is started again; until
it has loaded the running deployments it does not listen.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import os
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import grpc
import msgspec

from node.serving.deployments import Deployment, Deployments, Fetch
from node.serving.spec import DeploymentSpec

__all__ = ["SYNC_METHOD", "ServingProcesses", "Snapshot", "SyncReport"]

log = logging.getLogger(__name__)

SYNC_METHOD = "/cyxwiz.node.ServingProcesses/Sync"
SYNC_S = 0.05
GONE_AFTER_S = 15.0  # a serving process silent this long (yet not exited) no longer holds the lifecycle up
START_TIMEOUT_S = 180.0
RESTART_DELAY_S = 1.0


class SyncReport(msgspec.Struct, forbid_unknown_fields=True):
    """What a serving process tells the node."""

    token: str
    index: int
    pid: int
    listening: bool = False
    ready: list[str] = []  # deployments it serves now
    held: list[str] = []  # deployments it still holds (serving, or answering what it accepted)
    failed: dict[str, str] = {}  # deployments it could not load, and why
    stats: dict[str, tuple[list[float], int, int, int]] = {}  # latencies ms, errors, batches, samples


class DeploymentState(msgspec.Struct):
    spec: dict
    status: str
    message: str = ""
    error_code: int = 0
    sha256: str = ""
    created_at: float = 0.0  # which life of this id (an id may be deleted and created again)


class Snapshot(msgspec.Struct):
    """What the node tells a serving process."""

    deployments: list[DeploymentState]
    session_token: str | None = None


def spec_to_dict(spec: DeploymentSpec) -> dict:
    out = asdict(spec)
    out["metadata"] = dict(spec.metadata)
    return out


def spec_from_dict(data: dict) -> DeploymentSpec:
    return msgspec.convert(data, DeploymentSpec)


def staged_name(uri: str) -> str:
    return hashlib.sha256(uri.encode()).hexdigest()[:32] + ".model"


@dataclass
class _Process:
    index: int
    proc: asyncio.subprocess.Process | None = None
    pid: int = 0
    listening: bool = False
    seen: float = 0.0
    ready: set[str] = field(default_factory=set)
    held: set[str] = field(default_factory=set)
    failed: dict[str, str] = field(default_factory=dict)

    def live(self, now: float) -> bool:
        return self.proc is not None and self.proc.returncode is None and now - self.seen < GONE_AFTER_S


class ServingProcesses:
    """The node's side: starts and watches the serving processes, answers their syncs, and is
    the lifecycle's :class:`node.serving.deployments.Gate`."""

    def __init__(
        self, count: int, *, model_roots: tuple[Path, ...], api_key: str | None,
        session_token: Callable[[], str | None],
    ) -> None:
        if count < 1:
            raise ValueError("count must be >= 1")
        self.count = count
        self.model_roots = model_roots
        self.api_key = api_key
        self.session_token = session_token
        self.deployments: Deployments | None = None
        self.dir = Path(tempfile.mkdtemp(prefix="cyxwiz-serving-"))  # 0700: only this user reaches the socket
        self.socket = self.dir / "node.sock"
        self._token = secrets.token_hex(32)
        self._procs = [_Process(i + 1) for i in range(count)]
        self._changed = asyncio.Event()
        self._watchers: list[asyncio.Task] = []
        self._closing = False
        self._host = ""
        self._port = 0
        self.requests_by_process: dict[int, int] = {}  # answered by each serving process, for operators and tests

    # --- wiring -----------------------------------------------------------------------

    def staging_fetch(self, fetch: Fetch) -> Fetch:
        """``fetch`` that also leaves the bytes where the serving processes read them."""

        async def staged(uri: str) -> bytes:
            data = await fetch(uri)
            path = self.dir / staged_name(uri)
            if not path.exists():
                tmp = path.with_suffix(f".{secrets.token_hex(4)}.tmp")  # two loads of one model may race
                await asyncio.to_thread(tmp.write_bytes, data)
                os.replace(tmp, path)
            return data

        return staged

    def add_to(self, server: grpc.aio.Server) -> None:
        """The Sync method on ``server`` and the private socket it is reached on."""
        handler = grpc.unary_unary_rpc_method_handler(self._sync)
        service, method = SYNC_METHOD[1:].split("/")
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, {method: handler}),))
        if server.add_insecure_port(f"unix:{self.socket}") == 0:
            raise RuntimeError(f"cannot listen on the serving processes' socket {self.socket}")

    async def start(self, host: str, port: int) -> None:
        """Start every serving process on ``host:port`` (the node's deploy port, already
        bound with SO_REUSEPORT) and wait until each listens."""
        self._host, self._port = host, port
        for p in self._procs:
            await self._spawn(p)

        def up(now: float) -> bool:
            for p in self._procs:
                if p.proc is not None and p.proc.returncode is not None:
                    raise RuntimeError(f"serving process {p.index} exited with {p.proc.returncode} before it "
                                       "listened: see its log above")
            return all(p.listening for p in self._procs)

        if not await self._until(up, START_TIMEOUT_S):
            raise RuntimeError(f"the serving processes did not all listen within {START_TIMEOUT_S:.0f} s")
        # from here on, one that dies is started again
        self._watchers = [asyncio.create_task(self._watch(p), name=f"serving-process-{p.index}") for p in self._procs]

    async def _spawn(self, p: _Process) -> None:
        config = {
            "socket": str(self.socket), "token": self._token, "index": p.index, "host": self._host,
            "port": self._port, "model_roots": [str(r) for r in self.model_roots], "api_key": self.api_key,
            "staging": str(self.dir),
        }
        env = {**os.environ, "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}  # the GPU is shared with the node
        p.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "node.serving.replica", stdin=asyncio.subprocess.PIPE, env=env,
        )
        p.pid, p.listening, p.seen = p.proc.pid, False, time.monotonic()
        p.ready, p.held, p.failed = set(), set(), {}
        assert p.proc.stdin is not None
        p.proc.stdin.write(json.dumps(config).encode())  # the token and the key never go on a command line
        await p.proc.stdin.drain()
        p.proc.stdin.close()

    async def _watch(self, p: _Process) -> None:
        """Start a serving process again when it dies (at most once a second)."""
        while not self._closing:
            assert p.proc is not None
            code = await p.proc.wait()
            self._changed.set()
            if self._closing:
                return
            log.warning("serving process %d (pid %d) exited with %s: starting it again", p.index, p.pid, code)
            await asyncio.sleep(RESTART_DELAY_S)
            if self._closing:
                return
            try:
                await self._spawn(p)
            except OSError:
                log.exception("serving process %d could not be started", p.index)
                return

    # --- the private method -------------------------------------------------------------

    async def _sync(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        if not (context.peer() or "").startswith("unix:"):
            await context.abort(grpc.StatusCode.NOT_FOUND, "Method not found!")
        try:
            report = msgspec.json.decode(request, type=SyncReport)
        except msgspec.DecodeError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"bad sync report: {exc}")
        if not hmac.compare_digest(report.token.encode(), self._token.encode()) or not 1 <= report.index <= self.count:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, "not a serving process of this node")
        p = self._procs[report.index - 1]
        if report.pid != p.pid:  # a process that was replaced, still ending
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "replaced")
        p.seen = time.monotonic()
        ready, held = set(report.ready), set(report.held)
        if ready != p.ready or held != p.held or report.failed != p.failed or report.listening != p.listening:
            p.ready, p.held, p.failed, p.listening = ready, held, dict(report.failed), report.listening
            self._changed.set()
        if report.stats:
            self.requests_by_process[p.index] = self.requests_by_process.get(p.index, 0) + sum(
                len(v[0]) for v in report.stats.values())
        if self.deployments is not None:
            for deployment_id, (latencies, errors, batches, samples) in report.stats.items():
                with contextlib.suppress(Exception):
                    self.deployments.get(deployment_id).stats.merge(latencies, errors, batches, samples)
        return msgspec.json.encode(self.snapshot())

    def snapshot(self) -> Snapshot:
        states = [
            DeploymentState(spec=spec_to_dict(d.spec), status=d.status.value, message=d.message,
                            error_code=d.error_code, sha256=d.model_sha256, created_at=d.created_at)
            for d in (self.deployments.list() if self.deployments is not None else [])
        ]
        return Snapshot(deployments=states, session_token=self.session_token())

    # --- the lifecycle's gate ---------------------------------------------------------------

    async def _until(self, done: Callable[[float], bool], timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not done(time.monotonic()):
            if deadline is not None and time.monotonic() >= deadline:
                return False
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), 0.5)  # also looks again at who is live
        return True

    async def ready(self, d: Deployment) -> str | None:
        deployment_id = d.deployment_id

        def done(now: float) -> bool:
            live = [p for p in self._procs if p.live(now)]
            return any(deployment_id in p.failed for p in live) or all(deployment_id in p.ready for p in live)

        await self._until(done)
        for p in self._procs:
            if deployment_id in p.failed:
                return f"serving process {p.index} could not load it: {p.failed[deployment_id]}"
        return None

    async def released(self, d: Deployment, timeout: float) -> None:
        deployment_id = d.deployment_id
        if not await self._until(
            lambda now: not any(deployment_id in p.held for p in self._procs if p.live(now)), timeout,
        ):
            log.warning("deployment %s: a serving process still holds it after %.0f s", deployment_id, timeout)

    def forget(self, d: Deployment) -> None:
        """After a delete: the staged bytes go once no deployment uses them."""
        if self.deployments is None or any(o.source.uri == d.source.uri for o in self.deployments.list()):
            return
        with contextlib.suppress(OSError):
            (self.dir / staged_name(d.source.uri)).unlink()

    def pids(self) -> list[int]:
        return [p.pid for p in self._procs if p.proc is not None and p.proc.returncode is None]

    async def close(self) -> None:
        """Stop the serving processes (each answers what it accepted first) and remove the socket."""
        self._closing = True
        for p in self._procs:
            if p.proc is not None and p.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    p.proc.terminate()
        for p in self._procs:
            if p.proc is None:
                continue
            try:
                await asyncio.wait_for(p.proc.wait(), 10)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    p.proc.kill()
                await p.proc.wait()
        for task in self._watchers:
            task.cancel()
        await asyncio.gather(*self._watchers, return_exceptions=True)
        shutil.rmtree(self.dir, ignore_errors=True)
