"""``cyxwiz central``: run the central server (with the embedded NATS by default).

When ready it prints one banner with its endpoints, writes the home's cluster file
(``central.cluster``: every command on this machine finds it there) and, with
``--ready-file PATH``, writes ``{"grpc": "host:port", "rest": "http://...", "nats": url,
"pid": n, "job_calls_open": bool}`` there (tests and ``cyxwiz up`` wait for it). SIGINT or
SIGTERM stops it cleanly, exit code 0, and removes both files.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Optional

import typer

from bus import CREDS_ENV, BusError
from bus.credentials import seed_path
from bus.files import write_atomic
from bus.loop import run as run_loop
from central.cli.exits import EXIT_INPUT, exit_code
from central.cluster import ClusterInfo, remove_cluster, write_cluster

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    @app.command("central")
    def central(
        home: Optional[Path] = typer.Option(None, "--home", help="state folder (CYXWIZ_HOME, default .cyxwiz)"),
        nats: Optional[str] = typer.Option(None, "--nats", help="NATS URL (CYXWIZ_NATS_URL); default: embedded server"),
        grpc_port: Optional[int] = typer.Option(None, "--grpc-port", help="gRPC port (CYXWIZ_GRPC_PORT, 50051; 0: free)"),
        rest_port: Optional[int] = typer.Option(None, "--rest-port", help="REST port (CYXWIZ_REST_PORT, 8080; 0: free)"),
        node_token: Optional[str] = typer.Option(None, "--node-token", help="token nodes need to register (CYXWIZ_NODE_TOKEN)"),
        api_key: Optional[str] = typer.Option(None, "--api-key", help="key job calls need (CYXWIZ_API_KEY)"),
        heartbeat: Optional[float] = typer.Option(None, "--heartbeat", help="heartbeat interval s (CYXWIZ_HEARTBEAT_S, 10)"),
        node_timeout: Optional[float] = typer.Option(None, "--node-timeout", help="node lost after s (CYXWIZ_NODE_TIMEOUT_S, 30)"),
        host: Optional[str] = typer.Option(None, "--host", help="address to listen on (default 0.0.0.0: every interface)"),
        lease_ttl: Optional[float] = typer.Option(None, "--lease-ttl", help="scheduling lease among centrals, s (CYXWIZ_LEASE_TTL_S, 5)"),
        share_port: Optional[bool] = typer.Option(
            None, "--share-port", help="share the gRPC port with other centrals of this host that pass it too "
                                       "(SO_REUSEPORT; CYXWIZ_SHARE_PORT): the kernel spreads connections"),
        ready_file: Optional[Path] = typer.Option(None, "--ready-file", help="write endpoints as JSON here when ready"),
    ) -> None:
        """Run the central server: gRPC, REST, scheduler, liveness, projection."""
        from central.server import CentralConfig, ConfigError

        logging.basicConfig(level=os.environ.get("CYXWIZ_LOG_LEVEL", "INFO"),
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
        try:
            config = CentralConfig.load(home=home, nats_url=nats, grpc_port=grpc_port, rest_port=rest_port,
                                        node_token=node_token, api_key=api_key, heartbeat_s=heartbeat,
                                        node_timeout_s=node_timeout, lease_ttl_s=lease_ttl, share_port=share_port,
                                        **_listen(host))
        except ConfigError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(EXIT_INPUT)
        try:
            run_loop(_serve(config, ready_file))
        except (ConfigError, BusError) as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(exit_code(exc))


def _listen(host: str | None) -> dict:
    """``--host``: where to listen, and how the banner and cluster file name the servers
    (a specific address as itself; every interface as loopback, this machine's own way in)."""
    if not host:
        return {}
    return {"host": host, **({} if host in ("0.0.0.0", "::") else {"advertise_host": host})}


async def _serve(config, ready_file: Path | None) -> None:
    from central.server import CentralServer

    server = CentralServer(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await server.start()
        info = {**server.ready_info(), "job_calls_open": not config.api_key}
        typer.echo(f"cyxwiz central ready: gRPC {info['grpc']}  REST {info['rest'] or '(off)'}  "
                   f"NATS {info['nats']}  pid {info['pid']}", err=False)
        if info["job_calls_open"]:
            typer.echo(f"job calls are OPEN: no API key, so anyone who reaches {config.host}:{server.grpc_port} "
                       "may submit and cancel jobs (set --api-key / CYXWIZ_API_KEY)", err=False)
        write_cluster(config.home, ClusterInfo(
            grpc=info["grpc"], rest=info["rest"] or "", nats=info["nats"], credentials=_credentials_file(config.home),
            job_calls_open=info["job_calls_open"], host=config.host, pid=info["pid"]))
        if ready_file is not None:
            write_atomic(ready_file, json.dumps(info))
        await stop.wait()
    finally:
        await server.stop()
        remove_cluster(config.home, os.getpid())
        if ready_file is not None:
            ready_file.unlink(missing_ok=True)


def _credentials_file(home: Path) -> str:
    """The NATS credentials our commands on this machine use: central's own (its
    ``CYXWIZ_NATS_CREDS``, else the home's central seed of the embedded server)."""
    chosen = os.environ.get(CREDS_ENV) or (seed_path(Path(home) / "nats", "central") if
                                           seed_path(Path(home) / "nats", "central").exists() else "")
    return str(Path(chosen).resolve()) if chosen else ""
