"""``cyxwiz up`` (the whole stack in one command) and ``cyxwiz demo`` (the first run)."""

from __future__ import annotations

import signal
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Optional

import msgspec
import typer
from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from central.cli.data import sql_over_rest
from events.errors import CyxwizError
from central.cli.exits import EXIT_FAILED, EXIT_UNREACHABLE
from central.cli.jobs import err_console, fail, follow_job, print_job_result
from central.client import CentralUnavailable, Client, ClientError
from central.cli.stack import Stack, StackConfig, StackError

console = Console()

DEMO_MODEL = {"type": "mlp", "hidden": [256, 128]}
DEMO_SQL = """SELECT epoch, round(loss, 4) AS loss, round(val_accuracy, 4) AS val_accuracy,
       round(seconds, 3) AS seconds, round(samples_per_s) AS samples_per_s
FROM epochs WHERE job_id = '{job_id}' ORDER BY epoch"""
DEMO_SQL_EVENTS = "SELECT type, count(*) AS events FROM events GROUP BY type ORDER BY events DESC"


def banner(stack: Stack) -> Panel:
    table = Table.grid(padding=(0, 2))
    table.add_row("NATS", stack.nats_url)
    table.add_row("central gRPC", stack.grpc)
    table.add_row("REST API", stack.rest + "/api/health")
    table.add_row("dashboard", f"{stack.rest}/   API docs {stack.rest}/docs")
    for part in stack.node_parts:
        info = part.info
        table.add_row(f"{part.name} ({info.get('node_id', '?')})",
                      f"node service {info.get('node_service')}  deploy {info.get('deploy')}  terminal {info.get('terminal')}")
    table.add_row("state", str(stack.home))
    table.add_row("logs", str(stack.home / "logs"))
    return Panel(table, title="[bold green]CyxWiz is up[/bold green]", subtitle="Ctrl-C stops everything")


def wait_for_stop(stack: Stack) -> str:
    """Block until SIGINT/SIGTERM or a part dies; returns why."""
    stop = threading.Event()
    reason = {"why": "signal"}

    def on_signal(signum, _frame):
        reason["why"] = signal.Signals(signum).name
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    while not stop.wait(0.5):
        dead = stack.dead_part()
        if dead is not None:
            reason["why"] = f"{dead.name} exited with code {dead.process.returncode} (log: {dead.log_path})"
            break
    return reason["why"]


def _interrupt(signum, _frame):
    raise KeyboardInterrupt


def rest_sql(rest_url: str, sql: str) -> dict:
    """Central's answer to ``sql`` as a dict (columns, rows), through the CLI's one REST
    SQL client (``central.cli.data.sql_over_rest``); refusals raise its errors."""
    return msgspec.to_builtins(sql_over_rest(rest_url, sql, None, explicit=True))


def print_sql(result: dict, title: str) -> None:
    table = Table(*result["columns"], title=title)
    for row in result["rows"]:
        table.add_row(*("" if v is None else str(v) for v in row))
    console.print(table)


def _stack_config(home, nats, grpc_port, rest_port, nodes, node_ports=(50054, 50052, 50053)) -> StackConfig:
    node_port, deploy_port, terminal_port = node_ports
    return StackConfig(home=Path(home), nats_url=nats, grpc_port=grpc_port, rest_port=rest_port, nodes=nodes,
                       node_port=node_port, deploy_port=deploy_port, terminal_port=terminal_port)


