"""Central's side of the terminal: TerminalService.CreateSession mints grants, and
TerminalAuditService takes the nodes' terminal facts and appends them as events.

CreateSession (API key in metadata when central has one) answers where the node's
terminal listens and a grant for it, valid five minutes, bound to the user, the node and
the deployment (``protos.grant``; the key derives from the node's session token, which
central can compute and the node holds). An empty ``deployment_id`` asks for a shell in
the node's home on ``node_id`` (an id or a name; with one node online it may be left
out). A deployment's terminal needs the deployment to be active and created with
``enable_terminal`` (``deployments`` is the lookup: DeploymentControl.terminal_target).
The other TerminalService methods are the node's: UNIMPLEMENTED here.

ReportTerminalActivity (the node's session token in metadata, always checked) records
where the node's terminal listens and appends TerminalSessionOpened / Closed / Denied
on ``events.node.<node_id>`` with the node's event ids, so a retried report is stored
once. A bad record refuses the whole report with 400 naming it; nothing is half-written.
"""

from __future__ import annotations

import hmac
import math
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timezone

import grpc

from central.adapters.auth import token_sha256
from central.adapters.grpc_base import Services, unary
from central.adapters.specs import check_id
from central.lifecycle.errors import Refused
from central.lifecycle.nodes import NodeState
from central.metrics import APPEND_SECONDS
from events import TerminalSessionClosed, TerminalSessionDenied, TerminalSessionOpened
from protos import common_pb2, deployment_pb2, deployment_pb2_grpc
from protos import terminal_audit_pb2 as audit_pb2
from protos import terminal_audit_pb2_grpc as audit_grpc
from protos.convert import bearer_token
from protos.grant import GRANT_TTL_S, Grant, grant_key, mint_grant

__all__ = ["TerminalAuditService", "TerminalService", "Terminals", "add_terminal_services"]

MAX_RECORDS = 500
MAX_TEXT = 1000
DeploymentLookup = Callable[[str], "tuple[str, bool] | None"]  # deployment id -> (node id, enable_terminal)


def _no_deployments(deployment_id: str) -> tuple[str, bool] | None:
    return None


class Terminals:
    """What the two services share: where each node's terminal listens (as the node last
    said; a node repeats it every 30 s, so a restarted central learns it again)."""

    def __init__(self, services: Services, deployments: DeploymentLookup = _no_deployments,
                 clock: Callable[[], float] = time.time) -> None:
        self.s = services
        self.deployments = deployments
        self.clock = clock
        self.ports: dict[str, int] = {}


class TerminalService(deployment_pb2_grpc.TerminalServiceServicer):
    def __init__(self, terminals: Terminals) -> None:
        self.t = terminals

    @unary(deployment_pb2.CreateTerminalSessionResponse)
    async def CreateSession(self, request, context):
        s = self.t.s
        s.auth.check_client(context.invocation_metadata())
        user = _text("user_id", request.user_id, 128) or "operator"
        for what, value in (("rows", request.rows), ("cols", request.cols)):
            if not 0 <= value <= 1000:
                raise Refused(400, f"{what} must be 1..1000, or 0 for the default (got {value})")
        deployment_id = request.deployment_id
        if deployment_id:
            node = self._deployment_node(check_id("deployment_id", deployment_id))
        else:
            node = self._node(request.node_id)
        port = self.t.ports.get(node.node_id, 0)
        if not port:
            raise Refused(409, f"node {node.node_id!r} does not serve terminals: its operator starts it with "
                               "--terminal (CYXWIZ_TERMINAL=1)")
        now = self.t.clock()
        grant = Grant(user=user, node_id=node.node_id, deployment_id=deployment_id,
                      expires_at=int(now) + GRANT_TTL_S, grant_id=uuid.uuid4().hex, key_holder=bool(s.auth.api_key))
        key = grant_key(s.auth.session_token(node.node_id, node.registration_id))
        return deployment_pb2.CreateTerminalSessionResponse(
            status=common_pb2.STATUS_SUCCESS, node_id=node.node_id, grant=mint_grant(key, grant),
            grant_expires_at=grant.expires_at, terminal_endpoint=_endpoint(node.endpoint, port),
            session=deployment_pb2.TerminalSession(deployment_id=deployment_id, user_id=user,
                                                   rows=request.rows, cols=request.cols))

    def _deployment_node(self, deployment_id: str) -> NodeState:
        found = self.t.deployments(deployment_id)
        if found is None:
            raise Refused(404, f"unknown deployment {deployment_id!r}")
        node_id, enable_terminal = found
        if not enable_terminal:
            raise Refused(403, f"deployment {deployment_id!r} was created without enable_terminal")
        return self._online(self.t.s.state.nodes.get(node_id), node_id)

    def _node(self, wanted: str) -> NodeState:
        nodes = self.t.s.state.nodes
        if not wanted:
            online = [n for n in nodes.values() if n.status == "online" and self.t.ports.get(n.node_id)]
            if len(online) == 1:
                return online[0]
            raise Refused(400, f"name the node (node_id): {len(online)} online nodes serve terminals")
        node = nodes.get(wanted)
        if node is None:
            named = [n for n in nodes.values() if n.name == wanted and n.status == "online"]
            node = named[0] if len(named) == 1 else None
        return self._online(node, wanted)

    @staticmethod
    def _online(node: NodeState | None, wanted: str) -> NodeState:
        if node is None:
            raise Refused(404, f"unknown node {wanted[:128]!r}")
        if node.status != "online":
            raise Refused(409, f"node {node.node_id!r} is {node.status}")
        return node


