"""Terminal sessions and their limits: ids, owners, counts, idle and lifetime timers.

A session id is 32 random bytes from the OS's CSPRNG (``secrets``), bound to the
principal that created it: another principal gets PERMISSION_DENIED, an unknown id
NOT_FOUND. At most one stream is attached at a time. The table ends sessions that
were idle (no input, output or resize) for the idle timeout, or that reached the
maximum lifetime, and those whose deployment is no longer active on the node; ending
is SIGHUP, then SIGKILL after the grace period, then reap.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from node.terminal.auth import Denied, Principal
from node.terminal.environment import account, shell_environment
from node.terminal.output import OutputPump
from node.terminal.pty_process import PtyProcess
from node.terminal.settings import TerminalSettings

__all__ = ["Session", "SessionTable"]

log = logging.getLogger("node.terminal")


@dataclass(eq=False)
class Session:
    session_id: str
    principal: Principal
    user: str
    deployment_id: str
    rows: int
    cols: int
    pty: PtyProcess
    output: OutputPump
    created: float = field(default_factory=time.monotonic)
    created_wall: float = field(default_factory=time.time)
    last_input: float = field(default_factory=time.monotonic)
    bytes_in: int = 0
    attached: bool = False
    end_reason: str = ""
    ended: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def ref(self) -> str:
        """What logs and audit records name the session by (the id itself is a secret)."""
        return hashlib.sha256(self.session_id.encode()).hexdigest()[:16]

    @property
    def bytes_out(self) -> int:
        return self.output.total

    def last_activity(self) -> float:
        return max(self.last_input, self.output.last_read)


OnEnd = Callable[[Session], None]


class SessionTable:
    """Every live session of this node; ``on_end`` hears of each session once it has ended."""

    def __init__(self, settings: TerminalSettings, on_end: OnEnd) -> None:
        self.settings = settings
        self.on_end = on_end
        self.sessions: dict[str, Session] = {}
        self._ending: set[asyncio.Task] = set()
        self._sweeper: asyncio.Task | None = None

    def count_for(self, user: str) -> int:
        return sum(1 for s in self.sessions.values() if s.user == user)

    def check_limits(self, user: str) -> None:
        s = self.settings
        if len(self.sessions) >= s.max_sessions:
            raise Denied("RESOURCE_EXHAUSTED", f"this node already has {len(self.sessions)} terminal sessions "
                                               f"(at most {s.max_sessions}); close one first")
        if self.count_for(user) >= s.max_per_user:
            raise Denied("RESOURCE_EXHAUSTED", f"user {user!r} already has {self.count_for(user)} terminal "
                                               f"sessions on this node (at most {s.max_per_user}); close one first")

    def open(self, principal: Principal, user: str, deployment_id: str, cwd: Path, rows: int, cols: int) -> Session:
        """Start a shell; the caller checked the credential, the folder and the limits."""
        self.check_limits(user)
        who = account(self.settings.user)
        env = shell_environment(os.environ, who, self.settings.shell, str(cwd))
        pty = PtyProcess(self.settings.shell, cwd=cwd, env=env, who=who, rows=rows, cols=cols)
        session = Session(session_id=secrets.token_urlsafe(32), principal=principal, user=user,
                          deployment_id=deployment_id, rows=rows, cols=cols, pty=pty,
                          output=OutputPump(pty.master))
        self.sessions[session.session_id] = session
        self._start_sweeper()
        asyncio.get_running_loop().create_task(self._watch_exit(session))
        return session

    def get(self, session_id: str, principal: Principal) -> Session:
        """The session, if ``principal`` owns it (NOT_FOUND / PERMISSION_DENIED otherwise)."""
        session = self.sessions.get(session_id) if session_id else None
        if session is None:
            raise Denied("NOT_FOUND", "unknown terminal session (it may have ended); create a new one",
                         principal.label)
        if session.principal.identity != principal.identity:
            raise Denied("PERMISSION_DENIED", "this terminal session belongs to another principal",
                         principal.label)
        if principal.expired and principal.token_digest != session.principal.token_digest:
            raise Denied("UNAUTHENTICATED", "the grant has expired (grants last 5 minutes); ask central for "
                                            "a new one", principal.label)
        return session

    async def _watch_exit(self, session: Session) -> None:
        await session.pty.wait()
        self.end(session, "shell exited")

    def end(self, session: Session, reason: str) -> asyncio.Task | None:
        """End ``session`` (once): hang up its processes, kill leftovers, reap, report."""
        if session.end_reason:
            return None
        session.end_reason = reason
        task = asyncio.get_running_loop().create_task(self._finish(session))
        self._ending.add(task)
        task.add_done_callback(self._ending.discard)
        return task

    async def _finish(self, session: Session) -> None:
        try:
            await session.pty.end(self.settings.kill_grace_s)
            # the output still buffered reaches an attached stream before it sees the end
            deadline = time.monotonic() + 2.0
            while session.attached and session.output.buffer and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
        finally:
            session.output.close()
            session.pty.close_master()
            self.sessions.pop(session.session_id, None)
            session.ended.set()
            log.info("terminal session %s ended (%s), exit code %s", session.ref, session.end_reason,
                     session.pty.exit_code)
            self.on_end(session)

    def _start_sweeper(self) -> None:
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep())

    async def _sweep(self) -> None:
        s = self.settings
        period = max(0.05, min(1.0, s.idle_timeout_s / 4))
        while self.sessions:
            now = time.monotonic()
            for session in list(self.sessions.values()):
                if now - session.created >= s.max_lifetime_s:
                    self.end(session, f"maximum lifetime ({s.max_lifetime_s:.0f} s) reached")
                elif now - session.last_activity() >= s.idle_timeout_s:
                    self.end(session, f"idle for {s.idle_timeout_s:.0f} s")
                elif session.deployment_id and s.deployment_dir(session.deployment_id) is None:
                    self.end(session, f"deployment {session.deployment_id} stopped")
            await asyncio.sleep(period)

    async def close_all(self, reason: str) -> None:
        """End every session and wait until each one's processes are gone (node stop)."""
        for session in list(self.sessions.values()):
            self.end(session, reason)
        if self._ending:
            await asyncio.gather(*list(self._ending), return_exceptions=True)
        if self._sweeper is not None:
            self._sweeper.cancel()
