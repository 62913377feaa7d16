"""gRPC health checking (``grpc.health.v1.Health``) and server reflection on a server.

    recorder = ServiceRecorder(server)          # hand this to the add_*_to_server calls
    job_pb2_grpc.add_JobServiceServicer_to_server(JobService(...), recorder)
    standard = await StandardServices.add_to(recorder)  # Health and reflection, naming what was added
    await server.start()
    await standard.serve()                      # NOT_SERVING until then; .stop() at shutdown

Health answers for the whole server (service ``""``) and for each service by its full
name (``cyxwiz.protocol.JobService``), as grpc-health-probe, Kubernetes' gRPC probes and
load balancers ask; every status starts NOT_SERVING. Reflection lists the services put
on the server (and health and reflection themselves), so ``grpcurl`` works without the
``.proto`` files. Both are grpcio's own (grpcio-health-checking, grpcio-reflection).

The server is asked for nothing it does not offer publicly: the recorder stands in for it
while services are added and keeps the name each generated ``add_*_to_server`` gives
``add_registered_method_handlers`` (or a ``grpc.ServiceRpcHandler`` gives itself). Central and the node both import it from here.
"""

from __future__ import annotations

from typing import Any, Iterable

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import SERVICE_NAME as HEALTH_SERVICE
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

__all__ = ["HEALTH_SERVICE", "REFLECTION_SERVICE", "ServiceRecorder", "StandardServices"]

REFLECTION_SERVICE = reflection.SERVICE_NAME
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class ServiceRecorder:
    """A ``grpc.aio.Server`` as the generated ``add_*_to_server`` functions see it, that
    remembers the full name of each service added (everything else goes to the server)."""

    def __init__(self, server: grpc.aio.Server) -> None:
        self.server = server
        self.services: list[str] = []

    def add_registered_method_handlers(self, service_name: str, method_handlers: dict) -> None:
        self._record(service_name)
        self.server.add_registered_method_handlers(service_name, method_handlers)

    def add_generic_rpc_handlers(self, generic_rpc_handlers: Iterable[Any]) -> None:
        generic_rpc_handlers = tuple(generic_rpc_handlers)
        for handler in generic_rpc_handlers:
            if isinstance(handler, grpc.ServiceRpcHandler):  # one service's handler names it
                self._record(handler.service_name())
        self.server.add_generic_rpc_handlers(generic_rpc_handlers)

    def _record(self, service_name: str) -> None:
        if service_name not in self.services:
            self.services.append(service_name)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.server, name)


class StandardServices:
    """Health and reflection on the server behind a recorder, for the services added to
    it so far. Make one with :meth:`add_to`: every status is NOT_SERVING until :meth:`serve`."""

    def __init__(self, services: Iterable[str]) -> None:
        self.services = tuple(services)
        self.health = health_aio.HealthServicer()

    @classmethod
    async def add_to(cls, recorder: ServiceRecorder) -> "StandardServices":
        standard = cls(recorder.services)
        health_pb2_grpc.add_HealthServicer_to_server(standard.health, recorder.server)
        reflection.enable_server_reflection((*standard.services, HEALTH_SERVICE, REFLECTION_SERVICE), recorder.server)
        await standard.pause()  # grpcio's servicer starts with "" SERVING
        return standard

    async def serve(self, *services: str) -> None:
        """SERVING for ``services`` (default: the server and every service)."""
        await self._set(services or ("", *self.services), SERVING)

    async def pause(self, *services: str) -> None:
        """NOT_SERVING for ``services`` (default: the server and every service)."""
        await self._set(services or ("", *self.services), NOT_SERVING)

    async def stop(self) -> None:
        """NOT_SERVING for good: the server is shutting down."""
        await self.health.enter_graceful_shutdown()

    async def _set(self, services: Iterable[str], status: int) -> None:
        for name in services:
            if name not in ("", *self.services):
                raise ValueError(f"health: {name!r} is not a service of this server ({', '.join(self.services)})")
            await self.health.set(name, status)
