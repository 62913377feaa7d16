"""Run the whole platform on one machine: embedded NATS, central, and local nodes.

``Stack`` starts each part as its own process (a crashing training job can never take
central down), waits until each says it is ready (``--ready-file``), and stops them all,
children first, leaving no process behind: children also get SIGTERM from the kernel
if this process dies without cleaning up (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from bus import CREDS_ENV, NatsServer, ensure_server, start_server
from bus.server import die_with_parent
from events.errors import CyxwizError


class StackError(CyxwizError, RuntimeError):
    """A part of the stack did not start; the message says which and why."""

    code = 503


@dataclass
class Part:
    name: str
    process: subprocess.Popen
    log_path: Path
    ready_file: Path
    info: dict = field(default_factory=dict)

    def log_tail(self, chars: int = 1500) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:].strip()
        except OSError:
            return ""


@dataclass
class StackConfig:
    home: Path = Path(".cyxwiz")
    nats_url: str | None = None
    grpc_port: int = 50051
    rest_port: int = 8080
    nodes: int = 1
    node_port: int = 50054
    deploy_port: int = 50052
    terminal_port: int = 50053
    host: str = "127.0.0.1"  # where central and the nodes listen (0.0.0.0: every interface)
    heartbeat_s: float | None = None
    node_timeout_s: float | None = None
    slots: int | None = None
    terminal: bool = False  # nodes serve terminals (loopback only unless CYXWIZ_API_KEY is set)
    fresh_nats: bool = False  # a private nats-server on a free port (tests), not the home's shared one
    extra_env: dict[str, str] = field(default_factory=dict)


class Stack:
    def __init__(self, config: StackConfig):
        self.config = config
        self.home = Path(config.home).resolve()
        self.nats: NatsServer | None = None
        self.nats_url = config.nats_url
        self.parts: list[Part] = []
        self.central: Part | None = None
        self.node_parts: list[Part] = []

    # --- starting ------------------------------------------------------------------------

    def start(self, timeout: float = 90.0) -> "Stack":
        try:
            self._start(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self, timeout: float) -> None:
        (self.home / "logs").mkdir(parents=True, exist_ok=True)
        if self.nats_url is None:
            if self.config.fresh_nats:
                self.nats = start_server(self.home / "nats", port=0)
            else:
                self.nats = ensure_server(self.home)
            self.nats_url = self.nats.url
        c = self.config
        args = ["--home", str(self.home), "--nats", self.nats_url,
                "--grpc-port", str(c.grpc_port), "--rest-port", str(c.rest_port), "--host", c.host]
        if c.heartbeat_s is not None:
            args += ["--heartbeat", str(c.heartbeat_s)]
        if c.node_timeout_s is not None:
            args += ["--node-timeout", str(c.node_timeout_s)]
        self.central = self._spawn("central", [sys.executable, "-m", "central", "central", *args], role="central")
        self._wait_ready(self.central, timeout)
        for index in range(c.nodes):
            self.add_node(index, timeout=timeout)

    def add_node(self, index: int | None = None, *, timeout: float = 90.0, extra_args: list[str] = ()) -> Part:
        c = self.config
        index = len(self.node_parts) if index is None else index
        port = lambda base: 0 if (base == 0 or index > 0) else base  # noqa: E731  (extra nodes take free ports)
        args = [
            "--central", self.central.info["grpc"],
            "--nats", self.nats_url,
            "--home", str(self.home / f"node-{index}"),
            "--name", f"local-{index}",
            "--node-port", str(port(c.node_port)),
            "--deploy-port", str(port(c.deploy_port)),
            "--terminal-port", str(port(c.terminal_port)),
            "--bind", c.host,
        ]
        if c.heartbeat_s is not None:
            args += ["--heartbeat", str(c.heartbeat_s)]
        if c.slots is not None:
            args += ["--slots", str(c.slots)]
        if c.terminal:
            args += ["--terminal"]
        part = self._spawn(f"node-{index}", [sys.executable, "-m", "node", *args, *extra_args], role="node")
        self.node_parts.append(part)
        self._wait_ready(part, timeout)
        return part

    def _credentials_env(self, role: str) -> dict[str, str]:
        """The child's NATS credentials: its role's seed of our embedded server (a path in
        the environment, never the seed itself); with an external NATS, what we have."""
        if self.nats is None:
            return {}
        return {CREDS_ENV: str(self.nats.seed(role))}

    def _spawn(self, name: str, cmd: list[str], role: str) -> Part:
        ready_file = self.home / "run" / f"{name}.ready.json"
        ready_file.parent.mkdir(parents=True, exist_ok=True)
        ready_file.unlink(missing_ok=True)
        log_path = self.home / "logs" / f"{name}.log"
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self._credentials_env(role), **self.config.extra_env}
        with open(log_path, "ab") as log:
            process = subprocess.Popen(
                [*cmd, "--ready-file", str(ready_file)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=env, start_new_session=True, preexec_fn=die_with_parent,
            )
        part = Part(name=name, process=process, log_path=log_path, ready_file=ready_file)
        self.parts.append(part)
        return part

    def _wait_ready(self, part: Part, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if part.process.poll() is not None:
                raise StackError(
                    f"{part.name} exited with code {part.process.returncode} before it was ready "
                    f"(log: {part.log_path}):\n{part.log_tail()}"
                )
            if part.ready_file.exists():
                try:
                    part.info = json.loads(part.ready_file.read_text())
                    return
                except ValueError:
                    pass  # being written
            time.sleep(0.05)
        raise StackError(f"{part.name} was not ready within {timeout:.0f}s (log: {part.log_path}):\n{part.log_tail()}")

    # --- running and stopping ------------------------------------------------------------

    @property
    def grpc(self) -> str:
        return self.central.info["grpc"]

    @property
    def rest(self) -> str:
        return self.central.info["rest"]

    def dead_part(self) -> Part | None:
        for part in self.parts:
            if part.process.poll() is not None:
                return part
        return None

    def stop(self, timeout: float = 15.0) -> None:
        """Nodes first (they finish reporting), then central, then the NATS server."""
        for part in [*reversed(self.node_parts), *([self.central] if self.central else [])]:
            _terminate(part.process, timeout)
        for part in self.parts:
            part.ready_file.unlink(missing_ok=True)
        if self.nats is not None:
            if self.nats.owned:
                self.nats.stop()
            elif self.config.nats_url is None:
                # the home's server was left behind by an earlier run: it is ours to stop
                _terminate_pid(self.nats.pid, timeout)
                (self.nats.store_dir / "server.json").unlink(missing_ok=True)
            self.nats = None

    def __enter__(self) -> "Stack":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _terminate(process: subprocess.Popen, timeout: float) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _terminate_pid(pid: int, timeout: float) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
