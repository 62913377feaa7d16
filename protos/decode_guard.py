"""Bytes that are not the request message answer INVALID_ARGUMENT, on every gRPC server.

    server = grpc.aio.server(interceptors=[DecodeGuard()])

Without it grpc logs a traceback ("Exception deserializing request!") and answers
UNKNOWN or INTERNAL for a request whose bytes do not parse. The guard wraps each method
handler's ``request_deserializer`` so a parse failure becomes a ``Garbage`` value, and the
method's behaviour so that value ends the call with ``INVALID_ARGUMENT`` and one line
naming the method and the message type, before the servicer sees anything. It works for
unary and streamed requests alike (a garbage message in a stream ends that stream; a
stream servicer must read its requests from the iterator it is given, not
``context.read()``, for the check to see them).
Central and the node both import it from here (neither imports the other).
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

import grpc

__all__ = ["HANDLER_MAKERS", "DecodeGuard", "Garbage", "handler_kind"]

# a method handler's kind (its attribute holding the behaviour) -> grpc's maker of one;
# an interceptor that wraps a behaviour makes its new handler with the same kind
HANDLER_MAKERS = {
    "unary_unary": grpc.unary_unary_rpc_method_handler,
    "unary_stream": grpc.unary_stream_rpc_method_handler,
    "stream_unary": grpc.stream_unary_rpc_method_handler,
    "stream_stream": grpc.stream_stream_rpc_method_handler,
}


def handler_kind(handler: Any) -> str:
    """The key of ``HANDLER_MAKERS`` for ``handler``: also its attribute holding the behaviour."""
    return ("stream" if handler.request_streaming else "unary") + "_" + ("stream" if handler.response_streaming else "unary")


class Garbage:
    """What the wrapped deserializer returns for bytes it could not parse."""

    __slots__ = ("message",)

    def __init__(self, message: str) -> None:
        self.message = message


class DecodeGuard(grpc.aio.ServerInterceptor):
    """Wraps each method's handler once (the wrapped one is kept per method): a call pays
    one dictionary look-up here, not a new handler."""

    def __init__(self) -> None:
        self._wrapped: dict[str, Any] = {}

    async def intercept_service(self, continuation: Callable, details: grpc.HandlerCallDetails) -> Any:
        wrapped = self._wrapped.get(details.method)
        if wrapped is None:
            handler = await continuation(details)
            if handler is None:
                return None  # no such method: grpc answers UNIMPLEMENTED
            wrapped = self._wrapped[details.method] = self._wrap(handler, details.method)
        return wrapped

    @staticmethod
    def _wrap(handler: Any, method: str) -> Any:
        if handler.request_deserializer is None:
            return handler
        kind = handler_kind(handler)
        behaviour = getattr(handler, kind)
        is_async = inspect.iscoroutinefunction(behaviour) or inspect.isasyncgenfunction(behaviour)
        if handler.request_streaming and not is_async:
            return handler  # a sync stream reader (none of ours) is left as grpc runs it
        make = HANDLER_MAKERS[kind]
        return make(_guarded(behaviour, handler.request_streaming, handler.response_streaming),
                    request_deserializer=_deserializer(handler.request_deserializer, method),
                    response_serializer=handler.response_serializer)


def _deserializer(parse: Callable[[bytes], Any], method: str) -> Callable[[bytes], Any]:
    def deserialize(raw: bytes) -> Any:
        try:
            return parse(raw)
        except Exception as exc:  # protobuf's DecodeError, or whatever a custom parser raises
            kind = getattr(getattr(parse, "__self__", None), "DESCRIPTOR", None)
            name = kind.full_name if kind is not None else "request"
            return Garbage(f"{method}: the {len(raw)} bytes sent are not a valid {name} message "
                           f"({type(exc).__name__}); send the message the method takes")

    return deserialize


async def _refuse(request: Any, context: grpc.aio.ServicerContext) -> None:
    if isinstance(request, Garbage):
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)


def _guarded(behaviour: Callable, request_streaming: bool, response_streaming: bool) -> Callable:
    """``behaviour`` behind the Garbage check; async whatever ``behaviour`` is, in the
    shape grpc expects for the method (an async generator when responses stream)."""

    async def checked(requests, context):
        async for request in requests:
            await _refuse(request, context)
            yield request

    def call(request, context):
        return behaviour(checked(request, context) if request_streaming else request, context)

    if response_streaming:
        async def stream_out(request, context):
            if not request_streaming:
                await _refuse(request, context)
            result = call(request, context)
            if inspect.isasyncgen(result):
                async for response in result:
                    yield response
            elif inspect.isawaitable(result):  # writes its responses with context.write
                await result
            else:
                for response in result:  # a sync generator
                    yield response

        return stream_out

    if not request_streaming and inspect.iscoroutinefunction(behaviour):
        async def unary_direct(request, context):  # the common case, kept short: it runs on every call
            if type(request) is Garbage:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)
            return await behaviour(request, context)

        return unary_direct

    async def unary_out(request, context):
        if not request_streaming:
            await _refuse(request, context)
        result = call(request, context)
        return await result if inspect.isawaitable(result) else result

    return unary_out