class TerminalAuditService(audit_grpc.TerminalAuditServiceServicer):
    def __init__(self, terminals: Terminals) -> None:
        self.t = terminals

    @unary(audit_pb2.ReportTerminalActivityResponse)
    async def ReportTerminalActivity(self, request, context):
        node = self._caller(request.node_id, context)
        if not 0 <= request.terminal_port <= 65535:
            raise Refused(400, f"terminal_port must be 0..65535 (got {request.terminal_port})")
        if len(request.records) > MAX_RECORDS:
            raise Refused(400, f"at most {MAX_RECORDS} records per report (got {len(request.records)})")
        now = self.t.clock()
        events = [_event(node.node_id, i, record, now) for i, record in enumerate(request.records)]
        self.t.ports[node.node_id] = request.terminal_port
        if events:
            with APPEND_SECONDS.time():
                await self.t.s.bus.append_many(events)  # a bus error answers 503: the node sends again
        return audit_pb2.ReportTerminalActivityResponse(status=common_pb2.STATUS_SUCCESS, accepted=len(events))

    def _caller(self, node_id: str, context) -> NodeState:
        """The reporting node, by its session token (checked even with registration open)."""
        check_id("node_id", node_id)
        node = self.t.s.state.nodes.get(node_id)
        if node is None or node.status != "online":
            raise Refused(404, f"node {node_id!r} is {'unknown' if node is None else node.status} here: register again")
        token = bearer_token(context.invocation_metadata())
        if token is None or not hmac.compare_digest(token_sha256(token), node.token_sha256):
            raise Refused(401, f"wrong or missing session token for node {node_id!r}: register again")
        return node


def _event(node_id: str, index: int, r, now: float):
    where = f"records[{index}]"
    try:
        event_id = str(uuid.UUID(r.event_id))
    except ValueError:
        raise Refused(400, f"{where}.event_id must be a UUID (got {r.event_id[:60]!r})") from None
    if not (math.isfinite(r.occurred_at) and now - 30 * 86400 <= r.occurred_at <= now + 300):
        raise Refused(400, f"{where}.occurred_at must be a Unix time within the last 30 days (got {r.occurred_at})")
    common = dict(event_id=event_id, node_id=node_id, occurred_at=datetime.fromtimestamp(r.occurred_at, timezone.utc),
                  principal=_text(f"{where}.principal", r.principal, 256) or "unknown",
                  deployment_id=_text(f"{where}.deployment_id", r.deployment_id, 256))
    reason = _text(f"{where}.reason", r.reason, MAX_TEXT)
    if r.kind == audit_pb2.TERMINAL_AUDIT_DENIED:
        return TerminalSessionDenied(reason=reason, **common)
    ref = _text(f"{where}.session_ref", r.session_ref, 64)
    if not ref:
        raise Refused(400, f"{where}.session_ref is missing")
    user = _text(f"{where}.user_id", r.user_id, 256)
    if r.kind == audit_pb2.TERMINAL_AUDIT_OPENED:
        return TerminalSessionOpened(session_ref=ref, user_id=user, **common)
    if r.kind != audit_pb2.TERMINAL_AUDIT_CLOSED:
        raise Refused(400, f"{where}.kind must be OPENED, CLOSED or DENIED (got {r.kind})")
    if r.bytes_in < 0 or r.bytes_out < 0 or not (math.isfinite(r.duration_s) and r.duration_s >= 0):
        raise Refused(400, f"{where}: bytes_in, bytes_out and duration_s must be >= 0")
    return TerminalSessionClosed(session_ref=ref, user_id=user, bytes_in=r.bytes_in, bytes_out=r.bytes_out,
                                 exit_code=r.exit_code if r.has_exit_code else None, duration_s=r.duration_s,
                                 reason=reason, **common)


def _text(what: str, value: str, limit: int) -> str:
    if len(value) > limit or not value.isprintable():
        raise Refused(400, f"{what} must be at most {limit} printable characters")
    return value


def _endpoint(node_endpoint: str, port: int) -> str:
    host = node_endpoint.rpartition(":")[0] or node_endpoint
    return f"{host}:{port}"


def add_terminal_services(server: grpc.aio.Server, services: Services,
                          deployments: DeploymentLookup = _no_deployments) -> Terminals:
    terminals = Terminals(services, deployments)
    deployment_pb2_grpc.add_TerminalServiceServicer_to_server(TerminalService(terminals), server)
    audit_grpc.add_TerminalAuditServiceServicer_to_server(TerminalAuditService(terminals), server)
    return terminals
