"""The node's TerminalService on 50053: CreateSession, StreamTerminal, ResizeTerminal,
CloseSession (wire contract of the public CyxWiz protocol's deployment.proto).

Off unless the node runs with ``--terminal``: then every call answers
FAILED_PRECONDITION "terminal access is not enabled on this node". When on, every call
(a stream at its opening) is authenticated (``node.terminal.auth``). Refusals carry
the gRPC status and a message that says what to do: UNAUTHENTICATED, PERMISSION_DENIED,
NOT_FOUND, INVALID_ARGUMENT, RESOURCE_EXHAUSTED, FAILED_PRECONDITION.

A stream's first message names the session; data flows both ways; output messages
carry an increasing ``sequence_number``; when the shell ends, the stream sends what was
left, then a message with ``is_eof``, and ends with ``cyxwiz-exit-code`` in its trailing
metadata (128 + N when a signal N ended the shell).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path

import grpc

from node.terminal.audit import AuditLog, Kind
from node.terminal.auth import Denied, Principal, authenticate
from node.terminal.sessions import Session, SessionTable
from node.terminal.settings import DISABLED_MESSAGE, TerminalSettings
from protos import common_pb2, deployment_pb2, deployment_pb2_grpc
from protos.grant import grant_key

__all__ = ["EXIT_CODE_TRAILER", "TerminalServicer"]

log = logging.getLogger("node.terminal")

EXIT_CODE_TRAILER = "cyxwiz-exit-code"
MAX_INPUT = 64 * 1024
MAX_SIZE = 1000
MAX_ID = 256
FIRST_MESSAGE_TIMEOUT_S = 30.0


def _size(rows: int, cols: int, *, zero_is_default: bool) -> tuple[int, int]:
    if zero_is_default:
        rows, cols = rows or 24, cols or 80
    for what, value in (("rows", rows), ("cols", cols)):
        if not 1 <= value <= MAX_SIZE:
            raise Denied("INVALID_ARGUMENT", f"{what} must be 1..{MAX_SIZE} (got {value})")
    return rows, cols


def _text(what: str, value: str) -> str:
    if len(value) > MAX_ID or not value.isprintable():
        raise Denied("INVALID_ARGUMENT", f"{what} must be at most {MAX_ID} printable characters")
    return value


class TerminalServicer(deployment_pb2_grpc.TerminalServiceServicer):
    """``node_id()`` / ``session_token()`` give the node's current registration with
    central (the grant key derives from the token); ``audit`` hears every fact."""

    def __init__(self, settings: TerminalSettings, *, node_id: Callable[[], str],
                 session_token: Callable[[], str], audit: AuditLog | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.node_id = node_id
        self.session_token = session_token
        self.audit = audit
        self.clock = clock
        self.home = Path(settings.home).expanduser().resolve()
        self.table = SessionTable(settings, self._ended)

    # --- the four calls -----------------------------------------------------------

    async def CreateSession(self, request, context):
        await self._check_enabled(context)
        principal: Principal | None = None
        try:
            principal = self._principal(context, request.user_id)
            if principal.expired:
                raise Denied("UNAUTHENTICATED", "the grant has expired (grants last 5 minutes); ask central "
                                                "for a new one")
            rows, cols = _size(request.rows, request.cols, zero_is_default=True)
            user = self._user(principal, _text("user_id", request.user_id))
            if request.node_id and request.node_id != self.node_id():
                raise Denied("INVALID_ARGUMENT", f"node_id {request.node_id[:80]!r} is not this node")
            cwd = self._folder(principal, _text("deployment_id", request.deployment_id))
            session = self.table.open(principal, user, request.deployment_id, cwd, rows, cols)
        except Denied as exc:
            self._denied(exc, principal, request.deployment_id, context)
            await self._abort(context, exc)
        except OSError as exc:
            message = f"cannot start the shell {self.settings.shell!r} in its folder: {exc.strerror or exc}"
            log.warning("terminal: %s", message)
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, message)
        log.info("terminal session %s opened by %s (deployment %r)", session.ref, principal.label,
                 session.deployment_id)
        self._record(Kind.TERMINAL_AUDIT_OPENED, session, reason="")
        return deployment_pb2.CreateTerminalSessionResponse(
            status=common_pb2.STATUS_SUCCESS, session=self._describe(session))

    async def StreamTerminal(self, request_iterator, context):
        await self._check_enabled(context)
        principal: Principal | None = None
        try:
            principal = self._principal(context, "")
            first = await self._first(request_iterator)
            session = self.table.get(first.session_id, principal)
            if session.attached:
                raise Denied("FAILED_PRECONDITION", "another stream is attached to this session; "
                                                    "one stream at a time")
        except Denied as exc:
            self._denied(exc, principal, "", context)
            await self._abort(context, exc)
        session.attached = True
        failure: list[Denied] = []
        reader = asyncio.get_running_loop().create_task(self._read_input(session, first, request_iterator, failure))
        try:
            sequence = 0
            while (chunk := await session.output.next_chunk()) is not None:
                sequence += 1
                yield deployment_pb2.TerminalData(session_id=first.session_id, deployment_id=session.deployment_id,
                                                  data=chunk, sequence_number=sequence)
            if failure:
                await self._abort(context, failure[0])
            await session.ended.wait()
            context.set_trailing_metadata(((EXIT_CODE_TRAILER, str(session.pty.exit_code)),))
            yield deployment_pb2.TerminalData(session_id=first.session_id, deployment_id=session.deployment_id,
                                              is_eof=True, sequence_number=sequence + 1)
        finally:
            session.attached = False
            reader.cancel()

    async def ResizeTerminal(self, request, context):
        await self._check_enabled(context)
        try:
            principal = self._principal(context, "")
            rows, cols = _size(request.rows, request.cols, zero_is_default=False)
            session = self.table.get(request.session_id, principal)
            session.pty.resize(rows, cols)
        except Denied as exc:
            await self._abort(context, exc)
        except OSError:
            await context.abort(grpc.StatusCode.NOT_FOUND, "the terminal session has ended")
        session.rows, session.cols = rows, cols
        session.last_input = time.monotonic()
        return deployment_pb2.SimpleResponse(status=common_pb2.STATUS_SUCCESS)

    async def CloseSession(self, request, context):
        await self._check_enabled(context)
        try:
            session = self.table.get(request.session_id, self._principal(context, ""))
        except Denied as exc:
            await self._abort(context, exc)
        self.table.end(session, "closed by the client")
        await session.ended.wait()
        return deployment_pb2.CloseTerminalSessionResponse(status=common_pb2.STATUS_SUCCESS)

    # --- parts ------------------------------------------------------------------

    async def close(self) -> None:
        """Node stop: end every session and wait until its processes are gone."""
        await self.table.close_all("node stopping")

    async def end_deployment(self, deployment_id: str) -> None:
        """A deployment stopped: end its sessions (for the deployment service to call)."""
        ending = [self.table.end(s, f"deployment {deployment_id} stopped")
                  for s in list(self.table.sessions.values()) if s.deployment_id == deployment_id]
        await asyncio.gather(*(task for task in ending if task is not None))

    async def _check_enabled(self, context) -> None:
        if not self.settings.enabled:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                                f"{DISABLED_MESSAGE}; the operator starts it with --terminal (CYXWIZ_TERMINAL=1)")

    async def _abort(self, context, exc: Denied) -> None:
        await context.abort(getattr(grpc.StatusCode, exc.status), exc.message)

    def _principal(self, context, user_hint: str) -> Principal:
        token = self.session_token()
        return authenticate(context.invocation_metadata(), context.peer(), api_key=self.settings.api_key,
                            grant_key=grant_key(token) if token else None, node_id=self.node_id(),
                            now=self.clock(), user_hint=user_hint[:MAX_ID])

    def _user(self, principal: Principal, requested: str) -> str:
        if principal.kind == "grant" and requested and requested != principal.user:
            raise Denied("PERMISSION_DENIED", f"the grant is for user {principal.user!r}, not {requested!r}")
        return principal.user

    def _folder(self, principal: Principal, deployment_id: str) -> Path:
        grant = principal.grant
        if grant is not None and grant.deployment_id != deployment_id:
            raise Denied("PERMISSION_DENIED", f"the grant is for deployment {grant.deployment_id!r}, "
                                              f"not {deployment_id!r}")
        if not deployment_id:
            if not principal.key_holder:
                raise Denied("PERMISSION_DENIED", "a shell in the node's home needs the cluster API key; "
                                                  "name a deployment you may reach")
            self.home.mkdir(parents=True, exist_ok=True)
            return self.home
        folder = self.settings.deployment_dir(deployment_id)
        if folder is None:
            raise Denied("NOT_FOUND", f"unknown deployment {deployment_id!r} on this node")
        return Path(folder)

    async def _first(self, request_iterator):
        try:
            first = await asyncio.wait_for(anext(aiter(request_iterator)), FIRST_MESSAGE_TIMEOUT_S)
        except (StopAsyncIteration, asyncio.TimeoutError):
            raise Denied("INVALID_ARGUMENT", "the stream's first message must name the session (session_id)") from None
        if not first.session_id:
            raise Denied("INVALID_ARGUMENT", "the stream's first message must name the session (session_id)")
        if len(first.data) > MAX_INPUT:
            raise Denied("INVALID_ARGUMENT", f"a message carries at most {MAX_INPUT} bytes (got {len(first.data)})")
        return first

    async def _read_input(self, session: Session, first, request_iterator, failure: list[Denied]) -> None:
        try:
            await self._input(session, first)
            async for message in request_iterator:
                if message.session_id and message.session_id != session.session_id:
                    raise Denied("INVALID_ARGUMENT", "a stream carries one session: session_id changed")
                if len(message.data) > MAX_INPUT:
                    raise Denied("INVALID_ARGUMENT",
                                 f"a message carries at most {MAX_INPUT} bytes (got {len(message.data)})")
                await self._input(session, message)
        except Denied as exc:
            failure.append(exc)
            session.output.interrupt()
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
            pass  # the client went away; the output side ends too

    async def _input(self, session: Session, message) -> None:
        if message.data and session.pty.running:
            session.bytes_in += len(message.data)
            session.last_input = time.monotonic()
            await session.pty.write(message.data)

    def _describe(self, session: Session) -> deployment_pb2.TerminalSession:
        return deployment_pb2.TerminalSession(
            session_id=session.session_id, deployment_id=session.deployment_id, user_id=session.user,
            status=deployment_pb2.TERMINAL_SESSION_ACTIVE, created_at=int(session.created_wall),
            last_activity=int(time.time()), rows=session.rows, cols=session.cols)

    # --- audit ------------------------------------------------------------------

    def _ended(self, session: Session) -> None:
        self._record(Kind.TERMINAL_AUDIT_CLOSED, session, reason=session.end_reason)

    def _record(self, kind: int, session: Session, reason: str) -> None:
        if self.audit is None:
            return
        self.audit.record(kind, principal=session.principal.label, user=session.user,
                          deployment_id=session.deployment_id, session_ref=session.ref,
                          bytes_in=session.bytes_in, bytes_out=session.bytes_out,
                          exit_code=session.pty.exit_code if kind == Kind.TERMINAL_AUDIT_CLOSED else None,
                          duration_s=time.monotonic() - session.created, reason=reason)

    def _denied(self, exc: Denied, principal: Principal | None, deployment_id: str, context) -> None:
        who = principal.label if principal is not None else f"unauthenticated ({context.peer()})"
        log.info("terminal: refused %s: %s", who, exc.message)
        if self.audit is not None:
            self.audit.record(Kind.TERMINAL_AUDIT_DENIED, principal=who, deployment_id=deployment_id[:MAX_ID],
                              reason=f"{exc.status}: {exc.message}")
