"""What a node's terminal may do: on or off, who may use it, its shell and its limits."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["DISABLED_MESSAGE", "TerminalSettings", "default_shell", "no_deployments"]

DISABLED_MESSAGE = "terminal access is not enabled on this node"
MAX_IDLE_TIMEOUT_S = 24 * 3600.0


def no_deployments(deployment_id: str) -> Path | None:
    """The lookup until the node serves deployments: every deployment id is unknown."""
    return None


def default_shell(env: dict[str, str] | None = None) -> str:
    """``CYXWIZ_TERMINAL_SHELL``, else /bin/bash, else /bin/sh."""
    env = os.environ if env is None else env
    chosen = env.get("CYXWIZ_TERMINAL_SHELL")
    if chosen:
        return chosen
    return "/bin/bash" if shutil.which("bash", path="/bin:/usr/bin") else "/bin/sh"


@dataclass(frozen=True, kw_only=True)
class TerminalSettings:
    """The terminal's policy. ``api_key`` None and no grant means local use: the server
    listens on loopback only and a loopback caller needs no credential.

    ``deployment_dir(deployment_id)`` names a deployment's working folder, or None for
    an unknown one (filled in by the node's deployment service).
    """

    enabled: bool = False
    api_key: str | None = None
    shell: str = field(default_factory=default_shell)
    user: str | None = None
    home: Path = Path(".cyxwiz")
    idle_timeout_s: float = 900.0
    max_lifetime_s: float = 8 * 3600.0
    max_sessions: int = 8
    max_per_user: int = 2
    kill_grace_s: float = 2.0
    deployment_dir: Callable[[str], Path | None] = no_deployments

    def __post_init__(self) -> None:
        if not 0 < self.idle_timeout_s <= MAX_IDLE_TIMEOUT_S:
            raise ValueError(f"--terminal-idle-timeout: must be > 0 and at most {MAX_IDLE_TIMEOUT_S:.0f} s "
                             f"(an idle terminal is never kept forever; got {self.idle_timeout_s})")
        if not 0 < self.max_lifetime_s <= 8 * 3600.0:
            raise ValueError(f"terminal max lifetime must be > 0 and at most 8 h (got {self.max_lifetime_s} s)")
        if self.max_sessions < 1 or self.max_per_user < 1:
            raise ValueError("terminal session limits must be >= 1")

    @property
    def open_mode(self) -> bool:
        """No API key configured: loopback only, and a loopback caller needs no credential."""
        return not self.api_key
