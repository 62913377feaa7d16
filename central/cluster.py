"""The cluster file: where this home's central, REST API and NATS are, for every command.

``cyxwiz central`` (and so ``cyxwiz up``, which runs it) writes ``$CYXWIZ_HOME/cluster.json``
once it is ready and removes it when it stops::

    {"grpc": "127.0.0.1:50051", "rest": "http://127.0.0.1:8080", "nats": "nats://127.0.0.1:4222",
     "credentials": "/abs/.cyxwiz/nats/creds/central.nk", "job_calls_open": true, "pid": 1234, ...}

Every command and ``central.client.Client()`` look an address up in this order: the flag,
the ``CYXWIZ_*`` variable, the cluster file of the home, the documented default. A file
whose central process is gone is ignored (a central that was killed leaves it behind).
The file names the credentials file (a path, never the seed), and is written 0600.
"""

from __future__ import annotations

import os
from pathlib import Path

import msgspec
import psutil

from bus import CREDS_ENV, EventBus, NatsServer, default_home, open_bus
from bus.files import write_atomic

__all__ = [
    "CLUSTER_FILE", "DEFAULT_CENTRAL", "DEFAULT_REST_PORT", "ClusterInfo", "central_address", "cluster_path",
    "connect_bus", "nats_credentials", "nats_url", "read_cluster", "remove_cluster", "rest_url", "write_cluster",
]

CLUSTER_FILE = "cluster.json"
DEFAULT_CENTRAL = "localhost:50051"
DEFAULT_REST_PORT = 8080


class ClusterInfo(msgspec.Struct, frozen=True, kw_only=True):
    """Where one running central is, as its own process wrote it."""

    grpc: str  # HOST:PORT, what --central takes
    rest: str = ""  # http://HOST:PORT, "" with REST off
    nats: str = ""  # the NATS URL central uses
    credentials: str = ""  # the NATS credentials file our commands on this machine use ("" none)
    job_calls_open: bool = True  # no API key: anyone who reaches gRPC may submit and cancel
    host: str = ""  # where central listens
    pid: int = 0


def cluster_path(home: str | os.PathLike | None = None) -> Path:
    return Path(home if home is not None else default_home()) / CLUSTER_FILE


def write_cluster(home: str | os.PathLike, info: ClusterInfo) -> Path:
    """Write the home's cluster file atomically, mode 0600 (it names the credentials file)."""
    path = cluster_path(home)
    write_atomic(path, msgspec.json.format(msgspec.json.encode(info)) + b"\n", mode=0o600)
    return path


def read_cluster(home: str | os.PathLike | None = None) -> ClusterInfo | None:
    """The home's cluster file, or None when there is none, it cannot be read, or the
    central that wrote it is no longer running."""
    try:
        info = msgspec.json.decode(cluster_path(home).read_bytes(), type=ClusterInfo)
    except (OSError, msgspec.DecodeError, msgspec.ValidationError):
        return None
    return info if info.pid > 0 and psutil.pid_exists(info.pid) else None


def remove_cluster(home: str | os.PathLike, pid: int) -> None:
    """Remove the home's cluster file if the process ``pid`` wrote it (a later central's stays)."""
    path = cluster_path(home)
    try:
        info = msgspec.json.decode(path.read_bytes(), type=ClusterInfo)
    except (OSError, msgspec.DecodeError, msgspec.ValidationError):
        return
    if info.pid == pid:
        path.unlink(missing_ok=True)


def central_address(flag: str | None = None, *, home: str | os.PathLike | None = None) -> str:
    """Central's gRPC HOST:PORT: ``flag``, ``$CYXWIZ_CENTRAL``, the cluster file, localhost:50051."""
    if flag:
        return flag
    if os.environ.get("CYXWIZ_CENTRAL"):
        return os.environ["CYXWIZ_CENTRAL"]
    info = read_cluster(home)
    return info.grpc if info is not None else DEFAULT_CENTRAL


def rest_url(flag: str | None = None, *, central: str | None = None,
             home: str | os.PathLike | None = None) -> tuple[str, bool]:
    """Central's REST URL and whether anything named it (False: only the default guess,
    which a command should not trust to be this cluster's). ``flag``, ``$CYXWIZ_REST_URL``, the cluster file
    (when ``central`` is unset or is the file's central), else the host of ``central`` or
    localhost with ``$CYXWIZ_REST_PORT`` (8080)."""
    if flag:
        return flag.rstrip("/"), True
    if os.environ.get("CYXWIZ_REST_URL"):
        return os.environ["CYXWIZ_REST_URL"].rstrip("/"), True
    central = central or os.environ.get("CYXWIZ_CENTRAL") or None
    info = read_cluster(home)
    if info is not None and info.rest and (central is None or central == info.grpc):
        return info.rest, True
    port = os.environ.get("CYXWIZ_REST_PORT") or None
    host = _host(central) if central else "localhost"
    return f"http://{host}:{port or DEFAULT_REST_PORT}", central is not None or port is not None


def nats_url(flag: str | None = None, *, home: str | os.PathLike | None = None) -> str | None:
    """The NATS URL: ``flag``, ``$CYXWIZ_NATS_URL``, the cluster file; None means the
    embedded server of the home (started for the command when none runs)."""
    if flag:
        return flag
    if os.environ.get("CYXWIZ_NATS_URL"):
        return os.environ["CYXWIZ_NATS_URL"]
    info = read_cluster(home)
    return info.nats or None if info is not None else None


def nats_credentials(home: str | os.PathLike | None = None) -> str | None:
    """The credentials file when ``$CYXWIZ_NATS_CREDS`` does not name one: the cluster
    file's (None: the home's own central seed, as ``bus.open_bus`` finds it)."""
    if os.environ.get(CREDS_ENV):
        return None
    info = read_cluster(home)
    return info.credentials or None if info is not None else None


async def connect_bus(flag: str | None = None, *, home: str | os.PathLike | None = None,
                      timeout: float = 3.0) -> tuple[EventBus, NatsServer | None]:
    """``bus.open_bus`` at the URL and with the credentials the lookup above gives; the
    embedded server of ``home`` when nothing names a URL (the caller stops it if owned)."""
    home = Path(home) if home is not None else default_home()
    return await open_bus(nats_url(flag, home=home), home=home, timeout=timeout, credentials=nats_credentials(home))


def _host(address: str) -> str:
    host = address.rpartition(":")[0] if ":" in address else address
    return host or "localhost"


