"""Who may do what on the bus: nkey users per role, their seeds, the server's config.

Roles (what each may publish and subscribe is ``permissions(role, public_key)``):

- ``central``: everything.
- ``node``: the object store buckets (checkpoints, models, data sets) and publishing
  on ``telemetry.>``; never ``events.>``, never central's KV bucket.
- ``publisher``: acknowledged publishes on ``events.>`` (consumers still validate them).
- ``reader``: replays of the events and telemetry streams with ordered consumers.

Every connection of ours takes replies (requests, JetStream acks, consumer deliveries)
on an inbox of its own key, ``_INBOX_<public key>``; a user of a limited role may
subscribe to nothing else, so it cannot read the replies another gets (central's
secret, say).

Seeds live in ``<home>/nats/creds/<role>.nk`` (mode 0600), made once and reused; the
embedded server's ``auth.conf`` is written from them at every start.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from bus.errors import CredentialsError
from bus.files import write_atomic
from bus.names import BUCKETS, EVENTS_STREAM, TELEMETRY_STREAM

__all__ = [
    "CREDS_ENV", "ROLES", "Credentials", "authorization_block", "credentials_from_file", "ensure_seeds",
    "inbox_prefix", "permissions", "resolve_credentials", "seed_path", "write_seed_file", "write_server_config",
]

CREDS_ENV = "CYXWIZ_NATS_CREDS"
ROLES = ("central", "node", "publisher", "reader")
NODE_BUCKETS = BUCKETS  # a node reads and writes every bucket: a requeued job resumes anywhere
_API = "$JS.API"


def inbox_prefix(public_key: str) -> str:
    """The only inbox a user with ``public_key`` may subscribe to."""
    return f"_INBOX_{public_key}"


def _read_stream(stream: str) -> list[str]:
    """What an ordered consumer (and a stream's info and last-message lookups) publish."""
    return [
        f"{_API}.STREAM.INFO.{stream}",
        f"{_API}.STREAM.MSG.GET.{stream}",
        f"{_API}.DIRECT.GET.{stream}",
        f"{_API}.DIRECT.GET.{stream}.>",
        f"{_API}.CONSUMER.CREATE.{stream}",
        f"{_API}.CONSUMER.CREATE.{stream}.>",
        f"{_API}.CONSUMER.INFO.{stream}.*",
        f"{_API}.CONSUMER.DELETE.{stream}.*",
        f"$JS.FC.{stream}.>",  # flow-control answers of ordered consumers
    ]


def _object_store(bucket: str) -> list[str]:
    """What nats-py's object store ``put``/``get``/``list``/``info`` publish."""
    stream = f"OBJ_{bucket}"
    return [*_read_stream(stream), f"{_API}.STREAM.PURGE.{stream}", f"$O.{bucket}.>"]


# nats-py's object store ``get`` looks its stream up by subject (names only, no contents)
_STREAM_NAMES = f"{_API}.STREAM.NAMES"


def permissions(role: str, public_key: str) -> dict | None:
    """The nats-server permissions map of ``role`` (None: everything allowed)."""
    if role == "central":
        return None
    if role == "node":
        publish = [p for bucket in NODE_BUCKETS for p in _object_store(bucket)] + [_STREAM_NAMES, "telemetry.>"]
    elif role == "publisher":
        publish = ["events.>", f"{_API}.STREAM.INFO.{EVENTS_STREAM}"]
    elif role == "reader":
        publish = [*_read_stream(EVENTS_STREAM), *_read_stream(TELEMETRY_STREAM)]
    else:
        raise ValueError(f"unknown NATS role {role!r}: use one of {', '.join(ROLES)}")
    return {"publish": {"allow": publish}, "subscribe": {"allow": [f"{inbox_prefix(public_key)}.>"]}}


def authorization_block(public_keys: dict[str, str]) -> str:
    """A nats-server ``authorization { users = [...] }`` block for ``{role: public key}``."""
    lines = ["authorization {", "  users = ["]
    for role, key in public_keys.items():
        perms = permissions(role, key)
        lines.append(f"    # {role}")
        if perms is None:
            lines.append(f'    {{ nkey: "{key}" }}')
            continue
        lines.append(f'    {{ nkey: "{key}", permissions: {{')
        for verb in ("publish", "subscribe"):
            subjects = ",\n".join(f'          "{s}"' for s in perms[verb]["allow"])
            lines += [f"        {verb}: {{ allow: [", subjects, "        ] }"]
        lines.append("    } }")
    lines += ["  ]", "}"]
    return "\n".join(lines) + "\n"


def write_server_config(store_dir: Path) -> Path:
    """``<store_dir>/auth.conf``: the authorization block for the seeds of ``store_dir``."""
    keys = {role: credentials_from_file(path).public_key for role, path in ensure_seeds(store_dir).items()}
    path = Path(store_dir) / "auth.conf"
    _write_private(path, authorization_block(keys).encode())
    return path


# --- seeds and credential files --------------------------------------------------------


@dataclass(frozen=True)
class Credentials:
    """A credentials file and what nats-py needs to connect with it."""

    path: Path
    public_key: str
    jwt: bool  # a NATS .creds file (JWT and seed) rather than an nkey seed
    bare: bool = True  # the file holds the seed alone (nats-py reads it as it is)

    def connect_options(self) -> dict:
        """nats-py's ``connect`` keywords. The seed is read from the file when needed
        (a decorated seed file, with comment lines, is read here once per connect)."""
        options = {"inbox_prefix": inbox_prefix(self.public_key)}
        if self.jwt:
            options["user_credentials"] = str(self.path)
        elif self.bare:
            options["nkeys_seed"] = str(self.path)
        else:
            options["nkeys_seed_str"] = _seed_line(self.path.read_text()) or ""
        return options


def credentials_from_file(path: Path | str) -> Credentials:
    """Read a seed file (``SU...``) or a ``.creds`` file; raise ``CredentialsError``."""
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise CredentialsError(f"cannot read NATS credentials {path}: {getattr(exc, 'strerror', None) or exc}") from exc
    jwt = "BEGIN NATS USER JWT" in text
    seed = _seed_line(text)
    if seed is None:
        raise CredentialsError(f"{path} holds no nkey user seed (a line starting with SU)")
    import nkeys  # here: PyNaCl's import is ~50 ms that a command failing earlier never needs

    try:
        key_pair = nkeys.from_seed(bytearray(seed.encode()))
        public_key = key_pair.public_key.decode()
        key_pair.wipe()
    except (nkeys.NkeysError, ValueError) as exc:
        raise CredentialsError(f"{path}: the nkey seed is not valid ({exc})") from exc
    return Credentials(path=path, public_key=public_key, jwt=jwt, bare=text.strip() == seed)


def resolve_credentials(
    explicit: Credentials | str | Path | None = None, *, store_dir: Path | None = None, role: str = "central"
) -> Credentials | None:
    """The credentials a connection uses: ``explicit``, else ``$CYXWIZ_NATS_CREDS``, else
    ``role``'s seed in ``store_dir`` (an embedded server's) if it is there, else none."""
    if isinstance(explicit, Credentials):
        return explicit
    chosen = explicit or os.environ.get(CREDS_ENV) or None
    if chosen is None and store_dir is not None and seed_path(store_dir, role).exists():
        chosen = seed_path(store_dir, role)
    return credentials_from_file(chosen) if chosen else None


def _seed_line(text: str) -> str | None:
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("SU"):
            return line
    return None


def seed_path(store_dir: Path, role: str) -> Path:
    """Where ``role``'s seed is for the server whose store is ``store_dir`` (``<home>/nats``)."""
    return Path(store_dir) / "creds" / f"{role}.nk"


def ensure_seeds(store_dir: Path) -> dict[str, Path]:
    """Each role's seed file in ``store_dir`` (made once, mode 0600, reused after)."""
    paths = {}
    for role in ROLES:
        path = seed_path(store_dir, role)
        if not path.exists():
            _write_private(path, _new_user_seed(), exclusive=True)
        paths[role] = path
    return paths


def write_seed_file(store_dir: Path, role: str, out: Path) -> Path:
    """Copy ``role``'s seed (made if missing) to ``out`` with mode 0600."""
    if role not in ROLES:
        raise CredentialsError(f"unknown NATS role {role!r}: use one of {', '.join(ROLES)}")
    seed = ensure_seeds(store_dir)[role].read_bytes()
    _write_private(Path(out), seed)
    return Path(out)


def _new_user_seed() -> bytes:
    import nkeys

    return nkeys.encode_seed(secrets.token_bytes(32), nkeys.PREFIX_BYTE_USER) + b"\n"


def _write_private(path: Path, data: bytes, *, exclusive: bool = False) -> None:
    """Write ``data`` to ``path`` readable by its owner only, never half-written."""
    write_atomic(path, data, mode=0o600, exclusive=exclusive)
