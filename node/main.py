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
import signal
import sys
from pathlib import Path

import grpc

from bus.loop import run as run_loop
from node.agent import Agent, Backoff, RegistrationRefused
from node.artifacts import ArtifactStore
from node.config import ConfigError, NodeConfig, parse_config
from node.executor import Executor
from node.metrics import MetricsHistory, default_slots, detect_devices
from node.reporter import Reporter
from node.service import NodeServicer, add_idle_services
from node.serving import Serving
from node.serving.telemetry import StatsPublisher
from protos import node_pb2_grpc
from protos.decode_guard import DecodeGuard

__all__ = ["Node", "banner", "main", "serve", "write_ready_file"]

log = logging.getLogger("node")


class Node:
    """One compute node. ``await start()``, ``await register()``, ... ``await stop()``."""

    def __init__(self, config: NodeConfig, *, backoff: Backoff | None = None) -> None:
        self.config = config
        self.backoff = backoff
        self.ports: dict[str, int] = {}
        self._servers: dict[str, grpc.aio.Server] = {}
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
        for name, port in (("node", cfg.node_port), ("deploy", cfg.deploy_port), ("terminal", cfg.terminal_port)):
            server = grpc.aio.server(interceptors=[DecodeGuard()], options=_MESSAGE_LIMITS)
            self.ports[name] = _bind(server, cfg.bind_host, port, name)
            self._servers[name] = server
        self.agent = Agent(
            cfg, node_port=self.ports["node"], devices=self.devices, slots=self.slots, metrics=self.metrics,
            jobs=lambda: (self.executor.active_jobs(), self.executor.free_slots),
            cancel=lambda job_id: self.executor.cancel(job_id), backoff=self.backoff,
        )
        self.reporter = Reporter(
            self.agent, self.store, cancel=lambda job_id: self.executor.cancel(job_id), backoff=self.backoff,
        )
        await self.reporter.start()
        self.executor = Executor(
            self.slots, self.reporter, data_roots=cfg.data_roots, fetch_dataset=self.store.get_dataset_blocking,
            fetch_object=self.store.get_uri_blocking, checkpoint_every=cfg.checkpoint_every,
        )
        servicer = NodeServicer(
            executor=self.executor, metrics=self.metrics,
            node_id=lambda: self.agent.node_id, session_token=lambda: self.agent.session_token,
        )
        node_pb2_grpc.add_NodeServiceServicer_to_server(servicer, self._servers["node"])
        self.serving_stats = StatsPublisher(cfg.nats_url, lambda: self.agent.node_id)
        self.serving = Serving(
            fetch=self.store.get_uri, model_roots=cfg.model_roots, api_key=cfg.api_key,
            session_token=lambda: self.agent.session_token, node_id=lambda: self.agent.node_id,
            public_host=cfg.public_host, on_window=self.serving_stats,
        )
        self.serving.add_to(self._servers["deploy"])
        self.serving.add_to(self._servers["node"])  # central controls deployments at the endpoint it knows
        self.serving.grpc_port = self.ports["deploy"]
        add_idle_services(None, self._servers["terminal"])
        for server in self._servers.values():
            await server.start()
        self.ports["infer_http"] = await self.serving.start_http(cfg.bind_host, cfg.http_port)

    async def register(self) -> None:
        """Register (retrying while central is away), then heartbeat in the background."""
        await self.agent.register()
        self._agent_task = asyncio.create_task(self.agent.run(), name="node-agent")
        if self.config.ready_file:
            write_ready_file(self.config.ready_file, self.ready_info())

    @property
    def node_id(self) -> str:
        return self.agent.node_id

    def endpoint(self, name: str) -> str:
        host = self.config.public_host
        return f"[{host}]:{self.ports[name]}" if ":" in host else f"{host}:{self.ports[name]}"

    def ready_info(self) -> dict[str, object]:
        return {
            "node_id": self.node_id, "node_service": self.endpoint("node"), "deploy": self.endpoint("deploy"),
            "terminal": self.endpoint("terminal"), "infer_http": f"http://{self.endpoint('infer_http')}",
            "pid": os.getpid(),
        }

    async def stop(self, grace: float = 5.0) -> None:
        """Stop taking work, stop running jobs, let their reports out for up to ``grace`` s."""
        await self.serving.stop()  # answers the inference requests already accepted
        await self.serving_stats.close()
        await asyncio.gather(*(s.stop(0.5) for s in self._servers.values()))
        self.executor.stop_all()
        await asyncio.to_thread(self.executor.join, grace)
        if not await self.reporter.drain(grace):
            log.warning("stopping with reports of %d job(s) undelivered", self.reporter.pending())
        if self._agent_task is not None:
            self._agent_task.cancel()
            await asyncio.gather(self._agent_task, return_exceptions=True)
        await self.reporter.close()
        await self.agent.close()
        await self.store.close()


# inference requests carry batches (a 256 x 4096 float32 batch is 4 MiB, gRPC's default limit)
_MESSAGE_LIMITS = [("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)]


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
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(info, indent=2) + "\n")
    os.replace(tmp, path)


def banner(node: Node) -> str:
    devices = ", ".join(f"{d.kind} ({d.name})" for d in node.devices)
    return "\n".join([
        f"CyxWiz node {node.node_id} is ready",
        f"  node service:  {node.endpoint('node')}",
        f"  deployment:    {node.endpoint('deploy')}",
        f"  inference:     http://{node.endpoint('infer_http')}",
        f"  terminal:      {node.endpoint('terminal')}",
        f"  central:       {node.config.central}",
        f"  object store:  {node.config.nats_url}",
        f"  devices:       {devices}; slots: {node.slots}",
        "Press Ctrl+C to stop.",
    ])


async def serve(config: NodeConfig) -> int:
    """Run a node until SIGINT/SIGTERM; the process's exit status."""
    from node.trainer import enable_compilation_cache

    enable_compilation_cache(config.home / "jax-cache", min_compile_seconds=0.5)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    node = Node(config)
    await node.start()
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
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = parse_config(argv)
        return run_loop(serve(config))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

