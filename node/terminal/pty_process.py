"""A shell on a pseudo-terminal, in its own session, and how it is ended.

The shell is the leader of a new session whose controlling terminal is the PTY, so a
hangup reaches it and its jobs. Where util-linux is installed the shell is started as
``setpriv --pdeathsig HUP [--reuid --regid --init-groups] setsid --ctty SHELL`` (three
execs in one process, no Python in the child): the node forks by vfork, which costs the
same whatever the node's size, instead of copying a large process for a pre-exec hook. Ending it: SIGHUP to every process of the session,
SIGKILL to what is left after a grace period, then the shell is reaped. The shell
also gets SIGHUP if the node dies (parent-death signal), so a crashed node leaves no
shell behind.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import fcntl
import os
import shutil
import signal
import struct
import subprocess
import termios
from pathlib import Path

from node.terminal.environment import Account

__all__ = ["PtyProcess", "session_members"]

try:  # resolved in the parent: the forked child must not take the loader's lock
    _prctl = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):
    _prctl = None
_PR_SET_PDEATHSIG = 1
_SETPRIV = shutil.which("setpriv")
_SETSID = shutil.which("setsid")


def _child_setup() -> None:
    """In the child, after setsid and the user switch, before exec."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGHUP)


def _spawn(shell: str, slave: int, cwd: Path, env: dict[str, str], who: Account) -> subprocess.Popen:
    io = dict(stdin=slave, stdout=slave, stderr=slave, cwd=str(cwd), env=env, close_fds=True)
    if _SETPRIV and _SETSID:
        argv = [_SETPRIV, "--pdeathsig", "HUP"]
        if who.uid is not None:
            argv += ["--reuid", str(who.uid), "--regid", str(who.gid), "--init-groups"]
        return subprocess.Popen([*argv, _SETSID, "--ctty", shell], **io)
    return subprocess.Popen([shell], start_new_session=True, preexec_fn=_child_setup, user=who.uid, group=who.gid,
                            extra_groups=[] if who.uid is not None else None, **io)


def _set_size(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def session_members(sid: int) -> list[int]:
    """Every live process whose session id is ``sid`` (the shell and all it started). A
    zombie is not live: it has ended and only waits for its parent (often init, once the
    shell is gone) to reap it; there is nothing left to signal."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            if os.getsid(int(name)) == sid and not _is_zombie(name):
                found.append(int(name))
        except OSError:
            continue
    return found


def _is_zombie(pid: str) -> bool:
    with open(f"/proc/{pid}/stat", "rb") as stat:  # "pid (comm) S ...": the state follows the last ")"
        return stat.read().rpartition(b")")[2].split(None, 1)[0] == b"Z"


def _signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except OSError:
            pass


class PtyProcess:
    """One shell on one PTY. ``master`` is non-blocking; ``exit_code`` is set once reaped."""

    def __init__(self, shell: str, *, cwd: Path, env: dict[str, str], who: Account, rows: int, cols: int) -> None:
        master, slave = os.openpty()
        try:
            _set_size(slave, rows, cols)
            self.proc = _spawn(shell, slave, cwd, env, who)
        except BaseException:
            os.close(master)
            raise
        finally:
            os.close(slave)
        os.set_blocking(master, False)
        self.master = master
        self.pid = self.proc.pid
        self.exit_code: int | None = None
        self._exited = asyncio.get_running_loop().create_future()
        self._watch_exit()

    def _watch_exit(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            self._pidfd = os.pidfd_open(self.pid)
        except (AttributeError, OSError):
            self._pidfd = None
            loop.create_task(self._poll_exit())
            return
        loop.add_reader(self._pidfd, self._on_exit)

    def _on_exit(self) -> None:
        if self._reap():
            asyncio.get_running_loop().remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None

    async def _poll_exit(self) -> None:
        while not self._reap():
            await asyncio.sleep(0.05)

    def _reap(self) -> bool:
        code = self.proc.poll()
        if code is None:
            return False
        # a shell's convention: killed by signal N reads as 128 + N
        self.exit_code = 128 - code if code < 0 else code
        if not self._exited.done():
            self._exited.set_result(self.exit_code)
        return True

    @property
    def running(self) -> bool:
        return self.exit_code is None

    async def wait(self, timeout: float | None = None) -> int | None:
        """The exit code once the shell has ended (None if still running after ``timeout``)."""
        try:
            return await asyncio.wait_for(asyncio.shield(self._exited), timeout)
        except asyncio.TimeoutError:
            return None

    def resize(self, rows: int, cols: int) -> None:
        """Set the window size; the kernel sends SIGWINCH to the foreground job."""
        _set_size(self.master, rows, cols)

    async def write(self, data: bytes) -> None:
        """Write all of ``data`` to the PTY, waiting while its input queue is full."""
        view = memoryview(data)
        loop = asyncio.get_running_loop()
        while view:
            try:
                sent = os.write(self.master, view)
            except BlockingIOError:
                ready = loop.create_future()
                loop.add_writer(self.master, ready.set_result, None)
                try:
                    await ready
                finally:
                    loop.remove_writer(self.master)
                continue
            except OSError as exc:
                if exc.errno in (errno.EIO, errno.EBADF):
                    return  # the shell is gone: its input goes nowhere
                raise
            view = view[sent:]

    async def end(self, grace: float) -> int | None:
        """SIGHUP every process of the shell's session (the shell too, if it still runs),
        SIGKILL what is left after ``grace`` s, and reap the shell. Its exit code."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        members = session_members(self.pid)
        _signal_all(members, signal.SIGHUP)
        _signal_all(members, signal.SIGCONT)  # a stopped job must see its hangup
        # a shell still starting up (reading its rc files) may not act on a hangup yet: it
        # is sent again until the shell has gone or the grace period is over
        pause = 0.02
        while await self.wait(min(pause, max(0.0, deadline - loop.time()))) is None and loop.time() < deadline:
            _signal_all([self.pid], signal.SIGHUP)
            pause = min(pause * 2, 0.2)
        while loop.time() < deadline and self._others():
            await asyncio.sleep(0.02)
        _signal_all(session_members(self.pid), signal.SIGKILL)
        if self.running:
            await self.wait(5.0)
        return self.exit_code

    def _others(self) -> list[int]:
        return [pid for pid in session_members(self.pid) if pid != self.pid]

    def close_master(self) -> None:
        if self.master >= 0:
            try:
                asyncio.get_running_loop().remove_reader(self.master)
            except (RuntimeError, ValueError):
                pass
            os.close(self.master)
            self.master = -1
