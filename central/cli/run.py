"""``cyxwiz up`` (the whole stack in one command) and ``cyxwiz demo`` (the first run).

``up`` listens on 127.0.0.1 unless ``--host`` says otherwise, and its banner says
whether job calls need an API key. Its central writes the home's cluster file
(``central.cluster``), so every other command in another shell finds it.
``demo`` starts a stack of its own (a temporary home, free ports, its own NATS), so it
never submits to someone else's central; ``--use-running`` uses the running one instead.
"""

from __future__ import annotations

import shutil
import signal
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Optional

import msgspec
import typer
from rich.panel import Panel
from rich.table import Table

from central.cli.data import sql_over_rest
from events.errors import CyxwizError
from central.cli.exits import EXIT_FAILED, exit_code
from central.cli.jobs import err_console, fail, follow_job, print_job_result
from central.cli.node import EXIT_MISSING, missing_node_packages
from central.cli.render import console
from central.client import Client
from central.cli.stack import Stack, StackConfig
from central.cluster import central_address, cluster_path, rest_url

__all__ = ["banner", "register"]

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
    host = stack.config.host
    table.add_row("listening on", f"{host}" + (" (this machine only; --host 0.0.0.0 for others)" if host in LOOPBACK else
                                              " (other machines can reach it)"))
    if stack.central.info.get("job_calls_open", True):
        table.add_row("job calls", "[bold yellow]OPEN[/bold yellow]: no API key, anyone who reaches central's port may "
                                   "submit and cancel jobs (set CYXWIZ_API_KEY)")
    else:
        table.add_row("job calls", "need the API key (CYXWIZ_API_KEY)")
    for part in stack.node_parts:
        info = part.info
        table.add_row(f"{part.name} ({info.get('node_id', '?')})",
                      f"node service {info.get('node_service')}  deploy {info.get('deploy')}  terminal {info.get('terminal')}")
    table.add_row("state", str(stack.home))
    table.add_row("cluster file", f"{cluster_path(stack.home)} (other shells here find central through it)")
    table.add_row("logs", str(stack.home / "logs"))
    return Panel(table, title="[bold green]CyxWiz is up[/bold green]", subtitle="Ctrl-C stops everything", expand=False)


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
    return msgspec.to_builtins(sql_over_rest(rest_url, sql, None))


def print_sql(result: dict, title: str) -> None:
    table = Table(*result["columns"], title=title)
    for row in result["rows"]:
        table.add_row(*("" if v is None else str(v) for v in row))
    console.print(table)


LOOPBACK = ("127.0.0.1", "::1", "localhost")


def _stack_config(home, nats, grpc_port, rest_port, nodes, node_ports=(50054, 50052, 50053),
                  host: str = "127.0.0.1") -> StackConfig:
    node_port, deploy_port, terminal_port = node_ports
    return StackConfig(home=Path(home), nats_url=nats, grpc_port=grpc_port, rest_port=rest_port, nodes=nodes,
                       node_port=node_port, deploy_port=deploy_port, terminal_port=terminal_port, host=host)


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
        host: str = typer.Option("127.0.0.1", "--host", help="address central and the nodes listen on (0.0.0.0: every interface)"),
    ) -> None:
        """Start NATS, central and a local node; Ctrl-C or SIGTERM stops them all."""
        if nodes > 0:
            _need_node_packages("cyxwiz up")
        config = _stack_config(home, nats, grpc_port, rest_port, nodes, (node_port, deploy_port, terminal_port), host)
        config.terminal = terminal
        stack = Stack(config)
        signal.signal(signal.SIGTERM, _interrupt)  # a SIGTERM while starting stops what has started
        why = "SIGTERM"
        try:
            with console.status("starting NATS, central and node ..."):
                stack.start()
            console.print(banner(stack))
            why = wait_for_stop(stack)
        except CyxwizError as exc:  # a part that did not start, a setting that cannot be used
            why = "failed to start"
            failed_code = exc.exit_code
            err_console.print(f"[red]error:[/red] {exc}", highlight=False)
        except KeyboardInterrupt:
            pass  # a signal at any point up to here: stop below
        finally:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)  # stopping is not to be interrupted
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            with console.status("stopping ..."):
                stack.stop()  # idempotent: stops whatever has started
        console.print(f"stopped ({why}); state kept in {stack.home}")
        if why == "failed to start":
            raise typer.Exit(failed_code)
        if "exited" in why:
            raise typer.Exit(EXIT_FAILED)

    @app.command()
    def demo(
        use_running: bool = typer.Option(False, "--use-running", help="use the running central (--central, "
                                         "CYXWIZ_CENTRAL or the cluster file) instead of a fresh stack of its own"),
        central: Optional[str] = typer.Option(None, "--central", envvar="CYXWIZ_CENTRAL", help="with --use-running: central's gRPC HOST:PORT"),
        rest: Optional[str] = typer.Option(None, "--rest", envvar="CYXWIZ_REST_URL", help="with --use-running: central's REST URL"),
        epochs: int = typer.Option(12, "--epochs"),
    ) -> None:
        """Train a real model on builtin://digits through the whole platform, then query its history.

        It starts NATS, central and a node of its own (a temporary home, free ports) and
        stops them after; nothing of anyone else's is touched."""
        stack = None
        home = None
        ok = False
        try:
            if not use_running:
                _need_node_packages("cyxwiz demo")
            if use_running:
                target = central_address(central)
                rest_at, _ = rest_url(rest, central=central)
                console.print(f"using the running central at {target} (REST {rest_at})")
            else:
                home = Path(tempfile.mkdtemp(prefix="cyxwiz-demo-"))
                stack = Stack(StackConfig(home=home, grpc_port=0, rest_port=0, nodes=1, node_port=0, deploy_port=0,
                                          terminal_port=0, fresh_nats=True))
                with console.status("starting NATS, central and a node of its own (first start compiles JAX, a few seconds) ..."):
                    stack.start()
                target, rest_at = stack.grpc, stack.rest
                console.print(banner(stack))
            _run_demo(target, rest_at, epochs)
            ok = True
        except CyxwizError as exc:
            fail(str(exc), exit_code(exc))
        finally:
            if stack is not None:
                with console.status("stopping the stack ..."):
                    stack.stop()
            if home is not None:
                if ok:
                    shutil.rmtree(home, ignore_errors=True)
                else:
                    err_console.print(f"the demo's state and logs are kept in {home}", highlight=False)


def _need_node_packages(command: str) -> None:
    missing = missing_node_packages()
    if missing:
        fail(f"{command} starts a local node, which needs {', '.join(missing)}: pip install 'cyxwiz[node]' "
             "(or cyxwiz up --nodes 0 for central alone)", EXIT_MISSING)


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
    console.print("\nNext: [bold]cyxwiz up[/bold] in one shell, then [bold]cyxwiz submit -d builtin://digits --follow[/bold] "
                  "and [bold]cyxwiz sql \"SELECT * FROM jobs\"[/bold] in another")
