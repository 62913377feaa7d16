"""The node's settings: flags first, then ``CYXWIZ_*`` environment variables, then defaults.

The names follow ARCHITECTURE.md "Ports and configuration", so scripts and operators
can rely on them. Ports may be 0 ("any free port"), which lets tests run many nodes on
one machine. Bad values raise :class:`ConfigError` naming the flag and the variable.
"""

from __future__ import annotations

import functools
import os
import socket
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import typer

__all__ = ["ConfigError", "NodeConfig", "config_from", "node_command", "parse_config", "parse_flags"]

DEFAULT_CENTRAL = "localhost:50051"
DEFAULT_NODE_PORT = 50054
DEFAULT_DEPLOY_PORT = 50052
DEFAULT_TERMINAL_PORT = 50053
DEFAULT_INFER_HTTP_PORT = 8082
DEFAULT_METRICS_PORT = 8083  # Prometheus /metrics, beside the inference port (docs: README "Metrics")
DEFAULT_HEARTBEAT_S = 10.0
DEFAULT_NATS_PORT = 4222
MAX_SERVING_PROCESSES = 64


class ConfigError(ValueError):
    """A setting has a value the node cannot use."""


@dataclass(frozen=True, kw_only=True)
class NodeConfig:
    """Everything a node process needs to know before it starts.

    ``slots`` None means one per device (accelerator, or CPU device). ``nats`` None means the NATS
    server on central's host, port 4222 (a node never starts one of its own).
    ``checkpoint_every`` 0 turns per-epoch checkpoints off.
    """

    central: str = DEFAULT_CENTRAL
    nats: str | None = None
    nats_creds: Path | None = None  # the node role's nkey seed or .creds file (cyxwiz nats creds)
    node_port: int = DEFAULT_NODE_PORT
    deploy_port: int = DEFAULT_DEPLOY_PORT
    terminal_port: int = DEFAULT_TERMINAL_PORT
    bind_host: str = "0.0.0.0"
    advertise_host: str | None = None
    node_token: str | None = None
    heartbeat_s: float = DEFAULT_HEARTBEAT_S
    data_roots: tuple[Path, ...] = ()
    slots: int | None = None
    home: Path = Path(".cyxwiz")
    name: str = field(default_factory=socket.gethostname)
    node_id: str | None = None
    checkpoint_every: int = 1
    ready_file: Path | None = None
    infer_http_port: int | None = None
    metrics_port: int | None = None
    api_key: str | None = None
    model_roots: tuple[Path, ...] = ()
    terminal: bool = False
    terminal_user: str | None = None
    terminal_idle_timeout_s: float = 900.0
    serving_processes: int = 0

    def __post_init__(self) -> None:
        for flag, port in (("--node-port", self.node_port), ("--deploy-port", self.deploy_port),
                           ("--terminal-port", self.terminal_port), ("--infer-http-port", self.http_port),
                           ("--metrics-port", self.prometheus_port)):
            if not 0 <= port <= 65535:
                raise ConfigError(f"{flag}: port must be 0..65535 (got {port})")
        if not self.heartbeat_s > 0:
            raise ConfigError(f"--heartbeat / CYXWIZ_HEARTBEAT_S: must be > 0 seconds (got {self.heartbeat_s})")
        if self.slots is not None and self.slots < 1:
            raise ConfigError(f"--slots: must be >= 1 (got {self.slots})")
        if self.checkpoint_every < 0:
            raise ConfigError(f"--checkpoint-every: must be >= 0 (got {self.checkpoint_every})")
        if not 0 < self.terminal_idle_timeout_s <= 24 * 3600:
            raise ConfigError("--terminal-idle-timeout / CYXWIZ_TERMINAL_IDLE_TIMEOUT_S: must be > 0 and at most "
                              f"86400 seconds; an idle terminal is never kept forever (got {self.terminal_idle_timeout_s})")
        if not 0 <= self.serving_processes <= MAX_SERVING_PROCESSES:
            raise ConfigError(f"--serving-processes / CYXWIZ_SERVING_PROCESSES: must be 0..{MAX_SERVING_PROCESSES} "
                              f"(got {self.serving_processes})")
        central_host(self.central)  # raises ConfigError when malformed

    @property
    def http_port(self) -> int:
        """The HTTP inference port: as set, else 8082, else 0 when the deploy port is 0 (tests, many nodes)."""
        if self.infer_http_port is not None:
            return self.infer_http_port
        return 0 if self.deploy_port == 0 else DEFAULT_INFER_HTTP_PORT

    @property
    def prometheus_port(self) -> int:
        """The Prometheus /metrics port: as set, else 8083, else 0 when the deploy port is 0 (as ``http_port``)."""
        if self.metrics_port is not None:
            return self.metrics_port
        return 0 if self.deploy_port == 0 else DEFAULT_METRICS_PORT

    @property
    def nats_url(self) -> str:
        """Where the object store is: --nats, else the NATS server on central's host."""
        if self.nats:
            return self.nats
        host = central_host(self.central)
        return f"nats://{_bracket(host)}:{DEFAULT_NATS_PORT}"

    @property
    def public_host(self) -> str:
        """The host central should dial for AssignJob (--advertise-host, else a guess)."""
        return self.advertise_host or guess_advertise_host(central_host(self.central))


