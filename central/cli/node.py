"""``cyxwiz node [flags]``: run a compute node by replacing this process with
``python -m node [flags]`` (central never imports the node package; see
``python -m node --help`` for the flags)."""

from __future__ import annotations

import os
import sys

import typer


def register(app: typer.Typer) -> None:
    @app.command(
        "node",
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
        add_help_option=False,
        help="Run a compute node: registers with central and trains the jobs it assigns "
        "(flags: cyxwiz node --help).",
    )
    def node(ctx: typer.Context) -> None:
        argv = [sys.executable, "-m", "node", *ctx.args]
        sys.stdout.flush()
        sys.stderr.flush()
        os.execv(sys.executable, argv)
