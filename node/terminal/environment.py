"""The shell's environment: built from an allowlist, never copied from the node.

The node's own environment holds its secrets (``CYXWIZ_*`` tokens and keys, NATS
credentials, cloud keys); a shell gets only what a login needs.
"""

from __future__ import annotations

import os
import pwd
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["Account", "account", "shell_environment"]

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_KEPT = ("LANG", "LANGUAGE", "TZ")


@dataclass(frozen=True, slots=True)
class Account:
    """Who the shell runs as: ``uid``/``gid`` None means the node's own user."""

    name: str
    home: str
    uid: int | None = None
    gid: int | None = None


def account(user: str | None) -> Account:
    """The account for ``--terminal-user`` (None: the node's own); KeyError if unknown."""
    if user is None:
        me = pwd.getpwuid(os.getuid())
        return Account(name=me.pw_name, home=me.pw_dir)
    entry = pwd.getpwnam(user)
    return Account(name=entry.pw_name, home=entry.pw_dir, uid=entry.pw_uid, gid=entry.pw_gid)


def shell_environment(node_env: Mapping[str, str], who: Account, shell: str, cwd: str) -> dict[str, str]:
    """A fresh environment: PATH, locale, TZ and the login names; nothing else."""
    env = {key: node_env[key] for key in _KEPT if key in node_env}
    env.update({key: value for key, value in node_env.items() if key.startswith("LC_")})
    path = node_env.get("PATH", DEFAULT_PATH)
    env.update(PATH=path if who.uid is None else DEFAULT_PATH, TERM="xterm-256color", HOME=who.home,
               USER=who.name, LOGNAME=who.name, SHELL=shell, PWD=cwd)
    return env
