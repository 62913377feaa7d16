"""The central process, composed: gRPC + REST + projector + scheduler + dispatcher + liveness.

    server = CentralServer(CentralConfig.load(grpc_port=0, rest_port=0))
    await server.start()      # replays the stream into central's state, then goes live
    ...
    await server.stop()

Settings come from arguments (flags), then ``CYXWIZ_*`` environment variables, then the
defaults of ARCHITECTURE.md "Ports and configuration".
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path

import duckdb
import grpc

from bus import BusError, EventBus, NatsServer, open_bus
from bus.lease import Lease
from events import ConfigError
from central.adapters.auth import Auth, load_secret
from central.control.commands import Commands
from central.control.dispatch_worker import DispatchWorker
from central.control.dispatcher import Dispatcher
from central.control.job_phases import JobPhases
from central.adapters.deployments import add_deployment_service
from central.adapters.grpc_base import Services
from central.adapters.grpc_services import add_services
from central.adapters.terminal import add_terminal_services
from central.control.deployments import DeploymentControl
from central.control.leadership import LEASE_BUCKET, LEASE_KEY, Leadership
from central.control.liveness import Liveness
from central.control.scheduler import Scheduler
from central.lifecycle.state import CentralState
from central import metrics as central_metrics
from central.adapters.readiness import ReplayGate
from central.metrics import GRPC_HANDLED
from protos.call_metrics import CallCounter
from protos.decode_guard import DecodeGuard
from protos.standard_services import ServiceRecorder, StandardServices

log = logging.getLogger("cyxwiz.central")

REPLAY_TIMEOUT_S = 600.0
# Python's cyclic collector by default runs every 700 net allocations and, now and then,
# walks the whole heap; central's state (every job, node and index) is large and lives as
# long as the process, and a job's handling allocates thousands of short-lived objects, so
# at the default the collector took a fifth of central's CPU under load (py-spy --native,
# bench/central_bench.py --reports-only). After the replay what is there is frozen out of
# the collector's walks, and the young generation is collected 50x less often.
GC_THRESHOLDS = (50_000, 20, 100)


def settle_heap() -> None:
    """What the replay built is permanent for the collector; young objects are collected
    less often (see ``GC_THRESHOLDS``)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


@dataclass(frozen=True)
class CentralConfig:
    home: Path = Path(".cyxwiz")
    nats_url: str | None = None
    grpc_port: int = 50051
    rest_port: int = 8080
    node_token: str | None = None
    api_key: str | None = None
    heartbeat_s: float = 10.0
    node_timeout_s: float = 30.0
    dispatch_process: bool = True  # AssignJob calls from a worker process, off the event loop
    lease_ttl_s: float = 5.0  # the scheduling lease among centrals of one stream (leadership.py)
    share_port: bool = False  # several centrals of one host on one gRPC port (SO_REUSEPORT): the kernel spreads connections
    host: str = "0.0.0.0"  # where the servers listen
    advertise_host: str = "127.0.0.1"  # how the ready banner names them

    ENV = {
        "home": "CYXWIZ_HOME",
        "nats_url": "CYXWIZ_NATS_URL",
        "grpc_port": "CYXWIZ_GRPC_PORT",
        "rest_port": "CYXWIZ_REST_PORT",
        "node_token": "CYXWIZ_NODE_TOKEN",
        "api_key": "CYXWIZ_API_KEY",
        "heartbeat_s": "CYXWIZ_HEARTBEAT_S",
        "node_timeout_s": "CYXWIZ_NODE_TIMEOUT_S",
        "dispatch_process": "CYXWIZ_DISPATCH_PROCESS",
        "lease_ttl_s": "CYXWIZ_LEASE_TTL_S",
        "share_port": "CYXWIZ_SHARE_PORT",
    }

    @classmethod
    def load(cls, env: dict[str, str] | None = None, **flags) -> "CentralConfig":
        """Flags (non-None keyword arguments) over ``CYXWIZ_*`` variables over defaults."""
        env = os.environ if env is None else env
        values = {}
        for f in fields(cls):
            if flags.get(f.name) is not None:
                values[f.name] = _convert(f.name, flags[f.name], f"--{f.name.replace('_s', '').replace('_', '-')}")
            elif f.name in cls.ENV and env.get(cls.ENV[f.name]):
                values[f.name] = _convert(f.name, env[cls.ENV[f.name]], cls.ENV[f.name])
        config = cls(**values)
        config.check()
        return config

    def check(self) -> None:
        for name in ("grpc_port", "rest_port"):
            if not 0 <= getattr(self, name) <= 65535:
                raise ConfigError(f"{name.replace('_', '-')} must be 0..65535 (0: any free port), got {getattr(self, name)}")
        if self.heartbeat_s <= 0:
            raise ConfigError(f"heartbeat must be > 0 seconds (got {self.heartbeat_s:g})")
        if self.lease_ttl_s < 0.3:
            raise ConfigError(f"lease-ttl must be at least 0.3 seconds (got {self.lease_ttl_s:g})")
        if self.node_timeout_s <= self.heartbeat_s:
            raise ConfigError(f"node-timeout ({self.node_timeout_s:g}s) must be longer than the heartbeat "
                              f"({self.heartbeat_s:g}s); three heartbeats is usual")


