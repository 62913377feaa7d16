"""gRPC calls counted by service, method and status code, for Prometheus.

    handled = grpc_handled_counter(registry)           # once per registry
    server = grpc.aio.server(interceptors=[CallCounter(handled), ..., DecodeGuard()])

The counter is ``grpc_server_handled_total{grpc_type, grpc_service, grpc_method,
grpc_code}``, the names and labels of go-grpc-prometheus and its ports, so existing
dashboards and alerts read it unchanged. A call is counted once, when it ends: OK when
the method returned, the code it aborted with or set (``context.abort``,
``context.set_code``), CANCELLED when the client went away, UNKNOWN when it raised.
A call of a method the server does not have (grpc answers UNIMPLEMENTED) is not
counted: its name comes from the caller and would grow the label set without bound.

Put it first: it then counts what the interceptors after it answer too (the replay gate's
UNAVAILABLE, DecodeGuard's INVALID_ARGUMENT). Central and the node both import it from here.
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Any, Callable

import grpc
from prometheus_client import CollectorRegistry, Counter

from protos.decode_guard import HANDLER_MAKERS, handler_kind

__all__ = ["CallCounter", "grpc_handled_counter"]

_OK = grpc.StatusCode.OK.name  # the label value of a call that returned


def grpc_handled_counter(registry: CollectorRegistry) -> Counter:
    """``grpc_server_handled_total`` on ``registry`` (create it once per registry)."""
    return Counter(
        "grpc_server_handled_total", "gRPC calls completed on the server, by method and status code",
        ["grpc_type", "grpc_service", "grpc_method", "grpc_code"], registry=registry,
    )


class CallCounter(grpc.aio.ServerInterceptor):
    """Counts each call by its final code. The handler it wraps is kept per method (and
    made again only when the interceptors after it hand out another one), and each
    method's labelled counters are looked up once per code, so a call pays two
    dictionary look-ups and one increment."""

    def __init__(self, handled: Counter) -> None:
        self._handled = handled
        self._wrapped: dict[str, tuple[Any, Any]] = {}  # method -> (inner handler, counted handler)

    async def intercept_service(self, continuation: Callable, details: grpc.HandlerCallDetails) -> Any:
        handler = await continuation(details)
        if handler is None:
            return None
        entry = self._wrapped.get(details.method)
        if entry is None or entry[0] is not handler:
            entry = self._wrapped[details.method] = (handler, self._wrap(handler, details.method))
        return entry[1]

    def _wrap(self, handler: Any, method: str) -> Any:
        kind = handler_kind(handler)
        behaviour = getattr(handler, kind)
        service, _, name = method.lstrip("/").rpartition("/")
        labels = _Labels(self._handled, kind, service, name)
        if inspect.isasyncgenfunction(behaviour):
            counted = _counted_stream(behaviour, labels)
        elif inspect.iscoroutinefunction(behaviour):
            counted = _counted_unary(behaviour, labels)
        else:
            return handler  # a synchronous behaviour (none of ours: DecodeGuard makes them async)
        make = HANDLER_MAKERS[kind]
        return make(counted, request_deserializer=handler.request_deserializer,
                    response_serializer=handler.response_serializer)


_TYPES = {"unary_unary": "unary", "unary_stream": "server_stream", "stream_unary": "client_stream",
          "stream_stream": "bidi_stream"}


class _Labels:
    """One method's counters, one per status code, made on first use."""

    __slots__ = ("_handled", "_type", "_service", "_method", "_by_code")

    def __init__(self, handled: Counter, kind: str, service: str, method: str) -> None:
        self._handled = handled
        self._type = _TYPES[kind]
        self._service = service
        self._method = method
        self._by_code: dict[str, Any] = {}

    def count(self, code: str) -> None:
        child = self._by_code.get(code)
        if child is None:
            child = self._by_code[code] = self._handled.labels(self._type, self._service, self._method, code)
        child.inc()


def _code(context: grpc.aio.ServicerContext, failure: BaseException | None) -> str:
    """The call's final status code as its name."""
    if isinstance(failure, (asyncio.CancelledError, GeneratorExit)):  # the client went away
        return "CANCELLED"
    code = context.code()
    if code is not None:
        return code.name if isinstance(code, grpc.StatusCode) else grpc.StatusCode(code).name
    return "UNKNOWN" if failure is not None else _OK


def _counted_unary(behaviour: Callable, labels: _Labels) -> Callable:
    async def counted(request, context):
        try:
            response = await behaviour(request, context)
        except BaseException as exc:
            labels.count(_code(context, exc))
            raise
        labels.count(_code(context, None))
        return response

    return counted


def _counted_stream(behaviour: Callable, labels: _Labels) -> Callable:
    async def counted(request, context):
        try:
            async for response in behaviour(request, context):
                yield response
        except BaseException as exc:
            labels.count(_code(context, exc))
            raise
        labels.count(_code(context, None))

    return counted
