"""The ``cyxwiz`` command: one entry point, sub-commands from the modules named below.

Each module of this package defines ``register(app)``. ``cyxwiz node`` runs
``python -m node`` in its place, so central never imports the node.
"""

from __future__ import annotations

import importlib
import sys

import typer

app = typer.Typer(
    name="cyxwiz",
    help="CyxWiz: distributed ML training with an event history you can query.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

COMMAND_MODULES = (
    "central.cli.data",  # sql, events publish|tail, projection rebuild
    "central.cli.central",  # central
    "central.cli.node",  # node (runs python -m node)
    "central.cli.objects",  # datasets put, models get
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
