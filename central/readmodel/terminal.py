"""The read model's ``terminal_sessions`` table: one row per terminal session of a node
(opened, then closed) and one per refused attempt, folded from the TerminalSession*
events. Its own fold and SQL, hooked into a batch by ``central.readmodel.fold``.

A Closed event fills in its session's row: in the batch itself when the Opened event is
in the same batch, else by an UPDATE keyed on (node_id, session_ref); a Closed event
whose Opened event the stream does not hold inserts a closed row of its own.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from events import TERMINAL_SESSION_TYPES

__all__ = ["BATCH_STATEMENTS", "SCHEMA", "TERMINAL_SESSION_TYPES", "TerminalFold"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS terminal_sessions (
    node_id VARCHAR, session_ref VARCHAR, state VARCHAR, principal VARCHAR, user_id VARCHAR,
    deployment_id VARCHAR, opened_at TIMESTAMP, closed_at TIMESTAMP, bytes_in BIGINT, bytes_out BIGINT,
    exit_code INTEGER, duration_s DOUBLE, reason VARCHAR, seq BIGINT, closed_seq BIGINT);
"""

_S, _I, _F, _T = pa.string(), pa.int64(), pa.float64(), pa.timestamp("us")
_ROW = pa.schema([("node_id", _S), ("session_ref", _S), ("state", _S), ("principal", _S), ("user_id", _S),
                  ("deployment_id", _S), ("opened_at", _T), ("closed_at", _T), ("bytes_in", _I), ("bytes_out", _I),
                  ("exit_code", _I), ("duration_s", _F), ("reason", _S), ("seq", _I), ("closed_seq", _I)])
_COLUMNS = tuple(_ROW.names)
_CLOSED = ("closed_at", "bytes_in", "bytes_out", "exit_code", "duration_s", "reason", "closed_seq")

BATCH_STATEMENTS: tuple[tuple[str, str], ...] = (
    ("b_terminal_rows", "INSERT INTO terminal_sessions BY NAME SELECT * FROM b_terminal_rows;"),
    ("b_terminal_closed", f"""
UPDATE terminal_sessions SET state = 'closed', {", ".join(f"{c} = d.{c}" for c in _CLOSED)}
FROM b_terminal_closed d
WHERE terminal_sessions.node_id = d.node_id AND terminal_sessions.session_ref = d.session_ref
  AND terminal_sessions.state = 'open';
INSERT INTO terminal_sessions BY NAME SELECT * FROM b_terminal_closed d
WHERE NOT EXISTS (SELECT 1 FROM terminal_sessions t WHERE t.node_id = d.node_id AND t.session_ref = d.session_ref);
"""),
)


class TerminalFold:
    """The terminal rows of one batch: new rows, and closings of rows of earlier batches."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.opened: dict[tuple[str, str], dict[str, Any]] = {}
        self.closed: dict[tuple[str, str], dict[str, Any]] = {}

    def add(self, seq: int, ev: Any, occurred: int) -> str | None:
        """Fold one TerminalSession* event; why it is refused, or None."""
        name = type(ev).__name__
        if name == "TerminalSessionDenied":
            self.rows.append(_row(ev, seq, state="denied", session_ref="", reason=ev.reason, opened_at=occurred))
            return None
        key = (ev.node_id, ev.session_ref)
        if name == "TerminalSessionOpened":
            if key in self.opened:
                return f"terminal session {ev.session_ref} of node {ev.node_id} was already opened"
            row = self.opened[key] = _row(ev, seq, state="open", session_ref=ev.session_ref, opened_at=occurred)
            self.rows.append(row)
            return None
        closing = dict(closed_at=occurred, bytes_in=ev.bytes_in, bytes_out=ev.bytes_out, exit_code=ev.exit_code,
                       duration_s=ev.duration_s, reason=ev.reason, closed_seq=seq)
        row = self.opened.get(key)
        if row is not None:
            row.update(state="closed", **closing)
        else:
            self.closed[key] = _row(ev, seq, state="closed", session_ref=ev.session_ref, **closing)
        return None

    def tables(self) -> dict[str, pa.Table]:
        out = {}
        for name, rows in (("b_terminal_rows", self.rows), ("b_terminal_closed", list(self.closed.values()))):
            if rows:
                out[name] = pa.Table.from_pylist([{c: r.get(c) for c in _COLUMNS} for r in rows], schema=_ROW)
        return out


def _row(ev: Any, seq: int, **fields: Any) -> dict[str, Any]:
    row = dict(node_id=ev.node_id, principal=ev.principal, user_id=getattr(ev, "user_id", ""),
               deployment_id=ev.deployment_id, seq=seq)
    row.update(fields)
    return row
