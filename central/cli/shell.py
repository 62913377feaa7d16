"""``cyxwiz shell [NODE | DEPLOYMENT]``: an interactive shell on a node, through central.

Central's TerminalService.CreateSession names the node's terminal endpoint and gives a
grant for it (five minutes, bound to this user, the node and the deployment); the shell
itself runs on the node and talks to this terminal directly. The local terminal is in
raw mode (Ctrl-C and every other key go to the remote shell); the window size is sent
at the start and on every SIGWINCH. The exit code is the remote shell's.

With no target and one node serving terminals (``cyxwiz up``), that node is used.
Exit codes besides the shell's come from the CLI's one table (``central.cli.exits``):
2 bad input, 3 central or node unreachable, 4 unknown node or deployment, 5 refused
(terminal off), 6 credential refused, 7 session limits reached; 255 the stream broke.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import os
import shutil
import signal
import sys
import termios
import tty
from typing import Optional

import grpc
import typer

from central.cli.ids import UnknownId, match_prefix
from central.cluster import central_address
from events.errors import CODES, CyxwizError
from protos import deployment_pb2, deployment_pb2_grpc
from protos.convert import bearer_metadata

__all__ = ["register", "resolve_target", "run_shell"]

EXIT_CODE_TRAILER = "cyxwiz-exit-code"
EXIT_BROKEN = 255  # as ssh: the connection, not the remote shell, ended it
# gRPC status -> exit code, by the one table; RESOURCE_EXHAUSTED here is the session limits (429)
_CODES = {getattr(grpc.StatusCode, CODES[code].grpc): CODES[code].exit
          for code in (400, 401, 403, 404, 409, 429, 503, 504)}
EXIT_NOT_FOUND, EXIT_REFUSED = CODES[404].exit, CODES[409].exit


class ShellError(Exception):
    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def _refused(where: str, exc: grpc.aio.AioRpcError) -> ShellError:
    return ShellError(f"{where}: {exc.details() or exc.code().name}", _CODES.get(exc.code(), EXIT_REFUSED))


def _size() -> tuple[int, int]:
    """The local window's size, from the terminal itself (COLUMNS/LINES go stale on resize)."""
    try:
        size = os.get_terminal_size(sys.stdin.fileno())
    except OSError:
        size = shutil.get_terminal_size((80, 24))
    return max(1, min(size.lines, 1000)), max(1, min(size.columns, 1000))


async def _grant(central: str, api_key: str | None, target: str, user: str):
    """Ask central for the endpoint and a grant: ``target`` as a node, else as a deployment."""
    metadata = bearer_metadata(api_key) if api_key else ()
    async with grpc.aio.insecure_channel(central) as channel:
        stub = deployment_pb2_grpc.TerminalServiceStub(channel)
        tries = [dict(node_id=target)] + ([dict(deployment_id=target)] if target else [])
        for index, fields in enumerate(tries):
            try:
                return await stub.CreateSession(deployment_pb2.CreateTerminalSessionRequest(user_id=user, **fields),
                                                metadata=metadata, timeout=10.0)
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.NOT_FOUND and index + 1 < len(tries):
                    continue
                if exc.code() == grpc.StatusCode.NOT_FOUND and target:
                    raise ShellError(f"no node or deployment {target!r} is known to central at {central}",
                                     EXIT_NOT_FOUND) from None
                raise _refused(f"central at {central}", exc) from None


async def run_shell(central: str, api_key: str | None, target: str, user: str) -> int:
    """The whole interactive session; returns the remote shell's exit code."""
    answer = await _grant(central, api_key, target, user)
    metadata = bearer_metadata(answer.grant)
    rows, cols = _size()
    async with grpc.aio.insecure_channel(answer.terminal_endpoint) as channel:
        stub = deployment_pb2_grpc.TerminalServiceStub(channel)
        try:
            created = await stub.CreateSession(deployment_pb2.CreateTerminalSessionRequest(
                deployment_id=answer.session.deployment_id, user_id=user, rows=rows, cols=cols),
                metadata=metadata, timeout=10.0)
        except grpc.aio.AioRpcError as exc:
            raise _refused(f"node {answer.node_id} at {answer.terminal_endpoint}", exc) from None
        return await _attach(stub, created.session.session_id, metadata)


