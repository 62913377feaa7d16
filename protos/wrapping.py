"""Method-handler wrappers applied once, when a service is added, instead of per call.

    server = wrap_handlers(grpc.aio.server(options=...), CallCounter(handled), DecodeGuard())

A ``grpc.aio.ServerInterceptor`` runs on every call: grpc awaits each interceptor's
``intercept_service`` before the handler; the node's two cost a small request's server
about 20 of its ~360 µs of CPU (BENCHMARKS.md, serving). Where what an interceptor does depends only
on the method (the decode guard, the call counter), the wrapped handler can be made once:
``wrap_handlers`` makes the server wrap every handler added to it, through the generated
``add_*_to_server`` functions or by hand, with ``wrapper.wrap(handler, method)`` of each
wrapper, the first outermost (the order of ``interceptors=[...]``). A method the server
does not have is answered UNIMPLEMENTED by grpc, as before, and is not counted.
Interceptors whose answer changes over time (central's replay gate) stay interceptors.
"""

from __future__ import annotations

from typing import Any, Iterable, Protocol

import grpc

__all__ = ["HandlerWrapper", "wrap_handlers"]


class HandlerWrapper(Protocol):
    def wrap(self, handler: Any, method: str) -> Any: ...


def wrap_handlers(server: grpc.aio.Server, *wrappers: HandlerWrapper) -> grpc.aio.Server:
    """``server``, made to wrap each method handler added from now on (add services after)."""
    add_generic, add_registered = server.add_generic_rpc_handlers, server.add_registered_method_handlers

    def wrap(handler: Any, method: str) -> Any:
        for wrapper in reversed(wrappers):
            handler = wrapper.wrap(handler, method)
        return handler

    def add_generic_rpc_handlers(generic_rpc_handlers: Iterable[Any]) -> None:
        add_generic(tuple(_Wrapped(h, wrap) for h in generic_rpc_handlers))

    def add_registered_method_handlers(service_name: str, method_handlers: dict) -> None:
        add_registered(service_name, {name: wrap(handler, f"/{service_name}/{name}")
                                      for name, handler in method_handlers.items()})

    server.add_generic_rpc_handlers = add_generic_rpc_handlers
    server.add_registered_method_handlers = add_registered_method_handlers
    return server


class _Wrapped(grpc.GenericRpcHandler):
    """A generic handler whose handlers come out wrapped, each made once per method."""

    def __init__(self, inner: Any, wrap) -> None:
        self._inner, self._wrap = inner, wrap
        self._made: dict[str, Any] = {}  # only methods the inner handler has: unknown names are not kept

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> Any:
        method = handler_call_details.method
        made = self._made.get(method)
        if made is None:
            handler = self._inner.service(handler_call_details)
            if handler is None:
                return None  # not this handler's method (grpc asks the next one, or answers UNIMPLEMENTED)
            made = self._made[method] = self._wrap(handler, method)
        return made