def central_host(central: str) -> str:
    """The host part of ``host:port`` (IPv6 in brackets allowed)."""
    text = central.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    else:
        host, sep, port = text.rpartition(":")
    if not host or not sep or not (port.isascii() and port.isdigit()):
        raise ConfigError(f"--central / CYXWIZ_CENTRAL: expected HOST:PORT (got {central!r})")
    return host


def guess_advertise_host(central: str) -> str:
    """The local address that routes to central: loopback for a local central."""
    if central in ("localhost", "127.0.0.1", "::1"):
        return "127.0.0.1"
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect((central, 9))  # no packet is sent: this only picks a route
            return probe.getsockname()[0]
    except OSError:
        return socket.gethostname()


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host


# --- parsing -------------------------------------------------------------------------

_ENV = {
    "central": "CYXWIZ_CENTRAL",
    "nats": "CYXWIZ_NATS_URL",
    "nats_creds": "CYXWIZ_NATS_CREDS",
    "node_port": "CYXWIZ_NODE_PORT",
    "deploy_port": "CYXWIZ_DEPLOY_PORT",
    "terminal_port": "CYXWIZ_TERMINAL_PORT",
    "node_token": "CYXWIZ_NODE_TOKEN",
    "heartbeat_s": "CYXWIZ_HEARTBEAT_S",
    "data_roots": "CYXWIZ_DATA_ROOTS",
    "slots": "CYXWIZ_NODE_SLOTS",
    "home": "CYXWIZ_HOME",
    "name": "CYXWIZ_NODE_NAME",
    "advertise_host": "CYXWIZ_ADVERTISE_HOST",
    "infer_http_port": "CYXWIZ_INFER_HTTP_PORT",
    "metrics_port": "CYXWIZ_METRICS_PORT",
    "api_key": "CYXWIZ_API_KEY",
    "model_roots": "CYXWIZ_MODEL_ROOTS",
    "terminal": "CYXWIZ_TERMINAL",
    "terminal_user": "CYXWIZ_TERMINAL_USER",
    "terminal_idle_timeout_s": "CYXWIZ_TERMINAL_IDLE_TIMEOUT_S",
    "serving_processes": "CYXWIZ_SERVING_PROCESSES",
}


Opt = Optional[str]


def _options(
    central: Opt = typer.Option(None, "--central", help=f"central's gRPC HOST:PORT (CYXWIZ_CENTRAL; default {DEFAULT_CENTRAL})"),
    nats: Opt = typer.Option(None, "--nats", help="NATS URL of the object store (CYXWIZ_NATS_URL; default nats://<central host>:4222)"),
    nats_creds: Opt = typer.Option(None, "--nats-creds", help="the node role's NATS seed or .creds file, from `cyxwiz nats creds --role node` (CYXWIZ_NATS_CREDS)"),
    node_port: Opt = typer.Option(None, "--node-port", help="NodeService port, 0 = any free port (CYXWIZ_NODE_PORT; default 50054)"),
    deploy_port: Opt = typer.Option(None, "--deploy-port", help="deployment service port (CYXWIZ_DEPLOY_PORT; default 50052)"),
    terminal_port: Opt = typer.Option(None, "--terminal-port", help="terminal service port (CYXWIZ_TERMINAL_PORT; default 50053)"),
    bind_host: Opt = typer.Option(None, "--bind", help="address the servers listen on (default 0.0.0.0)"),
    advertise_host: Opt = typer.Option(None, "--advertise-host", help="host central dials for AssignJob (CYXWIZ_ADVERTISE_HOST; default: guessed)"),
    node_token: Opt = typer.Option(None, "--node-token", help="operator token for registration (CYXWIZ_NODE_TOKEN)"),
    heartbeat_s: Opt = typer.Option(None, "--heartbeat", help="heartbeat interval in seconds (CYXWIZ_HEARTBEAT_S; default 10)"),
    data_roots: Optional[list[str]] = typer.Option(None, "--data-root", help="folder file:// datasets may come from; repeatable (CYXWIZ_DATA_ROOTS, os.pathsep-separated; default ./data and <home>/data)"),
    slots: Opt = typer.Option(None, "--slots", help="slots for jobs, one per device a job uses (CYXWIZ_NODE_SLOTS; default one per device JAX sees: each GPU, or one CPU)"),
    home: Opt = typer.Option(None, "--home", help="state folder (CYXWIZ_HOME; default .cyxwiz)"),
    name: Opt = typer.Option(None, "--name", help="node name shown by central (CYXWIZ_NODE_NAME; default the host name)"),
    node_id: Opt = typer.Option(None, "--node-id", help="node id to ask for (default: a new one per process)"),
    checkpoint_every: Opt = typer.Option(None, "--checkpoint-every", help="checkpoint every N epochs, 0 = never (default 1)"),
    ready_file: Opt = typer.Option(None, "--ready-file", help="write a JSON file with the node id and endpoints once registered"),
    infer_http_port: Opt = typer.Option(None, "--infer-http-port", help="HTTP inference port, 0 = any free port (CYXWIZ_INFER_HTTP_PORT; default 8082, or 0 with --deploy-port 0)"),
    metrics_port: Opt = typer.Option(None, "--metrics-port", help="Prometheus /metrics port, 0 = any free port (CYXWIZ_METRICS_PORT; default 8083, or 0 with --deploy-port 0)"),
    api_key: Opt = typer.Option(None, "--api-key", help="the cluster API key: deployment, inference and terminal calls may send it as Bearer (CYXWIZ_API_KEY)"),
    model_roots: Optional[list[str]] = typer.Option(None, "--model-root", help="folder deployments may load local_path models from; repeatable (CYXWIZ_MODEL_ROOTS)"),
    terminal: Optional[bool] = typer.Option(None, "--terminal", help="serve terminal sessions on --terminal-port (CYXWIZ_TERMINAL=1; default off)"),
    terminal_user: Opt = typer.Option(None, "--terminal-user", help="run terminal shells as this unprivileged user (CYXWIZ_TERMINAL_USER)"),
    terminal_idle_timeout_s: Opt = typer.Option(None, "--terminal-idle-timeout", help="end a terminal idle this many seconds (CYXWIZ_TERMINAL_IDLE_TIMEOUT_S; default 900)"),
    serving_processes: Opt = typer.Option(None, "--serving-processes", help="extra processes answering inference on the deploy port, each with its own copy of every deployment: for large requests, where one process's gRPC receive is the limit (CYXWIZ_SERVING_PROCESSES; default 0)"),
) -> dict[str, object]:
    """Run a CyxWiz compute node: register with central, train the jobs it assigns."""
    return dict(locals())


