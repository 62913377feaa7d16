"""The node's link to central: registration, heartbeats, and authorised calls.

- Registers with its devices (``jax.devices()``), CPU cores, RAM and slots, retrying
  with backoff while central is away.
- Heartbeats every ``heartbeat_s`` with its active jobs, free slots and load; cancels
  the jobs central lists in ``jobs_to_cancel``.
- Registers again when central forgets it: ``keep_alive = false`` in a heartbeat
  answer, or NOT_FOUND / UNAUTHENTICATED (Error 404 / 401) on any call.
- Every call after registration carries the session token as
  ``authorization: Bearer <token>`` (see ``protos.convert.bearer_metadata``).
"""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from pathlib import Path
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata

import grpc
import psutil
from google.protobuf.message import Message

from bus.files import write_atomic
from events.errors import CyxwizError
from node.config import NodeConfig
from node.metrics import DeviceInfo, LoadSample, MetricsHistory, cpu_cores
from protos import common_pb2, node_pb2, node_pb2_grpc
from protos.convert import bearer_metadata

__all__ = ["Agent", "Backoff", "CentralError", "RegistrationRefused"]

log = logging.getLogger(__name__)

RETRYABLE_CODES = frozenset({401, 404, 408, 429, 500, 502, 503, 504})
_GRPC_TO_HTTP = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}
# Reconnect fast once central is back: gRPC's default backoff grows to two minutes.
CHANNEL_OPTIONS = (
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2000),
)


