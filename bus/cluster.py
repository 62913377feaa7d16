"""A NATS cluster on one machine: N nats-servers joined by routes, for tests and benchmarks.

    cluster = start_cluster(tmp / "nats", size=3)     # each its own store, one set of nkey users
    bus = await EventBus.connect(cluster.url)         # "nats://127.0.0.1:A,nats://127.0.0.1:B,..."
    cluster.kill(i); cluster.restart(i)               # kill -9 one server; start it again, same ports
    cluster.stop()

Every server has its own JetStream store (``<root>/<name>``), the same authorization
(the seeds of ``<root>/creds``) and the fsync setting (``bus.server.sync_interval_setting``).
Ports are chosen free when the cluster starts and kept across restarts, so clients
reconnect to a server that comes back.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

from bus.credentials import seed_path
from bus.errors import BusUnavailable
from bus.server import NatsServer, Routes, start_server

__all__ = ["NatsCluster", "free_ports", "start_cluster"]


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """``n`` distinct ports that were free a moment ago (the kernel's choice)."""
    socks = []
    try:
        for _ in range(n):
            sock = socket.socket()
            sock.bind((host, 0))
            socks.append(sock)
        return [s.getsockname()[1] for s in socks]
    finally:
        for sock in socks:
            sock.close()


@dataclass
class NatsCluster:
    root: Path
    client_ports: list[int]
    route_ports: list[int]
    sync_interval: str | None = ""  # "": the setting (bus.server.sync_interval_setting)
    host: str = "127.0.0.1"
    servers: list[NatsServer | None] = field(default_factory=list)

    @property
    def size(self) -> int:
        return len(self.client_ports)

    @property
    def url(self) -> str:
        """Every server's client URL, comma-separated (what ``CYXWIZ_NATS_URL`` takes)."""
        return ",".join(self.server_url(i) for i in range(self.size))

    def server_url(self, i: int) -> str:
        return f"nats://{self.host}:{self.client_ports[i]}"

    def name(self, i: int) -> str:
        return f"n{i + 1}"

    def index_of(self, name: str) -> int:
        return int(name.removeprefix("n")) - 1

    def seed(self, role: str = "central") -> Path:
        return seed_path(self.root, role)

    def start(self, i: int, timeout: float = 20.0) -> NatsServer:
        routes = Routes(name=self.name(i), port=self.route_ports[i], host=self.host,
                        peers=tuple(p for k, p in enumerate(self.route_ports) if k != i))
        server = start_server(self.root / self.name(i), port=self.client_ports[i], host=self.host, timeout=timeout,
                              sync_interval=self.sync_interval, routes=routes, creds_dir=self.root)
        self.servers[i] = server
        return server

    def kill(self, i: int) -> None:
        """SIGKILL server ``i`` (kill -9: nothing flushed, no goodbye to its peers)."""
        server = self.servers[i]
        if server is not None:
            server.kill()
        self.servers[i] = None

    def restart(self, i: int) -> NatsServer:
        self.kill(i)
        return self.start(i)

    def running(self) -> list[int]:
        return [i for i, s in enumerate(self.servers) if s is not None]

    def stop(self) -> None:
        for i in range(self.size):
            self.kill(i)


def start_cluster(root: Path, size: int = 3, *, sync_interval: str | None = "",
                  timeout: float = 30.0) -> NatsCluster:
    """Start ``size`` clustered servers and wait until JetStream has a meta leader
    (until then, stream management answers 503)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    ports = free_ports(2 * size)
    cluster = NatsCluster(root=root, client_ports=ports[:size], route_ports=ports[size:],
                          sync_interval=sync_interval, servers=[None] * size)
    try:
        for i in range(size):
            cluster.start(i)
        _wait_for_meta_leader(cluster, timeout)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _wait_for_meta_leader(cluster: NatsCluster, timeout: float) -> None:
    """JetStream in a cluster serves once its servers have elected a meta leader: the
    servers log it; a route to every peer and the election take a moment."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for i in cluster.running():
            log = (cluster.root / cluster.name(i) / "nats-server.log").read_text(errors="replace")
            if "JetStream cluster new metadata leader" in log or "Self is new JetStream cluster metadata leader" in log:
                return
        time.sleep(0.05)
    raise BusUnavailable(cluster.url, f"the cluster elected no JetStream meta leader within {timeout:.0f}s")
