"""Central's gRPC port answers while it replays the event stream, but only health and
reflection: every other call gets UNAVAILABLE (503, retry) until the replay is done.

Central listens before it replays, so probes see NOT_SERVING (``grpc.health.v1``) rather
than a refused connection, and an answer from its state is never one folded from half the
history. Clients and nodes retry UNAVAILABLE as they retry an unreachable central.
"""

from __future__ import annotations

from typing import Any, Callable

import grpc

from events.errors import answer_for
from protos.decode_guard import HANDLER_MAKERS, handler_kind
from protos.standard_services import HEALTH_SERVICE, REFLECTION_SERVICE

__all__ = ["ReplayGate"]

_ALWAYS_OPEN = (f"/{HEALTH_SERVICE}/", f"/{REFLECTION_SERVICE}/")
_UNAVAILABLE = grpc.StatusCode[answer_for(503).grpc]


class ReplayGate(grpc.aio.ServerInterceptor):
    """Closed until :meth:`open`; open, a call pays one attribute test."""

    def __init__(self, progress: Callable[[], str] = lambda: "") -> None:
        """``progress()`` says how far the replay is, for the refusal's message."""
        self.is_open = False
        self.progress = progress
        self._refusals: dict[str, Any] = {}

    def open(self) -> None:
        self.is_open = True

    async def intercept_service(self, continuation: Callable, details: grpc.HandlerCallDetails) -> Any:
        if self.is_open or details.method.startswith(_ALWAYS_OPEN):
            return await continuation(details)
        handler = await continuation(details)
        if handler is None:
            return None  # not a method of ours: grpc answers UNIMPLEMENTED
        refusal = self._refusals.get(details.method)
        if refusal is None:
            refusal = self._refusals[details.method] = _refusal(handler, self)
        return refusal


def _refusal(handler: Any, gate: ReplayGate) -> Any:
    """A handler of the same shape as ``handler`` that answers UNAVAILABLE."""

    async def refuse(request, context):
        done = gate.progress()
        await context.abort(_UNAVAILABLE, "503: central is replaying its event stream"
                            f"{f' ({done})' if done else ''}; retry in a moment")

    async def refuse_stream(request, context):
        await refuse(request, context)
        yield  # never reached: makes this an async generator, as a streamed answer needs

    behaviour = refuse_stream if handler.response_streaming else refuse
    make = HANDLER_MAKERS[handler_kind(handler)]
    return make(behaviour, request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)