class CentralError(CyxwizError):
    """A call to central did not succeed. ``code`` is HTTP-style; ``retryable`` says
    whether sending the same request again later can help."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"central answered {code}: {message}", code=code,
                         retryable=code in RETRYABLE_CODES or code >= 500)
        self.answer = message

    def __reduce__(self):
        return type(self), (self.code, self.answer)


class RegistrationRefused(CentralError):
    """Central refused to register this node (wrong node token, invalid info)."""


@dataclass
class Backoff:
    """Exponential delays with jitter: ``first``, doubling, capped at ``cap`` seconds."""

    first: float = 0.2
    cap: float = 5.0

    def delays(self):
        delay = self.first
        while True:
            yield delay * random.uniform(0.8, 1.2)
            delay = min(self.cap, delay * 2)


def _version() -> common_pb2.Version:
    try:
        text = metadata.version("cyxwiz")
    except metadata.PackageNotFoundError:
        text = "0.0.0"
    parts = [int(p) if p.isascii() and p.isdigit() else 0 for p in (text.split(".") + ["0", "0"])[:3]]
    return common_pb2.Version(major=parts[0], minor=parts[1], patch=parts[2], build=text)


class Agent:
    """Registers this node with central and keeps it known there.

    ``jobs()`` gives (active job ids, free slots) for heartbeats; ``cancel(job_id)``
    stops a job central wants stopped.
    """

    def __init__(
        self,
        config: NodeConfig,
        *,
        node_port: int,
        devices: list[DeviceInfo],
        slots: int,
        metrics: MetricsHistory,
        jobs: Callable[[], tuple[list[str], int]],
        cancel: Callable[[str], object],
        backoff: Backoff | None = None,
    ) -> None:
        self.config = config
        self.node_id = config.node_id or stored_node_id(Path(config.home))
        self.session_token = stored_session_token(Path(config.home), self.node_id)
        self.node_port = node_port
        self.devices = devices
        self.slots = slots
        self.metrics = metrics
        self.jobs = jobs
        self.cancel = cancel
        self.backoff = backoff or Backoff(cap=min(5.0, config.heartbeat_s))
        self.registrations = 0
        self.register_attempts = 0
        self._registered = asyncio.Event()
        self._wake = asyncio.Event()
        self._channel = grpc.aio.insecure_channel(config.central, options=CHANNEL_OPTIONS)
        self._stub = node_pb2_grpc.NodeServiceStub(self._channel)

    @property
    def registered(self) -> bool:
        return self._registered.is_set()

    # --- registration ------------------------------------------------------------

    def node_info(self) -> node_pb2.NodeInfo:
        vm = psutil.virtual_memory()
        load = self.metrics.latest()
        gpu_free = 1.0 - (load.gpu_memory if load is not None else 0.0)  # the share of GPU memory free
        devices = [
            common_pb2.DeviceCapabilities(
                device_type=common_pb2.DEVICE_CUDA if d.kind == "cuda" else common_pb2.DEVICE_CPU,
                device_name=d.name, memory_total=d.memory_bytes,
                memory_available=vm.available if d.kind == "cpu" else int(d.memory_bytes * gpu_free),
                vram_total=d.memory_bytes if d.kind == "cuda" else 0,
                vram_available=int(d.memory_bytes * gpu_free) if d.kind == "cuda" else 0,
                gpu_model=d.name if d.kind == "cuda" else "",
            )
            for d in self.devices
        ]
        return node_pb2.NodeInfo(
            node_id=self.node_id, name=self.config.name, version=_version(), devices=devices,
            cpu_cores=cpu_cores(), ram_total=vm.total, ram_available=vm.available,
            ip_address=self.config.public_host, port=self.node_port, is_online=True,
            supports_terminal_access=False, available_runtimes=["jax"], slots=self.slots,
        )

    async def register(self) -> None:
        """Register, retrying with backoff while central is unreachable.

        Raises :class:`RegistrationRefused` when central says no (retrying will not help).
        """
        for delay in self.backoff.delays():
            try:
                await self._register_once()
                return
            except RegistrationRefused:
                raise
            except CentralError as exc:
                log.info("registration with central at %s failed (%s); retrying", self.config.central, exc)
            await asyncio.sleep(delay)

    async def _register_once(self) -> None:
        self.register_attempts += 1
        request = node_pb2.RegisterNodeRequest(
            info=self.node_info(), authentication_token=self.config.node_token or ""
        )
        proof = bearer_metadata(self.session_token) if self.session_token else None  # "this id is mine"
        try:
            response = await self._stub.RegisterNode(request, metadata=proof, timeout=10.0)
        except grpc.aio.AioRpcError as exc:
            code = _GRPC_TO_HTTP.get(exc.code(), 500)
            if code in (400, 401, 403):
                raise RegistrationRefused(code, exc.details() or exc.code().name) from exc
            raise CentralError(code, exc.details() or exc.code().name) from exc
        if response.status != common_pb2.STATUS_SUCCESS or not response.session_token:
            code = response.error.code or 500
            message = response.error.message or "registration not accepted (no session token)"
            if code in (400, 401, 403):
                raise RegistrationRefused(code, message)
            raise CentralError(code, message)
        if response.node_id and response.node_id != self.node_id:
            log.warning("central gave this node the id %s (%s is registered to another node)",
                        response.node_id, self.node_id)
            self.node_id = response.node_id
            if not self.config.node_id:
                store_node_id(Path(self.config.home), self.node_id)
        self.session_token = response.session_token
        store_session_token(Path(self.config.home), self.node_id, self.session_token)
        self.registrations += 1
        self._registered.set()
        log.info("registered with central %s as %s", self.config.central, self.node_id)

    def forget(self, token: str | None = None) -> None:
        """Central no longer knows our session: register again (once per lost token)."""
        if token is not None and token != self.session_token:
            return
        if self._registered.is_set():
            log.info("central forgot node %s; registering again", self.node_id)
        self._registered.clear()
        self._wake.set()

    # --- heartbeats --------------------------------------------------------------

    async def run(self) -> None:
        """Heartbeat forever; register again whenever central has forgotten us."""
        while True:
            self.metrics.record()
            if not self._registered.is_set():
                try:
                    await self.register()
                except RegistrationRefused as exc:
                    log.error("%s; retrying in %.0fs", exc, self.backoff.cap)
                    await self._pause(self.backoff.cap)
                    continue
            else:
                await self._beat()
            await self._pause(self.config.heartbeat_s)

    async def _pause(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._wake.wait(), seconds)
        except asyncio.TimeoutError:
            pass
        self._wake.clear()

    async def _beat(self) -> None:
        active, free = self.jobs()
        sample = self.metrics.latest()
        point = to_metric_point(sample) if sample else None
        token = self.session_token
        request = node_pb2.HeartbeatRequest(
            node_id=self.node_id, current_status=self.node_info(), active_jobs=active,
            metrics=point, free_slots=free,
        )
        try:
            response = await self._stub.Heartbeat(request, metadata=bearer_metadata(token), timeout=10.0)
        except grpc.aio.AioRpcError as exc:
            if exc.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.NOT_FOUND):
                self.forget(token)
            else:
                log.info("heartbeat to %s failed: %s", self.config.central, exc.code().name)
            return
        for job_id in response.jobs_to_cancel:
            if self.cancel(job_id):
                log.info("central cancelled job %s", job_id)
        if not response.keep_alive or response.error.code in (401, 404):
            self.forget(token)

    # --- authorised calls (reports) -------------------------------------------------

    async def call(self, method: str, make_request: Callable[[], Message], *, timeout: float = 10.0) -> Message:
        """Call ``method`` on central's NodeService with the session token.

        ``make_request`` runs just before sending, so the request carries the node id
        of the current registration. Raises :class:`CentralError`.
        """
        if not self._registered.is_set():
            try:
                await asyncio.wait_for(self._registered.wait(), timeout)
            except asyncio.TimeoutError:
                raise CentralError(503, "not registered with central (yet)") from None
        token = self.session_token
        try:
            response = await getattr(self._stub, method)(
                make_request(), metadata=bearer_metadata(token), timeout=timeout
            )
        except grpc.aio.AioRpcError as exc:
            code = _GRPC_TO_HTTP.get(exc.code(), 500)
            if code == 401:
                self.forget(token)
            raise CentralError(code, exc.details() or exc.code().name) from exc
        error = getattr(response, "error", None)
        if error is not None and error.code:
            if error.code == 401:
                self.forget(token)
            raise CentralError(error.code, error.message)
        return response

    async def close(self) -> None:
        await self._channel.close()


def to_metric_point(sample: LoadSample) -> node_pb2.MetricPoint:
    return node_pb2.MetricPoint(
        timestamp=int(sample.timestamp), cpu_usage=sample.cpu, gpu_usage=sample.gpu, memory_usage=sample.memory,
    )


def stored_session_token(home: Path, node_id: str) -> str:
    """The session token of this node's last registration (it proves the id is ours when
    registering again), or "" when there is none for ``node_id``."""
    try:
        stored_id, token = (home / "session_token").read_text().split()
    except (OSError, ValueError):
        return ""
    return token if stored_id == node_id else ""


def store_session_token(home: Path, node_id: str, token: str) -> None:
    """Keep the token readable by this user only (it acts as the node)."""
    path = home / "session_token"
    try:
        write_atomic(path, f"{node_id} {token}\n", mode=0o600)
    except OSError as exc:
        log.warning("cannot keep the session token in %s (%s): a restart will register a fresh id", path, exc)


def store_node_id(home: Path, node_id: str) -> None:
    try:
        home.mkdir(parents=True, exist_ok=True)
        (home / "node_id").write_text(node_id + "\n")
    except OSError:
        pass


def stored_node_id(home: Path) -> str:
    """The node's id, kept in ``<home>/node_id`` so a restarted node is the same node."""
    path = home / "node_id"
    try:
        stored = path.read_text().strip()
        if stored:
            return stored
    except OSError:
        pass
    node_id = f"node-{uuid.uuid4().hex[:12]}"
    try:
        home.mkdir(parents=True, exist_ok=True)
        path.write_text(node_id + "\n")
    except OSError:
        pass  # a read-only home: the id lasts as long as the process
    return node_id
