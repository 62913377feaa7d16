"""Serving central's ASGI application (Litestar) with uvicorn inside central's own event
loop: ``serve_rest`` binds the socket itself (so port 0 is answered with the port bound
and a taken port is an ``OSError`` at once), and leaves the process's signal handlers to
central. ``RestRunner.cleanup()`` ends the dashboard's live streams first, so shutting
down never waits on an open page."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Any

import uvicorn

__all__ = ["RestRunner", "serve_rest"]

SHUTDOWN_GRACE_S = 5.0


class _Server(uvicorn.Server):
    """uvicorn without its signal capture: central's loop handles SIGINT and SIGTERM
    (``tests/test_rest_litestar.py`` checks that this hook still exists)."""

    @contextlib.contextmanager
    def capture_signals(self):
        yield


class RestRunner:
    def __init__(self, server: _Server, task: asyncio.Task, app: Any) -> None:
        self._server = server
        self._task = task
        self._app = app

    async def cleanup(self) -> None:
        """Stop serving: close live streams, then the server (and the app's shutdown hooks)."""
        live = getattr(self._app.state.api, "live", None) if hasattr(self._app.state, "api") else None
        if live is not None:
            live.close()
        self._server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(self._task), SHUTDOWN_GRACE_S + 5)
        except asyncio.TimeoutError:
            self._server.force_exit = True
            await self._task


async def serve_rest(app: Any, host: str = "0.0.0.0", port: int = 8080) -> tuple[RestRunner, int]:
    """Start serving ``app``; returns the runner (``await runner.cleanup()`` stops it)
    and the port actually bound (useful with ``port=0``)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(2048)
    sock.setblocking(False)
    bound = sock.getsockname()[1]
    # log_config=None: uvicorn would dictConfig its own, which closes every handler in the process
    config = uvicorn.Config(app, log_config=None, log_level="warning", access_log=False, lifespan="on", loop="none",
                            timeout_graceful_shutdown=SHUTDOWN_GRACE_S, ws="none")
    server = _Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]), name="rest")
    while not server.started:
        if task.done():
            sock.close()
            task.result()  # raises what stopped it
            raise OSError(f"REST did not start on {host}:{bound}")
        await asyncio.sleep(0.01)
    return RestRunner(server, task, app), bound