def register(app: typer.Typer) -> None:
    @app.command()
    def up(
        home: Path = typer.Option(Path(".cyxwiz"), "--home", envvar="CYXWIZ_HOME", help="state folder (NATS data, DuckDB, logs)"),
        nats: Optional[str] = typer.Option(None, "--nats", envvar="CYXWIZ_NATS_URL", help="an existing NATS server instead of the embedded one"),
        grpc_port: int = typer.Option(50051, "--grpc-port", envvar="CYXWIZ_GRPC_PORT"),
        rest_port: int = typer.Option(8080, "--rest-port", envvar="CYXWIZ_REST_PORT"),
        nodes: int = typer.Option(1, "--nodes", help="local nodes to start (the second and later take free ports)"),
        node_port: int = typer.Option(50054, "--node-port", envvar="CYXWIZ_NODE_PORT"),
        deploy_port: int = typer.Option(50052, "--deploy-port", envvar="CYXWIZ_DEPLOY_PORT"),
        terminal_port: int = typer.Option(50053, "--terminal-port", envvar="CYXWIZ_TERMINAL_PORT"),
        terminal: bool = typer.Option(True, "--terminal/--no-terminal",
                                      help="local nodes serve `cyxwiz shell` (loopback only without CYXWIZ_API_KEY)"),
    ) -> None:
        """Start NATS, central and a local node; Ctrl-C or SIGTERM stops them all."""
        config = _stack_config(home, nats, grpc_port, rest_port, nodes, (node_port, deploy_port, terminal_port))
        config.terminal = terminal
        stack = Stack(config)
        signal.signal(signal.SIGTERM, _interrupt)  # a SIGTERM while starting stops what has started
        why = "SIGTERM"
        try:
            with console.status("starting NATS, central and node ..."):
                stack.start()
            console.print(banner(stack))
            why = wait_for_stop(stack)
        except StackError as exc:
            why = "failed to start"
            err_console.print(f"[red]error:[/red] {exc}", highlight=False)
        except KeyboardInterrupt:
            pass  # a signal at any point up to here: stop below
        finally:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)  # stopping is not to be interrupted
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            with console.status("stopping ..."):
                stack.stop()  # idempotent: stops whatever has started
        console.print(f"stopped ({why}); state kept in {stack.home}")
        if "exited" in why or why == "failed to start":
            raise typer.Exit(EXIT_FAILED)

    @app.command()
    def demo(
        home: Path = typer.Option(Path(".cyxwiz"), "--home", envvar="CYXWIZ_HOME"),
        central: str = typer.Option("localhost:50051", "--central", envvar="CYXWIZ_CENTRAL", help="use this running central if it answers"),
        epochs: int = typer.Option(12, "--epochs"),
    ) -> None:
        """Train a real model on builtin://digits through the whole platform, then query its history."""
        stack = None
        rest = None
        try:
            try:
                with Client(central, timeout=2.0) as probe:
                    probe.jobs(limit=1)
                console.print(f"using the running central at {central}")
                rest = "http://localhost:8080"
            except CentralUnavailable:
                stack = Stack(_stack_config(home, None, 0, 0, 1, (0, 0, 0)))
                with console.status("starting NATS, central and a node (first start compiles JAX, a few seconds) ..."):
                    stack.start()
                central, rest = stack.grpc, stack.rest
                console.print(banner(stack))
            _run_demo(central, rest, epochs)
        except StackError as exc:
            fail(str(exc), EXIT_FAILED)
        except ClientError as exc:
            fail(str(exc), EXIT_UNREACHABLE)
        finally:
            if stack is not None:
                with console.status("stopping the stack ..."):
                    stack.stop()


def _run_demo(central: str, rest: str, epochs: int) -> None:
    with Client(central) as client:
        job_id = client.submit(
            dataset_uri="builtin://digits",
            model=DEMO_MODEL,
            epochs=epochs,
            batch_size=64,
            hyperparameters={"optimizer": "adam", "learning_rate": 0.003, "seed": 0},
            name="demo-digits",
        )
        console.print(f"submitted [bold]{job_id}[/bold]: MLP 64-256-128-10 on builtin://digits, {epochs} epochs")
        started = time.monotonic()
        final = follow_job(client, job_id, as_json=False)
        print_job_result(final)
        console.print(f"  wall time        {time.monotonic() - started:.1f}s")
    if final.state != "completed":
        raise typer.Exit(EXIT_FAILED)
    try:
        deadline = time.monotonic() + 10
        while True:  # the read model follows the stream within milliseconds; allow a little
            result = rest_sql(rest, DEMO_SQL.format(job_id=job_id))
            if len(result["rows"]) >= epochs or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        console.print("\n[bold]SQL over the event store[/bold] (POST /api/v1/sql):")
        console.print(DEMO_SQL.format(job_id=job_id), style="dim")
        print_sql(result, f"epochs of {job_id}")
        print_sql(rest_sql(rest, DEMO_SQL_EVENTS), "events by type")
    except (CyxwizError, urllib.error.URLError, OSError, KeyError, ValueError) as exc:
        fail(f"the SQL query through {rest} failed: {exc}", EXIT_FAILED)
    console.print("\nTry: [bold]cyxwiz sql \"SELECT * FROM jobs\"[/bold] (with the stack up: [bold]cyxwiz up[/bold])")
