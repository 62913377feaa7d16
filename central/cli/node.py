"""``cyxwiz node [flags]``: run a compute node by replacing this process with
``python -m node [flags]`` (central never imports the node package; ``cyxwiz node --help``
lists the flags).

On central's machine, central and NATS not named by a flag or variable come from the
home's cluster file (``central.cluster``), with the home's ``node`` seed as credentials.

The node trains with JAX, which only the ``node`` extra installs (``pip install
'cyxwiz[node]'``): without it the command says so and exits with the table's code for a
part this install lacks (501, ``events.errors.CODES``) instead of a traceback.
"""

from __future__ import annotations

import importlib.util
import os
import sys

import typer

from bus import CREDS_ENV, default_home
from bus.credentials import seed_path
from central.cluster import read_cluster
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
        _from_cluster_file(ctx.args)
        argv = [sys.executable, "-m", "node", *ctx.args]
        sys.stdout.flush()
        sys.stderr.flush()
        os.execv(sys.executable, argv)


def _given(args: list[str], flag: str) -> bool:
    return any(a == flag or a.startswith(flag + "=") for a in args)


def _from_cluster_file(args: list[str]) -> None:
    """Central's and NATS's addresses from the home's cluster file, into the node's
    environment, where no flag or variable names them."""
    if any(a in ("-h", "--help") for a in args):
        return
    info = read_cluster()
    if info is None:
        return
    if not _given(args, "--central") and not os.environ.get("CYXWIZ_CENTRAL"):
        os.environ["CYXWIZ_CENTRAL"] = info.grpc
        typer.echo(f"note: central {info.grpc} from the cluster file", err=True)
    if info.nats and not _given(args, "--nats") and not os.environ.get("CYXWIZ_NATS_URL"):
        os.environ["CYXWIZ_NATS_URL"] = info.nats
        seed = seed_path(default_home() / "nats", "node")
        if not _given(args, "--nats-creds") and not os.environ.get(CREDS_ENV) and seed.exists():
            os.environ[CREDS_ENV] = str(seed.resolve())
