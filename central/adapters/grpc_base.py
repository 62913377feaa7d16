"""What central's gRPC servicers share: the error answer (the protocol's ``Error`` and
the gRPC status of its code, with the response carrying the Error serialized in the
trailing metadata ``cyxwiz-error-bin``), paging, bounded text, and ``Services``: the
state, commands, auth, liveness, dispatcher and scheduler every servicer reads."""

from __future__ import annotations

import functools
import logging

import grpc

from bus import BusError
from central.adapters.job_limits import MAX_TEXT
from central.adapters.specs import check_id, job_status, node_info
from central.lifecycle.errors import Refused
from central.lifecycle.nodes import NodeState
from events import CyxwizError
from protos import common_pb2, job_pb2, node_pb2
from protos.convert import grpc_status, status_error
from protos.trailers import error_trailers

__all__ = ["DEFAULT_PAGE", "MAX_PAGE", "MAX_TEXT", "Services", "abort_with", "bounded_text",
           "error_response", "paging", "unary"]

log = logging.getLogger("cyxwiz.central.grpc")

MAX_PAGE = 1000
DEFAULT_PAGE = 100


def error_response(response_cls, code: int, message: str):
    response = response_cls()
    fields = response_cls.DESCRIPTOR.fields_by_name
    if "error" in fields:
        response.error.CopyFrom(status_error(code, message))
    if "status" in fields and fields["status"].enum_type is not None:
        response.status = common_pb2.STATUS_ERROR
    return response


def unary(response_cls):
    """Translate our errors into the Error answer plus the gRPC status of their code
    (``events.errors.CODES``); the bus's say the event store is away, retry."""

    def wrap(fn):
        @functools.wraps(fn)
        async def handler(self, request, context):
            try:
                return await fn(self, request, context)
            except Refused as exc:
                await abort_with(context, response_cls, exc.code, exc.message,
                             grpc.StatusCode.ALREADY_EXISTS if exc.reason == "exists" else None)
            except BusError as exc:
                await abort_with(context, response_cls, 409 if exc.code == 409 else 503,
                             f"event store unavailable, retry: {exc}" if exc.code != 409 else str(exc))
            except CyxwizError as exc:
                await abort_with(context, response_cls, exc.code, str(exc))

        return handler

    return wrap


async def abort_with(context, response_cls, code: int, message: str, status: grpc.StatusCode | None = None):
    response = error_response(response_cls, code, message)
    await context.abort(status or grpc_status(code), message, trailing_metadata=error_trailers(response, code))


def paging(page_size: int, page_token: str) -> tuple[int, int]:
    if not 0 <= page_size <= MAX_PAGE:
        raise Refused(400, f"page_size must be 0..{MAX_PAGE} (got {page_size}); 0 means {DEFAULT_PAGE}")
    if page_token and not (page_token.isascii() and page_token.isdigit() and len(page_token) < 10):
        raise Refused(400, f"page_token {page_token[:40]!r} is not one this server gave out; start with ''")
    return page_size or DEFAULT_PAGE, int(page_token or 0)


def bounded_text(what: str, value: str, limit: int = MAX_TEXT) -> str:
    if len(value) > limit:
        raise Refused(400, f"{what} is too long ({len(value)} characters, at most {limit})")
    return value


class Services:
    """What the servicers share: central's state, commands, auth, liveness, dispatcher."""

    def __init__(self, state, bus, commands, auth, liveness, dispatcher, scheduler=None, phases=None) -> None:
        self.scheduler = scheduler
        self.phases = phases  # central.control.job_phases.JobPhases: running jobs' phases
        self.state = state
        self.bus = bus
        self.commands = commands
        self.auth = auth
        self.liveness = liveness
        self.dispatcher = dispatcher

    def job(self, job_id: str):
        check_id("job_id", job_id)
        job = self.state.jobs.get(job_id)
        if job is None:
            raise Refused(404, f"unknown job {job_id!r}")
        return job

    async def reported_job(self, job_id: str):
        """The job a node reports on. A node hears of its job from the central holding the
        lease, and may report to another that has not folded the job's events yet: an
        unknown id is looked up again once this central has folded the whole stream."""
        check_id("job_id", job_id)
        if job_id not in self.state.jobs:
            await self.commands.catch_up()
        return self.job(job_id)

    def node(self, node_id: str, context) -> NodeState:
        """The calling node, authenticated by its session token."""
        check_id("node_id", node_id)
        node = self.state.nodes.get(node_id)
        if node is None:
            raise Refused(404, f"unknown node {node_id!r}: register first")
        self.auth.check_node(context.invocation_metadata(), node)
        return node

    def job_status(self, job) -> job_pb2.JobStatus:
        return job_status(job, self.phases.of(job) if self.phases is not None else None)

    def node_info(self, node: NodeState) -> node_pb2.NodeInfo:
        return node_info(node, last_seen_unix=self.liveness.last_seen_unix(node.node_id),
                         completed=self.state.completed_by_node.get(node.node_id, 0),
                         running=self.state.running_on(node.node_id), reputation=self.state.reputation(node.node_id),
                         reported=self.liveness.reported.get(node.node_id))
