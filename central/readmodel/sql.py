"""Read-only SQL for users: the statement guard and the query runner.

Two fences. Each statement's type is checked with DuckDB's own parser before anything
runs (only SELECT, EXPLAIN of a read, and a few PRAGMAs that describe tables), and the
connection is opened with ``enable_external_access = false`` and its configuration
locked, so a query can neither read nor write files even if it slipped past the first.

    SqlRefused   the query is not a read, or touches files: say what was refused
    SqlError     DuckDB could not run it (syntax, unknown column): its message, one line
"""

from __future__ import annotations

import re
import threading
from typing import Any

import duckdb
import msgspec

MAX_ROWS = 10_000
TIMEOUT_S = 30.0

_READ_PRAGMAS = frozenset(
    {"table_info", "show_tables", "show_tables_expanded", "database_size", "storage_info", "show", "version"}
)
# Table functions that read files; with external access off DuckDB refuses them anyway,
# this only makes the message name the function.
_FILE_FUNCTION = re.compile(
    r"\b(read_\w+|\w+_scan|glob|sniff_csv|parquet_\w+|iceberg_\w+|delta_\w+)\s*\(", re.IGNORECASE
)
# A string literal used as a table: FROM 'data.csv', JOIN "x.parquet" is an identifier.
_FILE_AS_TABLE = re.compile(r"\b(FROM|JOIN)\s+'([^']*)'", re.IGNORECASE)


class SqlRefused(ValueError):
    """The query is not allowed here (a write, a setting, or file access)."""


class SqlError(ValueError):
    """DuckDB rejected the query (syntax, unknown table or column...)."""


class QueryResult(msgspec.Struct, frozen=True, kw_only=True):
    """The answer of ``POST /api/v1/sql`` and ``Projection.query``."""

    columns: list[str]
    rows: list[list[Any]]
    truncated: bool = False  # more than max_rows rows; only the first max_rows are here


def check_read_only(sql: str) -> list[str]:
    """The statements of ``sql`` if every one is a read, else raise ``SqlRefused``."""
    if not sql or not sql.strip():
        raise SqlError("empty query: give one SELECT statement")
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise SqlError(_one_line(exc)) from exc
    if not statements:
        raise SqlError("empty query: give one SELECT statement")
    for number, statement in enumerate(statements, 1):
        _check_statement(statement, number)
    _check_no_files(sql)
    return [statement.query for statement in statements]


def run_read_query(
    cursor: duckdb.DuckDBPyConnection, sql: str, *, max_rows: int = MAX_ROWS, timeout_s: float = TIMEOUT_S
) -> QueryResult:
    """Check ``sql``, run it on ``cursor`` (a connection with external access off), and
    return at most ``max_rows`` rows; a query running past ``timeout_s`` is interrupted."""
    statements = check_read_only(sql)
    timer = threading.Timer(timeout_s, cursor.interrupt)
    timer.start()
    try:
        for text in statements:
            cursor.execute(text)
        columns = [d[0] for d in cursor.description or []]
        rows = cursor.fetchmany(max_rows + 1) if cursor.description else []
    except duckdb.PermissionException as exc:
        raise SqlRefused(f"reading or writing files is not allowed: {_one_line(exc)}") from exc
    except duckdb.InterruptException as exc:
        raise SqlError(f"query ran longer than {timeout_s:.0f}s and was stopped") from exc
    except duckdb.Error as exc:
        raise SqlError(_one_line(exc)) from exc
    finally:
        timer.cancel()
    return QueryResult(
        columns=columns, rows=[list(r) for r in rows[:max_rows]], truncated=len(rows) > max_rows
    )


def _check_statement(statement: Any, number: int) -> None:
    kind = statement.type
    text = statement.query.strip().rstrip(";")
    if kind == duckdb.StatementType.SELECT:
        return
    if kind == duckdb.StatementType.EXPLAIN:
        inner = re.sub(r"^\s*EXPLAIN\s+(ANALY[SZ]E\s+|\([^)]*\)\s*)?", "", text, flags=re.IGNORECASE)
        try:
            inner_statements = duckdb.extract_statements(inner)
        except duckdb.Error as exc:
            raise SqlError(_one_line(exc)) from exc
        for inner_statement in inner_statements:
            _check_statement(inner_statement, number)
        return
    if kind == duckdb.StatementType.PRAGMA:
        name = re.match(r"^\s*PRAGMA\s+(\w+)", text, re.IGNORECASE)
        if name and name.group(1).lower() in _READ_PRAGMAS:
            return
        allowed = ", ".join(sorted(_READ_PRAGMAS))
        raise SqlRefused(f"only read statements are allowed: got PRAGMA (statement {number}); allowed pragmas: {allowed}")
    verb = text.split(None, 1)[0].upper() if text else kind.name
    if verb in ("WITH", "(") or not verb.isalpha():
        verb = kind.name
    raise SqlRefused(f"only read statements are allowed: got {verb} (statement {number})")


def _check_no_files(sql: str) -> None:
    function = _FILE_FUNCTION.search(sql)
    if function:
        raise SqlRefused(f"reading files is not allowed: {function.group(1)}() (query the tables instead)")
    literal = _FILE_AS_TABLE.search(sql)
    if literal:
        raise SqlRefused(f"reading files is not allowed: {literal.group(2)!r} used as a table")


def _one_line(exc: BaseException) -> str:
    """DuckDB's message without its caret diagram: the first line, plus a hint if any."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    keep = [line for line in lines if not line.startswith(("LINE ", "^"))]
    return " ".join(keep) or type(exc).__name__