def _convert(name: str, value, source: str):
    kind = {"grpc_port": int, "rest_port": int, "heartbeat_s": float, "node_timeout_s": float, "home": Path,
            "lease_ttl_s": float,
            "dispatch_process": _flag, "share_port": _flag}.get(name, str)
    try:
        return kind(value)
    except (TypeError, ValueError):
        what = ("an integer" if kind is int else "a number" if kind is float else "1 or 0 (true or false)"
                if kind is _flag else "text")
        raise ConfigError(f"{source} must be {what} (got {value!r})") from None


def _flag(value) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(text)


class CentralServer:
    def __init__(self, config: CentralConfig) -> None:
        self.config = config
        self.bus: EventBus | None = None
        self.nats: NatsServer | None = None
        self.state = CentralState()
        self.grpc_port: int | None = None
        self.rest_port: int | None = None
        self._grpc: grpc.aio.Server | None = None
        self._standard: StandardServices | None = None
        self._replay_target = 0
        self.ready = False  # True once the stream is replayed and every server is up
        self._rest_runner = None
        self._projection = None
        self._tasks: list[asyncio.Task] = []
        self.scheduler: Scheduler | None = None
        self.liveness: Liveness | None = None
        self.dispatcher: Dispatcher | None = None
        self.leadership: Leadership | None = None
        self.central_id = f"{socket.gethostname()}/{os.getpid()}/{uuid.uuid4().hex[:8]}"
        self._leader_tasks: list[asyncio.Task] = []
        self._feed_projector: Callable[[list], None] = lambda batch: None  # until the read model starts

    # --- addresses ---------------------------------------------------------------------

    @property
    def grpc_address(self) -> str:
        return f"{self.config.advertise_host}:{self.grpc_port}"

    @property
    def rest_url(self) -> str | None:
        return None if self.rest_port is None else f"http://{self.config.advertise_host}:{self.rest_port}"

    @property
    def nats_url(self) -> str:
        return self.bus.url if self.bus else ""

    def ready_info(self) -> dict:
        return {"grpc": self.grpc_address, "rest": self.rest_url, "nats": self.nats_url, "pid": os.getpid(),
                "central_id": self.central_id}

    # --- start and stop ----------------------------------------------------------------

    async def start(self) -> None:
        try:
            await self._start()
        except BaseException:
            central_metrics.detach(self)  # a central that did not start is not reported
            raise

    async def _start(self) -> None:
        c = self.config
        # central answers hundreds of calls a second: its appends share write syscalls
        self.bus, self.nats = await open_bus(c.nats_url, home=c.home, flush_linger_s=0.001, role="central")
        auth = Auth(await load_secret(self.bus), node_token=c.node_token, api_key=c.api_key)
        self.commands = commands = Commands(self.state, self.bus)
        self.dispatcher = Dispatcher(self.state, commands, auth,
                                     worker=DispatchWorker() if c.dispatch_process else None)
        self.liveness = Liveness(self.state, self.bus, commands, heartbeat_s=c.heartbeat_s, timeout_s=c.node_timeout_s)
        self.scheduler = Scheduler(self.state, self.bus, commands, self.dispatcher)
        self.phases = JobPhases(self.state)
        if self.dispatcher.worker is not None:
            await self.dispatcher.worker.start()
        self.deployments = DeploymentControl(self.state, commands, auth, reported=self.liveness.reported)
        await self._start_grpc(Services(self.state, self.bus, commands, auth, self.liveness, self.dispatcher,
                                        self.scheduler, self.phases))
        await self._replay()  # health says NOT_SERVING and other calls UNAVAILABLE until it is done
        self.deployments.resume()
        await self._start_read_model()
        self._tasks.append(asyncio.create_task(self.phases.run(self.bus), name="phases"))  # every central answers
        self._tasks.append(asyncio.create_task(central_metrics.watch_loop_lag(), name="loop-lag"))
        await self.liveness.follow_heartbeats()
        self.leadership = Leadership(Lease(self.bus, LEASE_BUCKET, LEASE_KEY, self.central_id, ttl_s=c.lease_ttl_s),
                                     on_gain=self._lead, on_loss=self._follow_only)
        await self.leadership.step()  # a lone central holds it before it answers its first call
        self._leadership_task = asyncio.create_task(self.leadership.run(), name="leadership")
        self._gate.open()
        self.ready = True
        settle_heap()
        await self._standard.serve()
        log.info("central: %s", auth.describe())

    async def _start_grpc(self, services: Services) -> None:
        """Every gRPC service, health and reflection on one port, listening before the
        replay (a replay gate in front); calls counted by method and code."""
        c = self.config
        self._gate = ReplayGate(progress=lambda: f"{self.state.last_seq} of {self._replay_target} events")
        # a taken port is an error (no silent second listener) unless sharing it was asked for
        self._grpc = grpc.aio.server(options=[("grpc.so_reuseport", 1 if c.share_port else 0)],
                                     interceptors=[CallCounter(GRPC_HANDLED), self._gate, DecodeGuard()])
        recorder = ServiceRecorder(self._grpc)
        add_services(recorder, services)
        add_deployment_service(recorder, self.deployments, services.auth)
        self.terminals = add_terminal_services(recorder, services, self.deployments.terminal_target)
        self._standard = await StandardServices.add_to(recorder)
        try:
            self.grpc_port = self._grpc.add_insecure_port(f"{c.host}:{c.grpc_port}")
        except RuntimeError:  # grpcio raises where older versions returned 0
            self.grpc_port = 0
        if self.grpc_port == 0:
            raise ConfigError(f"cannot listen for gRPC on {c.host}:{c.grpc_port}: the port is taken; "
                              "pass --grpc-port 0 for any free port"
                              + ("" if c.share_port else ", or --share-port on every central that shares it"))
        await self._grpc.start()
        central_metrics.attach(self)

    async def _lead(self) -> None:
        """This central holds the lease: schedule, check liveness, and send again the
        assignments that a holder before it may have appended and never dispatched."""
        try:
            await self.commands.catch_up()
        except BusError as exc:  # the scan below then sees what this central has folded
            log.warning("taking the lease over without catching up first: %s", exc)
        self._leader_tasks = [asyncio.create_task(self.scheduler.run(), name="scheduler"),
                              asyncio.create_task(self.liveness.run(), name="liveness")]
        for job in [j for j in self.state.jobs.values() if j.status == "assigned" and j.node_id]:
            self.scheduler.spawn(self.dispatcher.redispatch(job))

    async def _follow_only(self) -> None:
        """The lease is gone: no more passes or checks here. Assignments already on their
        way are left to finish: a JobAssigned that was stored must reach its node, and the
        expected versions keep a late one from taking a job another central placed."""
        for task in self._leader_tasks:
            task.cancel()
        await asyncio.gather(*self._leader_tasks, return_exceptions=True)
        self._leader_tasks = []

    def scheduler_status(self) -> dict:
        return {**self.scheduler.status(), "lease": self.leadership.status() if self.leadership else None}

    async def _replay(self) -> None:
        """Fold the whole stream into central's state, then keep following it live."""
        started = time.monotonic()
        target = self._replay_target = await self.bus.last_sequence()
        self._tasks.append(asyncio.create_task(self._follow(), name="state"))
        if not await self.state.wait_for_seq(target, timeout=REPLAY_TIMEOUT_S):
            raise RuntimeError(f"replay did not reach sequence {target} within {REPLAY_TIMEOUT_S:.0f}s")
        log.info("central: replayed %d events (%d jobs, %d nodes) in %.2fs", target, len(self.state.jobs),
                 len(self.state.nodes), time.monotonic() - started)

    async def _follow(self) -> None:
        while True:
            try:
                async for batch in self.bus.subscribe_batches(self.state.last_seq + 1):
                    self.state.apply_batch(batch)
                    self._feed_projector(batch)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a dropped subscription: resume where we are
                log.warning("event subscription interrupted (%s); resuming at %d", exc, self.state.last_seq + 1)
                await asyncio.sleep(0.5)

    async def _start_read_model(self) -> None:
        """The DuckDB projection, its projector, and REST on top of it."""
        from central.readmodel.projection import Projection, ProjectionBusy
        from central.readmodel.projector import Projector
        from central.adapters.gateway import Gateway
        from central.adapters.live import LiveFeed
        from central.adapters.rest import make_app, serve_rest

        try:
            self._projection = Projection(self.config.home / "cyxwiz.duckdb")
        except ProjectionBusy as exc:
            raise ConfigError(f"{exc} (another central with the same --home?)") from exc
        projector = Projector(self._projection, self.bus)
        self._feed_projector = projector.use_feed()  # the state's subscription serves both
        self._tasks.append(asyncio.create_task(projector.run(), name="projector"))
        self.live = LiveFeed()  # the dashboard's pages, fed by the state's one subscription
        self.state.listen(self.live.on_event)
        app = make_app(self._projection, scheduler_status=self.scheduler_status,
                       scheduler_queue=self.queue_snapshot, api_key=self.config.api_key,
                       gateway=Gateway(self.deployments, self.config.api_key), live=self.live)
        try:
            self._rest_runner, self.rest_port = await serve_rest(app, self.config.host, self.config.rest_port)
        except OSError as exc:
            raise ConfigError(f"cannot listen for REST on {self.config.host}:{self.config.rest_port}: "
                              f"{exc.strerror or exc}; pass --rest-port 0 for any free port") from exc

    def queue_snapshot(self, limit: int = 100) -> list[dict]:
        """Queued jobs in scheduling order, for REST ``/api/v1/scheduler/queue``."""
        return [{"job_id": j.job_id, "name": j.name, "priority": j.priority, "attempt": j.attempt,
                 "submitted_at": j.submitted_at, "position": i + 1, "waiting_reason": j.waiting_reason}
                for i, j in enumerate(self.state.queued(limit))]

    async def stop(self) -> None:
        """Stop every part, in order. Each step has a deadline (``STOP_STEP_S``): one that
        passes it is logged by name and left behind, so a stop always ends."""
        central_metrics.detach(self)
        if self._standard is not None:
            await _step("health and reflection", self._standard.stop())
        if self._grpc is not None:
            await _step("gRPC server", self._grpc.stop(grace=1.0))
        if self.leadership is not None:
            self._leadership_task.cancel()
            await _step("lease renewal", asyncio.gather(self._leadership_task, return_exceptions=True))
            await _step("lease release", self.leadership.stop())  # another central takes over now, not a TTL later
        if self.scheduler is not None:
            await _step("scheduler", self.scheduler.stop())
        for task in self._tasks:
            task.cancel()
        await _step("background tasks", asyncio.gather(*self._tasks, return_exceptions=True))
        self._tasks.clear()
        if self._rest_runner is not None:
            await _step("REST server", self._rest_runner.cleanup(), STOP_STEP_S + 15)  # its own grace is 5 + 5 s
        if getattr(self, "deployments", None) is not None:
            await _step("deployments", self.deployments.close())
        if self.liveness is not None:
            await _step("liveness", self.liveness.stop())
        if self.dispatcher is not None:
            await _step("dispatcher", self.dispatcher.close())
        if self._projection is not None:
            await _step("projection", _close_projection(self._projection))
        if self.bus is not None:
            await _step("NATS connection", self.bus.close())
        if self.nats is not None and self.nats.owned:
            await _step("embedded nats-server", asyncio.to_thread(self.nats.stop))


STOP_STEP_S = 15.0


async def _step(name: str, work, timeout: float = STOP_STEP_S) -> None:
    """Await one step of a stop for at most ``timeout`` s; past it, say which and go on."""
    task = asyncio.ensure_future(work)
    done, _ = await asyncio.wait([task], timeout=timeout)
    if not done:
        task.cancel()
        log.warning("central stop: %s did not finish within %.0f s; stopping the rest", name, timeout)
        return
    if not task.cancelled() and task.exception() is not None:
        log.warning("central stop: %s failed: %s", name, task.exception())


async def _close_projection(projection) -> None:
    """Close the DuckDB file once the projector's last batch (in a thread) is written; a
    user's query still running in the pool holds the connection a moment longer."""
    for _ in range(200):
        try:
            return await asyncio.to_thread(projection.close)
        except duckdb.ResourceInUseException:
            await asyncio.sleep(0.05)
    await asyncio.to_thread(projection.close)
