"""Serving on a node, wired: the deployments, their gRPC services on the deploy port
(50052), the HTTP inference port (8082) and, with ``processes`` > 0, the serving
processes that answer inference on the deploy port beside the node
(``node.serving.processes``). ``node/main.py`` builds one of these."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from pathlib import Path

import grpc

from node.serving.access import Access
from node.serving.deployments import Deployment, Deployments, Fetch
from node.serving.grpc_api import DeploymentServicer, InferenceServicer
from node.serving.http_api import HttpApi, start_http
from node.serving.oip_grpc import OipServicer, add_to_server as add_oip_to_server
from node.serving.processes import ServingProcesses
from node.serving.stats import Window
from protos import deployment_pb2_grpc, inference_pb2_grpc

__all__ = ["Serving"]

log = logging.getLogger(__name__)


class Serving:
    def __init__(
        self, *, fetch: Fetch, model_roots: tuple[Path, ...], api_key: str | None,
        session_token: Callable[[], str | None] = lambda: None, node_id: Callable[[], str] = lambda: "",
        public_host: str = "127.0.0.1", on_window: Callable[[Deployment, Window], None] | None = None,
        processes: int = 0,
    ) -> None:
        self.processes = (
            ServingProcesses(processes, model_roots=model_roots, api_key=api_key, session_token=session_token)
            if processes > 0 else None
        )
        if self.processes is not None:
            fetch = self.processes.staging_fetch(fetch)
        self.deployments = Deployments(fetch=fetch, model_roots=model_roots, on_window=on_window, gate=self.processes)
        if self.processes is not None:
            self.processes.deployments = self.deployments
        self.access = Access(api_key, session_token)
        self.node_id = node_id
        self.public_host = public_host
        self.http_port = 0
        self.grpc_port = 0  # the deploy port, once bound (named in deployments' config.port)
        self._runner = None
        self._roller: asyncio.Task | None = None

    def endpoint_url(self) -> str:
        host = f"[{self.public_host}]" if ":" in self.public_host else self.public_host
        return f"http://{host}:{self.http_port}"

    def add_to(self, server: grpc.aio.Server) -> None:
        """DeploymentService, InferenceService and the OIP's GRPCInferenceService on ``server``."""
        deployment_pb2_grpc.add_DeploymentServiceServicer_to_server(
            DeploymentServicer(self.deployments, self.access, node_id=self.node_id, endpoint_url=self.endpoint_url,
                               grpc_port=lambda: self.grpc_port),
            server,
        )
        inference_pb2_grpc.add_InferenceServiceServicer_to_server(InferenceServicer(self.deployments, self.access), server)
        add_oip_to_server(OipServicer(self.deployments, self.access), server)

    def add_processes_to(self, server: grpc.aio.Server) -> None:
        """The serving processes' private socket on the deploy server (bound with SO_REUSEPORT)."""
        if self.processes is not None:
            self.processes.add_to(server)

    async def start_processes(self, host: str, port: int) -> None:
        """Start the serving processes on the deploy port ``host:port``, once the deploy server runs."""
        if self.processes is not None:
            await self.processes.start(host, port)

    async def start_http(self, host: str, port: int) -> int:
        self._runner, self.http_port = await start_http(HttpApi(self.deployments, self.access).app(), host, port)
        self._roller = asyncio.create_task(self._roll(), name="serving-windows")
        return self.http_port

    async def _roll(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            try:
                self.deployments.roll_windows()
            except Exception:  # a telemetry hook failing must not stop the windows
                log.exception("closing serving windows failed")

    async def stop(self) -> None:
        """Stop every deployment (answering accepted requests), then the HTTP server."""
        await self.deployments.close()
        if self.processes is not None:
            await self.processes.close()
        if self._roller is not None:
            self._roller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._roller
        if self._runner is not None:
            await self._runner.cleanup()