async def _attach(stub, session_id: str, metadata) -> int:
    loop = asyncio.get_running_loop()
    keys: asyncio.Queue[bytes | None] = asyncio.Queue()
    stdin = sys.stdin.fileno()

    def on_key() -> None:
        data = os.read(stdin, 65536)
        if not data:
            loop.remove_reader(stdin)
            data = b"\x04"  # stdin ended (a pipe): the remote shell reads end-of-file
        keys.put_nowait(data)

    async def requests():
        yield deployment_pb2.TerminalData(session_id=session_id)
        while (data := await keys.get()) is not None:
            yield deployment_pb2.TerminalData(session_id=session_id, data=data)

    def on_winch() -> None:
        rows, cols = _size()
        loop.create_task(_resize(stub, session_id, rows, cols, metadata))

    call = stub.StreamTerminal(requests(), metadata=metadata)
    loop.add_reader(stdin, on_key)
    loop.add_signal_handler(signal.SIGWINCH, on_winch)
    out = sys.stdout.buffer
    try:
        async for message in call:
            if message.data:
                out.write(message.data)
                out.flush()
        trailer = dict(await call.trailing_metadata() or ())
    except grpc.aio.AioRpcError as exc:
        raise ShellError(f"the terminal stream ended: {exc.details() or exc.code().name}", EXIT_BROKEN) from None
    finally:
        loop.remove_reader(stdin)
        loop.remove_signal_handler(signal.SIGWINCH)
        keys.put_nowait(None)
    code = trailer.get(EXIT_CODE_TRAILER, "")
    return int(code) if code.lstrip("-").isdigit() else EXIT_BROKEN


async def _resize(stub, session_id: str, rows: int, cols: int, metadata) -> None:
    with contextlib.suppress(grpc.aio.AioRpcError):
        await stub.ResizeTerminal(deployment_pb2.TerminalResize(session_id=session_id, rows=rows, cols=cols),
                                  metadata=metadata, timeout=5.0)


@contextlib.contextmanager
def _raw_mode():
    """The local terminal in raw mode while the remote shell runs (no-op off a terminal)."""
    fd = sys.stdin.fileno()
    if not os.isatty(fd):
        yield
        return
    saved = termios.tcgetattr(fd)
    tty.setraw(fd, termios.TCSANOW)  # keep keys typed while connecting
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def register(app: typer.Typer) -> None:
    @app.command("shell")
    def shell(
        target: Optional[str] = typer.Argument(None, help="node id or name, or a deployment id "
                                                          "(default: the one node that serves terminals)"),
        central: Optional[str] = typer.Option(None, "--central", envvar="CYXWIZ_CENTRAL",
                                              help="central's gRPC HOST:PORT (default: the cluster file's, "
                                                   "else localhost:50051)"),
        api_key: Optional[str] = typer.Option(None, "--api-key", envvar="CYXWIZ_API_KEY", show_default=False,
                                              help="the cluster API key, when central has one"),
        user: Optional[str] = typer.Option(None, "--user", help="who you are, for the audit trail "
                                                                "(default: your login name)"),
    ) -> None:
        """Open an interactive shell on a node (or a deployment's node) through central."""
        who = user or getpass.getuser()
        central = central_address(central)
        try:
            target = resolve_target(central, api_key, target) if target else ""
            with _raw_mode():
                code = asyncio.run(run_shell(central, api_key, target, who))
        except ShellError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(exc.code) from None
        except CyxwizError as exc:  # a prefix that fits several ids or none; central unreachable
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(exc.exit_code) from None
        raise typer.Exit(code)


def resolve_target(central: str, api_key: str | None, target: str) -> str:
    """A node name as given (central knows names); else the node or deployment id that
    ``target`` is or is the unique prefix of (``central.cli.ids``); one that fits none goes
    to central as given."""
    from central.client import Client

    with Client(central, api_key=api_key) as client:
        nodes = client.nodes()
        if target in {n.name for n in nodes}:
            return target
        ids = [n.node_id for n in nodes] + [d.deployment_id for d in client.deployments()]
    try:
        return match_prefix(target, ids, "node or deployment")
    except UnknownId:
        return target  # central says what it knows
