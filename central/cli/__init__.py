"""The ``cyxwiz`` command: one entry point, sub-commands from the modules named below.

Each module of this package defines ``register(app)``. ``cyxwiz node`` runs
``python -m node`` in its place, so central never imports the node. ``--version`` prints
the installed version; ``--install-completion`` / ``--show-completion`` are typer's
shell completion (bash, zsh, fish, PowerShell).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import sys

import typer

__all__ = ["app", "main", "version"]

app = typer.Typer(
    name="cyxwiz",
    help="CyxWiz: distributed ML training with an event history you can query.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
)


def version() -> str:
    """The installed distribution's version (the one in pyproject.toml)."""
    try:
        return importlib.metadata.version("cyxwiz")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed: pip install -e .)"


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"cyxwiz {version()}")
        raise typer.Exit(0)


@app.callback()
def _root(
    show_version: bool = typer.Option(False, "--version", help="print the version and exit", is_eager=True,
                                      callback=_print_version),
) -> None:
    """CyxWiz: distributed ML training with an event history you can query."""

COMMAND_MODULES = (
    "central.cli.data",  # sql, events publish|tail, projection rebuild
    "central.cli.central",  # central
    "central.cli.node",  # node (runs python -m node)
    "central.cli.objects",  # datasets put|list, models get|list
    "central.cli.jobs",  # submit, jobs, nodes
    "central.cli.logs",  # jobs logs (after jobs: it joins its group)
    "central.cli.run",  # up, demo
    "central.cli.deployments",  # deploy, deployments, predict
    "central.cli.shell",  # shell
    "central.cli.nats",  # nats creds, nats authorization
)


def _register_all() -> None:
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(app)


def main() -> None:
    _register_all()
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
