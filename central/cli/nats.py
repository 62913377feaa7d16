"""``cyxwiz nats creds|authorization``: the embedded NATS server's users, for operators.

``creds --role ROLE -o FILE`` copies one role's nkey seed (made once under
``<home>/nats/creds``) to FILE with mode 0600: give it to a node on another machine
(``CYXWIZ_NATS_CREDS=FILE``) or to a script. ``authorization`` prints the nats-server
``authorization { users = [...] }`` block of this home's keys, for an external server.
"""

from __future__ import annotations

from pathlib import Path

import typer

from bus import ROLES
from bus.credentials import credentials_from_file, ensure_seeds, authorization_block, write_seed_file
from bus.errors import CredentialsError
from central.cli.exits import EXIT_INPUT

__all__ = ["register"]

nats_app = typer.Typer(help="The NATS users of this home's embedded server (roles and their seeds).",
                       no_args_is_help=True)
HomeOpt = typer.Option(Path(".cyxwiz"), "--home", envvar="CYXWIZ_HOME", help="state folder of the embedded NATS")


def register(app: typer.Typer) -> None:
    app.add_typer(nats_app, name="nats")


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(EXIT_INPUT)


@nats_app.command("creds")
def creds_command(
    role: str = typer.Option(..., "--role", help=f"one of {', '.join(ROLES)}"),
    out: Path = typer.Option(..., "--out", "-o", help="file to write the nkey seed to (mode 0600)"),
    home: Path = HomeOpt,
) -> None:
    """Write ROLE's nkey seed file (0600): CYXWIZ_NATS_CREDS=FILE connects as that role."""
    if role not in ROLES:
        _fail(f"--role {role!r}: use one of {', '.join(ROLES)}")
    if out.is_dir():
        _fail(f"--out {out} is a folder: name the file to write")
    try:
        write_seed_file(home / "nats", role, out)
    except (CredentialsError, OSError) as exc:
        _fail(f"cannot write {out}: {getattr(exc, 'strerror', None) or exc}")
    typer.echo(f"wrote the {role} nkey seed to {out} (mode 0600; keep it secret). "
               f"Use it with CYXWIZ_NATS_CREDS={out}", err=True)


@nats_app.command("authorization")
def authorization_command(home: Path = HomeOpt) -> None:
    """Print the nats-server authorization block of this home's users (for an external NATS)."""
    try:
        keys = {role: credentials_from_file(path).public_key for role, path in ensure_seeds(home / "nats").items()}
    except (CredentialsError, OSError) as exc:
        _fail(str(exc))
    typer.echo(authorization_block(keys), nl=False)
