"""A serving process hands every call it does not answer itself to the node, unchanged.

The method's kind (unary or streamed, each way) comes from the protobuf descriptor pool,
so any service the node registers (DeploymentService, health, reflection) is forwarded as
bytes, with the caller's metadata (its ``authorization`` included) and deadline; the
node's status, details and trailing metadata come back as they are. A method no loaded
``.proto`` names is not handled (UNIMPLEMENTED, as on the node).
"""

from __future__ import annotations

import grpc
from google.protobuf import descriptor_pool

from protos.decode_guard import HANDLER_MAKERS

__all__ = ["Forward"]

# headers grpc sets itself on the outgoing call
_OWN = frozenset({"user-agent", "content-type", "te", "grpc-timeout", "grpc-encoding", "grpc-accept-encoding"})


class Forward(grpc.GenericRpcHandler):
    def __init__(self, channel: grpc.aio.Channel, *, local: frozenset[str]) -> None:
        self.channel = channel
        self.local = local  # services this process answers itself

    def service(self, handler_call_details):
        method = handler_call_details.method
        service_name, _, name = method[1:].rpartition("/")
        if not service_name or service_name in self.local:
            return None
        try:
            desc = descriptor_pool.Default().FindServiceByName(service_name).FindMethodByName(name)
        except KeyError:
            return None
        if desc is None:
            return None
        # "unary_stream" etc.: the name of grpc's handler maker and of the channel's callable alike
        kind = ("stream" if desc.client_streaming else "unary") + "_" + ("stream" if desc.server_streaming else "unary")
        call = getattr(self.channel, kind)(method)
        return HANDLER_MAKERS[kind](_streamed(call) if desc.server_streaming else _single(call))


def _single(call):
    """A behaviour answering one message: the node's (a request or a request stream in)."""

    async def forward(request, context):
        try:
            return await call(request, **_call_args(context))
        except grpc.aio.AioRpcError as exc:
            await _abort(context, exc)

    return forward


def _streamed(call):
    """A behaviour answering a stream: the node's, message by message."""

    async def forward(request, context):
        try:
            async for response in call(request, **_call_args(context)):
                yield response
        except grpc.aio.AioRpcError as exc:
            await _abort(context, exc)

    return forward


def _call_args(context) -> dict:
    metadata = tuple((k, v) for k, v in (context.invocation_metadata() or ()) if k not in _OWN and not k.startswith(":"))
    return {"metadata": metadata, "timeout": context.time_remaining()}


async def _abort(context, exc: grpc.aio.AioRpcError) -> None:
    trailing = exc.trailing_metadata()
    if trailing:
        context.set_trailing_metadata(tuple(trailing))
    code = exc.code()
    if code == grpc.StatusCode.OK:  # cannot abort with OK; the call broke after it
        code = grpc.StatusCode.UNAVAILABLE
    await context.abort(code, exc.details() or "")