def node_command(run: Callable[[dict[str, object]], int] | None = None):
    """``cyxwiz node``'s flags as a typer command (its help and errors are typer's, like every
    cyxwiz command's). Invoked, it returns the flags given (None for each one not given),
    or with ``run`` exits with ``run(flags)``."""

    @functools.wraps(_options)
    def command(**flags):
        flags = {k: (v or None) if isinstance(v, (list, tuple)) else v for k, v in flags.items()}
        if run is None:
            return flags
        raise typer.Exit(run(flags))

    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command(context_settings={"help_option_names": ["-h", "--help"]})(command)
    return typer.main.get_command(app)


def parse_flags(argv: Sequence[str] | None = None) -> dict[str, object]:
    """The flags of ``argv`` (None for each one not given)."""
    args = list(sys.argv[1:] if argv is None else argv)
    return node_command().main(args=args, prog_name="cyxwiz node", standalone_mode=False)


def parse_config(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> NodeConfig:
    """A NodeConfig from command-line flags, then ``env`` (default ``os.environ``), then defaults."""
    return config_from(parse_flags(argv), env)


def config_from(args: Mapping[str, object], env: Mapping[str, str] | None = None) -> NodeConfig:
    """A NodeConfig from parsed flags (``parse_flags``), then ``env``, then defaults."""
    env = os.environ if env is None else env
    raw: dict[str, object] = {}
    for key, value in args.items():
        if value is None and key in _ENV and env.get(_ENV[key]):
            value = env[_ENV[key]]
            if key in ("data_roots", "model_roots"):
                value = [part for part in str(value).split(os.pathsep) if part]
        if value is not None:
            raw[key] = value
    home = Path(str(raw.pop("home", ".cyxwiz")))
    values: dict[str, object] = {"home": home}
    for key, value in raw.items():
        values[key] = _convert(key, value)
    if "data_roots" not in values:
        values["data_roots"] = (Path.cwd() / "data", home / "data")
    if "model_roots" not in values:
        values["model_roots"] = (Path.cwd() / "models", home / "models")
    return NodeConfig(**values)


_INTS = {"node_port", "deploy_port", "terminal_port", "slots", "checkpoint_every", "infer_http_port", "metrics_port",
         "serving_processes"}


def _convert(key: str, value: object) -> object:
    if key in _INTS:
        flag = "--" + key.replace("_", "-")
        try:
            return int(str(value))
        except ValueError:
            raise ConfigError(f"{flag}: expected an integer (got {value!r})") from None
    if key == "heartbeat_s":
        try:
            return float(str(value))
        except ValueError:
            raise ConfigError(f"--heartbeat: expected a number of seconds (got {value!r})") from None
    if key == "terminal":
        return _flag("--terminal / CYXWIZ_TERMINAL", value)
    if key == "terminal_idle_timeout_s":
        try:
            return float(str(value))
        except ValueError:
            raise ConfigError(f"--terminal-idle-timeout: expected a number of seconds (got {value!r})") from None
    if key in ("data_roots", "model_roots"):
        return tuple(Path(str(v)).expanduser().resolve() for v in value)  # type: ignore[union-attr]
    if key in ("ready_file", "nats_creds"):
        return Path(str(value))
    return value


def _flag(what: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(f"{what}: expected 1 or 0 (got {value!r})")
