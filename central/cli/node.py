"""``cyxwiz node [flags]``: run a compute node by replacing this process with
``python -m node [flags]`` (central never imports the node package; ``cyxwiz node --help``
lists the flags).

The node trains with JAX, which only the ``node`` extra installs (``pip install
'cyxwiz[node]'``): without it the command says so and exits with the table's code for a
part this install lacks (501, ``events.errors.CODES``) instead of a traceback.
"""

from __future__ import annotations

import importlib.util
import os
import sys

import typer

from events.errors import CODES

__all__ = ["NODE_NEEDS", "missing_node_packages", "register"]

NODE_NEEDS = ("jax", "optax", "h5py")  # the ``node`` extra of pyproject.toml
EXIT_MISSING = CODES[501].exit


def missing_node_packages() -> list[str]:
    """The packages of the ``node`` extra this environment cannot import."""
    return [name for name in NODE_NEEDS if not _installed(name)]


def _installed(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ImportError:  # a finder that refuses it
        return False


def register(app: typer.Typer) -> None:
    @app.command(
        "node",
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
        add_help_option=False,
        help="Run a compute node: registers with central and trains the jobs it assigns "
        "(flags: cyxwiz node --help; needs pip install 'cyxwiz[node]').",
    )
    def node(ctx: typer.Context) -> None:
        missing = missing_node_packages()
        if missing:
            typer.echo(f"error: cyxwiz node needs {', '.join(missing)}, which this install lacks: "
                       "pip install 'cyxwiz[node]' (or -e '.[node]' in a clone) adds JAX, optax and h5py", err=True)
            raise typer.Exit(EXIT_MISSING)
        argv = [sys.executable, "-m", "node", *ctx.args]
        sys.stdout.flush()
        sys.stderr.flush()
        os.execv(sys.executable, argv)
