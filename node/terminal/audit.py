"""The terminal's audit trail, sent to central (nodes may not publish to ``events.>``).

Each fact (a session opened, closed or denied; never keystrokes) becomes a
``TerminalAuditRecord`` with its own event id, queued here and sent to central's
``TerminalAuditService.ReportTerminalActivity`` with the node's session token; central
validates it and appends the TerminalSession* event. Until the node is registered, or
while central is away, records wait and are sent again (the event id makes a resend
harmless). The same call tells central where this node's terminal listens; it is sent
every ``announce_s`` even with nothing to report, so a restarted central learns it.
The queue is bounded; when it overflows the oldest records are dropped and counted.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
import uuid
from collections.abc import Callable

import grpc

from protos import terminal_audit_pb2 as audit_pb2
from protos import terminal_audit_pb2_grpc as audit_grpc
from protos.convert import bearer_metadata

__all__ = ["AuditLog", "Kind"]

log = logging.getLogger("node.terminal.audit")

Kind = audit_pb2.TerminalAuditKind
MAX_QUEUED = 10_000
BATCH = 500

Credentials = Callable[[], tuple[str, str] | None]  # (node_id, session_token) once registered


class AuditLog:
    def __init__(self, central: str, credentials: Credentials, *, terminal_port: int, announce_s: float = 30.0,
                 channel_options=()) -> None:
        self.central = central
        self.credentials = credentials
        self.terminal_port = terminal_port
        self.announce_s = announce_s
        self.queue: collections.deque[audit_pb2.TerminalAuditRecord] = collections.deque(maxlen=MAX_QUEUED)
        self.dropped = 0
        self.sent = 0
        self._wake = asyncio.Event()
        self._channel = grpc.aio.insecure_channel(central, options=channel_options)
        self._stub = audit_grpc.TerminalAuditServiceStub(self._channel)
        self._task: asyncio.Task | None = None
        self._failing = False

    def record(self, kind: int, *, principal: str, user: str = "", deployment_id: str = "", session_ref: str = "",
               bytes_in: int = 0, bytes_out: int = 0, exit_code: int | None = None, duration_s: float = 0.0,
               reason: str = "") -> None:
        if len(self.queue) == self.queue.maxlen:
            self.dropped += 1
        self.queue.append(audit_pb2.TerminalAuditRecord(
            event_id=str(uuid.uuid4()), kind=kind, session_ref=session_ref, principal=principal[:256],
            user_id=user[:256], deployment_id=deployment_id[:256], bytes_in=bytes_in, bytes_out=bytes_out,
            exit_code=exit_code or 0, has_exit_code=exit_code is not None, duration_s=duration_s,
            reason=reason[:1000], occurred_at=time.time(),
        ))
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="terminal-audit")

    def wake(self) -> None:
        """Send now (e.g. just after the node registered again)."""
        self._wake.set()

    async def _run(self) -> None:
        delay = 0.2
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self.announce_s)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()
            while True:
                if await self.flush():
                    delay = 0.2
                    if not self.queue:
                        break
                    continue
                await asyncio.sleep(delay)
                delay = min(5.0, delay * 2)
                if self.credentials() is None:
                    break  # not registered: wait for the next wake or announcement

    async def flush(self) -> bool:
        """Send one batch (or a bare announcement); False when central did not take it."""
        creds = self.credentials()
        if creds is None:
            return False
        node_id, token = creds
        batch = [self.queue[i] for i in range(min(BATCH, len(self.queue)))]
        request = audit_pb2.ReportTerminalActivityRequest(node_id=node_id, terminal_port=self.terminal_port,
                                                          records=batch)
        try:
            await self._stub.ReportTerminalActivity(request, metadata=bearer_metadata(token), timeout=10.0)
        except grpc.aio.AioRpcError as exc:
            if not self._failing:  # once per streak of failures, not once per retry
                log.info("terminal audit report to %s failed (%s); retrying", self.central, exc.code().name)
            self._failing = True
            return False
        self._failing = False
        sent = {record.event_id for record in batch}
        while self.queue and self.queue[0].event_id in sent:
            self.queue.popleft()
        self.sent += len(batch)
        return True

    async def close(self, grace: float = 3.0) -> None:
        """Try to deliver what is queued for up to ``grace`` s, then stop."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        deadline = time.monotonic() + grace
        while self.queue and time.monotonic() < deadline and await self.flush():
            pass
        if self.queue:
            log.warning("stopping with %d terminal audit record(s) undelivered", len(self.queue))
        await self._channel.close()
