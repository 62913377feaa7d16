"""The node process: its servers, executor, reporter and agent, wired together.

``python -m node [flags]`` (or ``cyxwiz node``) starts the servers, registers with
central (retrying while central is away), prints a ready banner, writes the
``--ready-file`` and runs until SIGINT/SIGTERM. Tests use :class:`Node` in-process.

On stop: the servers stop taking work, running jobs stop at their next step and are
reported as failed and retryable (central runs them elsewhere from their last
checkpoint), pending reports get a few seconds to arrive, then everything closes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
import sys
from pathlib import Path

import grpc

from bus.files import write_atomic
from bus.loop import run as run_loop
from node.agent import Agent, Backoff, RegistrationRefused
from node.artifacts import ArtifactStore
from node.config import ConfigError, NodeConfig, config_from, node_command
from node.executor import Executor, worker_env
from node.exporter import NodeCollector, NodeExporter
from node.metrics import MetricsHistory, default_slots, detect_devices
from node.reporter import Reporter
from node.service import NodeServicer
from node.serving import Serving
from node.serving.deployments import ACTIVE as SERVING_ACTIVE
from node.serving.errors import NotFound as ServingNotFound
from node.serving.telemetry import StatsPublisher
from node.terminal import AuditLog, TerminalServicer, TerminalSettings
from node.terminal.environment import account
from node.throughput import Throughput
from protos import deployment_pb2, deployment_pb2_grpc, node_pb2, node_pb2_grpc
from protos.call_metrics import CallCounter
from protos.decode_guard import DecodeGuard
from protos.standard_services import ServiceRecorder, StandardServices

__all__ = ["Node", "banner", "main", "serve", "terminal_mode", "write_ready_file"]

log = logging.getLogger("node")
# At most one checkpoint per this many seconds of training: a job loses at most one epoch
# or this much work, and fast epochs of a big model do not write a store-sized checkpoint
# every few milliseconds (a job shorter than this has none; its model is stored). A job's
# hyperparameter checkpoint_interval_s overrides it.
CHECKPOINT_INTERVAL_S = 5.0
NODE_SERVICE = node_pb2.DESCRIPTOR.services_by_name["NodeService"].full_name
TERMINAL_SERVICE = deployment_pb2.DESCRIPTOR.services_by_name["TerminalService"].full_name


class Node:
    """One compute node. ``await start()``, ``await register()``, ... ``await stop()``."""

    def __init__(
        self, config: NodeConfig, *, backoff: Backoff | None = None, compilation_cache_dir: Path | None = None,
    ) -> None:
        self.config = config
        self.backoff = backoff
        self.compilation_cache_dir = compilation_cache_dir
        self.ports: dict[str, int] = {}
        self._servers: dict[str, grpc.aio.Server] = {}
        self._recorders: dict[str, ServiceRecorder] = {}
        self.standard: dict[str, StandardServices] = {}
        self.exporter: NodeExporter | None = None
        self._agent_task: asyncio.Task | None = None

    async def start(self) -> None:
        """Detect devices, bind the three servers and start serving (not registered yet)."""
        cfg = self.config
        self.devices = detect_devices()
        self.slots = cfg.slots or default_slots(self.devices)
        self.metrics = MetricsHistory()
        self.metrics.record()
        self.store = ArtifactStore(cfg.nats_url, credentials=cfg.nats_creds)
        await self.store.start()
        self.exporter = NodeExporter()
        for name, port in (("node", cfg.node_port), ("deploy", cfg.deploy_port), ("terminal", cfg.terminal_port)):
            options = _MESSAGE_LIMITS + ([("grpc.so_reuseport", 1)] if name == "deploy" and cfg.serving_processes else [])
            server = grpc.aio.server(interceptors=[CallCounter(self.exporter.grpc_handled), DecodeGuard()],
                                     options=options)
            self.ports[name] = _bind(server, self._bind_host(name), port, name)
            self._servers[name] = server
            self._recorders[name] = ServiceRecorder(server)
        self.agent = Agent(
            cfg, node_port=self.ports["node"], devices=self.devices, slots=self.slots, metrics=self.metrics,
            jobs=lambda: (self.executor.active_jobs(), self.executor.free_slots),
            cancel=lambda job_id: self.executor.cancel(job_id), backoff=self.backoff,
        )
        self.reporter = Reporter(
            self.agent, self.store, cancel=lambda job_id: self.executor.cancel(job_id), backoff=self.backoff,
        )
        await self.reporter.start()
        self.throughput = Throughput(self.reporter)
        self.executor = Executor(
            self.slots, self.throughput, devices=len(self.devices), data_roots=cfg.data_roots,
            fetch_dataset=self.store.get_dataset_blocking,
            dataset_sha256=self.store.dataset_sha256_blocking,
            fetch_object=self.store.get_uri_blocking, checkpoint_every=cfg.checkpoint_every,
            checkpoint_interval_s=CHECKPOINT_INTERVAL_S,
            worker_env=worker_env(self.devices, self.slots), compilation_cache_dir=self.compilation_cache_dir,
        )
        servicer = NodeServicer(
            executor=self.executor, metrics=self.metrics,
            node_id=lambda: self.agent.node_id, session_token=lambda: self.agent.session_token,
        )
        node_pb2_grpc.add_NodeServiceServicer_to_server(servicer, self._recorders["node"])
        self.serving_stats = StatsPublisher(cfg.nats_url, lambda: self.agent.node_id, credentials=cfg.nats_creds)
        self.serving = Serving(
            fetch=self.store.get_uri, model_roots=cfg.model_roots, api_key=cfg.api_key,
            session_token=lambda: self.agent.session_token, node_id=lambda: self.agent.node_id,
            public_host=cfg.public_host, on_window=self.serving_stats, processes=cfg.serving_processes,
        )
        self.serving.add_to(self._recorders["deploy"])
        self.serving.add_to(self._recorders["node"])  # central controls deployments at the endpoint it knows
        self.serving.grpc_port = self.ports["deploy"]
        self.serving.add_processes_to(self._servers["deploy"])
        self._start_terminal()
        self.standard = {name: await StandardServices.add_to(r) for name, r in self._recorders.items()}
        for server in self._servers.values():
            await server.start()
        await self._serve_health()
        try:
            await self.serving.start_processes(self._bind_host("deploy"), self.ports["deploy"])
        except RuntimeError as exc:
            await self.serving.stop()
            raise ConfigError(f"--serving-processes: {exc}") from exc
        self.ports["infer_http"] = await self.serving.start_http(cfg.bind_host, cfg.http_port)
        self.exporter.add(NodeCollector(
            node_id=lambda: self.agent.node_id, name=cfg.name, slots=self.slots,
            active_jobs=self.executor.active_jobs, load=self.metrics, throughput=self.throughput))
        self.ports["metrics"] = await self.exporter.start(cfg.bind_host, cfg.prometheus_port)

    async def _serve_health(self) -> None:
        """Health says SERVING for what answers now: deployments and (when on) the
        terminal; NodeService (50054) once the node is registered (``register``)."""
        await self.standard["deploy"].serve()
        await self.standard["terminal"].serve("")
        if self.config.terminal:
            await self.standard["terminal"].serve(TERMINAL_SERVICE)
        node = self.standard["node"]
        await node.serve(*(name for name in node.services if name != NODE_SERVICE))

    def _bind_host(self, name: str) -> str:
        """With no API key, the terminal listens on loopback only (ARCHITECTURE.md, trust)."""
        if name == "terminal" and self.config.terminal and not self.config.api_key:
            return "::1" if ":" in self.config.bind_host else "127.0.0.1"
        return self.config.bind_host

    def _start_terminal(self) -> None:
        cfg = self.config
        if cfg.terminal and cfg.terminal_user:
            _check_terminal_user(cfg.terminal_user)
        self.terminal_settings = TerminalSettings(
            enabled=cfg.terminal, api_key=cfg.api_key, user=cfg.terminal_user, home=cfg.home,
            idle_timeout_s=cfg.terminal_idle_timeout_s, deployment_dir=self._deployment_dir)
        self.terminal_audit = AuditLog(
            cfg.central, self._terminal_credentials, terminal_port=self.ports["terminal"] if cfg.terminal else 0)
        self.terminal = TerminalServicer(
            self.terminal_settings, node_id=lambda: self.agent.node_id,
            session_token=lambda: self.agent.session_token, audit=self.terminal_audit)
        deployment_pb2_grpc.add_TerminalServiceServicer_to_server(self.terminal, self._recorders["terminal"])
        if cfg.terminal:  # off, every call is refused before anything worth auditing
            self.terminal_audit.start()
            # a keystroke's echo crosses the GIL a few times; with training threads in this
            # process each crossing could wait a whole switch interval (5 ms by default)
            sys.setswitchinterval(min(sys.getswitchinterval(), 0.001))

    def _deployment_dir(self, deployment_id: str) -> Path | None:
        """A deployment's working folder for its terminal (``<home>/deployments/<id>``), or
        None unless the deployment is active on this node."""
        try:
            deployment = self.serving.deployments.get(deployment_id)
        except ServingNotFound:
            return None
        if deployment.status not in SERVING_ACTIVE or not _SAFE_ID.fullmatch(deployment_id):
            return None
        folder = Path(self.config.home).resolve() / "deployments" / deployment_id
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def _terminal_credentials(self) -> tuple[str, str] | None:
        agent = self.agent
        return (agent.node_id, agent.session_token) if agent.registered and agent.session_token else None

    async def register(self) -> None:
        """Register (retrying while central is away), then heartbeat in the background."""
        await self.agent.register()
        await self.standard["node"].serve()
        self.terminal_audit.wake()
        self._agent_task = asyncio.create_task(self.agent.run(), name="node-agent")
        if self.config.ready_file:
            write_ready_file(self.config.ready_file, self.ready_info())

    @property
    def node_id(self) -> str:
        return self.agent.node_id

    def endpoint(self, name: str) -> str:
        host = self.config.public_host
        return f"[{host}]:{self.ports[name]}" if ":" in host else f"{host}:{self.ports[name]}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.endpoint('metrics')}/metrics"

    def ready_info(self) -> dict[str, object]:
        return {
            "node_id": self.node_id, "node_service": self.endpoint("node"), "deploy": self.endpoint("deploy"),
            "terminal": self.endpoint("terminal"), "infer_http": f"http://{self.endpoint('infer_http')}",
            "metrics": self.metrics_url,
            "pid": os.getpid(),
            "serving_processes": self.serving.processes.pids() if self.serving.processes is not None else [],
        }

    async def stop(self, grace: float = 5.0) -> None:
        """Stop taking work, stop running jobs, let their reports out for up to ``grace`` s."""
        for standard in self.standard.values():
            await standard.stop()  # health: NOT_SERVING from here on
        await self.serving.stop()  # answers the inference requests already accepted
        await self.serving_stats.close()
        await asyncio.gather(*(s.stop(0.5) for s in self._servers.values()))
        await self.terminal.close()
        await asyncio.to_thread(self.executor.close, grace)
        if not await self.reporter.drain(grace):
            log.warning("stopping with reports of %d job(s) undelivered", self.reporter.pending())
        if self._agent_task is not None:
            self._agent_task.cancel()
            await asyncio.gather(self._agent_task, return_exceptions=True)
        await self.reporter.close()
        await self.terminal_audit.close()
        await self.agent.close()
        await self.store.close()
        if self.exporter is not None:
            await self.exporter.stop()


# inference requests carry batches (a 256 x 4096 float32 batch is 4 MiB, gRPC's default limit)
_SAFE_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
_MESSAGE_LIMITS = [("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)]


def _check_terminal_user(user: str) -> None:
    try:
        account(user)
    except KeyError:
        raise ConfigError(f"--terminal-user / CYXWIZ_TERMINAL_USER: no user {user!r} on this machine") from None
    if os.geteuid() != 0:
        raise ConfigError("--terminal-user: running shells as another user needs the node to run as root")


def _bind(server: grpc.aio.Server, host: str, port: int, name: str) -> int:
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as exc:
        raise ConfigError(f"{name} service: cannot listen on {address} ({exc}); choose another port (0 = any free)") from exc
    if bound == 0:
        raise ConfigError(f"{name} service: cannot listen on {address}; choose another port (0 = any free)")
    return bound


def write_ready_file(path: Path, info: dict[str, object]) -> None:
    """Write ``info`` as JSON atomically, so a reader never sees half a file."""
    write_atomic(path, json.dumps(info, indent=2) + "\n")


def banner(node: Node) -> str:
    devices = ", ".join(f"{d.kind} ({d.name})" for d in node.devices)
    return "\n".join([
        f"CyxWiz node {node.node_id} is ready",
        f"  node service:  {node.endpoint('node')}",
        f"  deployment:    {node.endpoint('deploy')}",
        f"  inference:     http://{node.endpoint('infer_http')}",
        f"  metrics:       {node.metrics_url} (Prometheus)",
        f"  terminal:      {node.endpoint('terminal')} ({terminal_mode(node.config)})",
        f"  central:       {node.config.central}",
        f"  object store:  {node.config.nats_url}",
        f"  devices:       {devices}; slots: {node.slots}",
        "Press Ctrl+C to stop.",
    ])


def terminal_mode(config: NodeConfig) -> str:
    if not config.terminal:
        return "off; --terminal turns it on"
    who = config.terminal_user or "the node's own user"
    if not config.api_key:
        return (f"ON, loopback only: no API key configured, so any local user may open a shell as {who}; "
                "set --api-key / CYXWIZ_API_KEY to serve it beyond this machine")
    return f"on: API key or a grant from central; shells run as {who}"


async def serve(config: NodeConfig) -> int:
    """Run a node until SIGINT/SIGTERM; the process's exit status."""
    from node.trainer import enable_compilation_cache
    from node.worker import leave_device_memory_to_workers

    leave_device_memory_to_workers()
    enable_compilation_cache(config.home / "jax-cache", min_compile_seconds=0.5)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    node = Node(config, compilation_cache_dir=config.home / "jax-cache")
    await node.start()
    log.info("terminal: %s", terminal_mode(config))
    log.info("node services listening; registering with central at %s", config.central)
    registering = asyncio.create_task(node.register())
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({registering, stopping}, return_when=asyncio.FIRST_COMPLETED)
    status = 0
    if registering.done() and registering.exception() is not None:
        exc = registering.exception()
        hint = "; check --node-token / CYXWIZ_NODE_TOKEN" if isinstance(exc, RegistrationRefused) else ""
        print(f"error: registration failed: {exc}{hint}", file=sys.stderr)
        status = 2
    elif registering.done():
        print(banner(node), flush=True)
        await stop.wait()
    registering.cancel()
    stopping.cancel()
    print("stopping node ...", file=sys.stderr, flush=True)
    await node.stop()
    return status


def main(argv: list[str] | None = None) -> int:
    """``cyxwiz node [flags]``: typer parses the flags (``--help``, usage errors: exit 2)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        node_command(run=_run).main(args=sys.argv[1:] if argv is None else list(argv), prog_name="cyxwiz node")
    except SystemExit as done:
        return done.code if isinstance(done.code, int) else 0
    return 0


def _run(flags: dict[str, object]) -> int:
    try:
        return run_loop(serve(config_from(flags)))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
