"""The node's terminal: authenticated PTY sessions on 50053, off unless enabled, limited
and audited. ``TerminalServicer`` serves it; ``TerminalSettings`` is its policy;
``AuditLog`` carries its facts to central."""

from node.terminal.audit import AuditLog
from node.terminal.service import EXIT_CODE_TRAILER, TerminalServicer
from node.terminal.settings import DISABLED_MESSAGE, TerminalSettings, default_shell

__all__ = ["DISABLED_MESSAGE", "EXIT_CODE_TRAILER", "AuditLog", "TerminalServicer", "TerminalSettings",
           "default_shell"]
