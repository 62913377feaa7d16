"""Read-only SQL for users: the statement guard, the limits, and the query runner.

Two fences. Each statement's type is checked with DuckDB's own parser before anything
runs (only SELECT, EXPLAIN of a read, and a few PRAGMAs that describe tables), and the
connection is opened with ``enable_external_access = false`` and its configuration
locked, so a query can neither read nor write files even if it slipped past the first.

Then the limits (``SqlLimits``), so one query cannot hold central: it is interrupted
after ``timeout_s``; at most ``max_rows`` rows come back (the answer says ``truncated``);
a value over ``max_value_bytes`` is refused inside DuckDB before it is copied out (each
text, blob or nested column of a SELECT is wrapped in a length check); rows are
fetched in chunks, each measured as the JSON it becomes, and fetching stops when the
answer passes ``max_bytes``.

    SqlRefused   the query is not a read, or touches files: say what was refused
    SqlError     DuckDB could not run it (syntax, unknown column): its message, one line
    SqlTimeout   (an SqlError) it ran past the time limit
    SqlTooLarge  (an SqlError) a value or the whole answer is over its size limit (HTTP 413)
"""

from __future__ import annotations

import re
import threading
from typing import Any

import duckdb
import msgspec

from events.errors import CyxwizError

__all__ = [
    "MAX_ROWS", "QueryResult", "SqlError", "SqlLimits", "SqlRefused", "SqlTimeout", "SqlTooLarge",
    "check_read_only", "run_read_query",
]

MAX_ROWS = 10_000
TIMEOUT_S = 30.0
MAX_VALUE_BYTES = 1 << 20
MAX_RESULT_BYTES = 16 << 20
_CHUNK_ROWS = 2048  # at most, per fetch
_FIRST_CHUNK_ROWS = 16
_TOO_BIG = "cyxwiz-value-too-large:"  # the marker of the length check's error(), then the column name
_VARIABLE = ("VARCHAR", "BLOB", "BIT", "JSON")
_NESTED = re.compile(r"\[|\b(STRUCT|MAP|UNION)\(")
_measure = msgspec.json.Encoder(decimal_format="number", enc_hook=str)

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


class SqlRefused(CyxwizError, ValueError):
    """The query is not allowed here (a write, a setting, or file access)."""

    code = 400


class SqlError(CyxwizError, ValueError):
    """DuckDB rejected the query (syntax, unknown table or column...)."""

    code = 400


class SqlTimeout(SqlError):
    """The query ran past its time limit and was interrupted."""


class SqlTooLarge(SqlError):
    """A value, or the whole answer, is over its size limit."""

    code = 413


class SqlLimits(msgspec.Struct, frozen=True, kw_only=True):
    """What one user query may take: time, bytes per value, bytes of the whole answer."""

    timeout_s: float = TIMEOUT_S
    max_value_bytes: int = MAX_VALUE_BYTES
    max_bytes: int = MAX_RESULT_BYTES


class QueryResult(msgspec.Struct, frozen=True, kw_only=True):
    """The answer of ``POST /api/v1/sql`` and ``Projection.query``."""

    columns: list[str]
    rows: list[list[Any]]
    truncated: bool = False  # more than max_rows rows; only the first max_rows are here


def check_read_only(sql: str) -> list[str]:
    """The statements of ``sql`` if every one is a read, else raise ``SqlRefused``."""
    return [statement.query for statement in _read_statements(sql)]


def run_read_query(
    cursor: duckdb.DuckDBPyConnection, sql: str, *, max_rows: int = MAX_ROWS, limits: SqlLimits = SqlLimits()
) -> QueryResult:
    """Check ``sql``, run it on ``cursor`` (a connection with external access off, used
    by this call only) within ``limits``, and return at most ``max_rows`` rows."""
    statements = _read_statements(sql)
    fired = threading.Event()

    def interrupt() -> None:
        fired.set()
        try:
            cursor.interrupt()
        except duckdb.Error:  # the query ended and its cursor closed meanwhile
            pass

    timer = threading.Timer(limits.timeout_s, interrupt)
    timer.daemon = True
    timer.start()
    try:
        for statement in statements[:-1]:
            cursor.execute(statement.query)
        columns = _execute_last(cursor, statements[-1], limits.max_value_bytes)
        rows, truncated = _fetch(cursor, max_rows, limits.max_bytes, fired) if columns else ([], False)
    except duckdb.PermissionException as exc:
        raise SqlRefused(f"reading or writing files is not allowed: {_one_line(exc)}") from exc
    except duckdb.InterruptException as exc:
        raise _timeout(limits) from exc
    except duckdb.InvalidInputException as exc:
        if _TOO_BIG in str(exc):
            name = str(exc).split(_TOO_BIG, 1)[1].strip()
            raise SqlTooLarge(
                f"a value of column {name!r} is over {_size(limits.max_value_bytes)}, the limit per value: "
                f"select part of it (left({name}, 1000)) or its length instead") from exc
        raise SqlError(_one_line(exc)) from exc
    except duckdb.Error as exc:
        raise SqlError(_one_line(exc)) from exc
    finally:
        timer.cancel()
        timer.join()
    if fired.is_set():
        raise _timeout(limits)
    return QueryResult(columns=columns, rows=rows, truncated=truncated)


def _read_statements(sql: str) -> list[Any]:
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
    return statements


def _execute_last(cursor: duckdb.DuckDBPyConnection, statement: Any, max_value_bytes: int) -> list[str]:
    """Execute the statement whose rows are the answer; a SELECT with text, blob or nested
    columns runs wrapped so that DuckDB refuses a value over ``max_value_bytes``."""
    text = statement.query.strip().rstrip(";")
    if statement.type == duckdb.StatementType.SELECT:
        relation = cursor.sql(text)
        names, types = list(relation.columns), [str(t) for t in relation.types]
        checked = [i for i, t in enumerate(types) if t in _VARIABLE or _NESTED.search(t)]
        if checked:
            cursor.execute(_wrapped(text, names, types, checked, max_value_bytes))
            return names
    cursor.execute(text)
    return [d[0] for d in cursor.description or []]


def _wrapped(text: str, names: list[str], types: list[str], checked: list[int], limit: int) -> str:
    """``text`` as a subquery whose columns are c0, c1...; the checked ones pass a length test."""
    parts = []
    for i, (name, kind) in enumerate(zip(names, types)):
        alias = '"' + name.replace('"', '""') + '"'
        if i not in checked:
            parts.append(f"c{i} AS {alias}")
            continue
        length = f"octet_length(c{i})" if kind == "BLOB" else f"strlen(c{i})" if kind == "VARCHAR" else f"strlen(CAST(c{i} AS VARCHAR))"
        marker = "'" + (_TOO_BIG + name).replace("'", "''") + "'"
        parts.append(f"CASE WHEN {length} > {limit} THEN error({marker}) ELSE c{i} END AS {alias}")
    inner = ", ".join(f"c{i}" for i in range(len(names)))
    return f"SELECT {', '.join(parts)} FROM (\n{text}\n) AS _user_query({inner})"


def _fetch(cursor: duckdb.DuckDBPyConnection, max_rows: int, max_bytes: int, fired: threading.Event):
    """Up to ``max_rows`` rows (and whether there were more), chunk by chunk, stopping
    as soon as their JSON passes ``max_bytes``. Chunks start small and are sized from the
    bytes per row seen so far, so wide rows never come out many at a time."""
    rows: list[list[Any]] = []
    size, want = 0, _FIRST_CHUNK_ROWS
    while len(rows) <= max_rows and not fired.is_set():
        chunk = cursor.fetchmany(min(want, max_rows + 1 - len(rows)))
        if not chunk:
            break
        size += len(_measure.encode(chunk))
        if size > max_bytes:
            raise SqlTooLarge(
                f"the answer is over {_size(max_bytes)} after {len(rows) + len(chunk):,} rows, the limit per query: "
                "select fewer columns, add a LIMIT, or aggregate")
        rows.extend(list(r) for r in chunk)
        per_row = size / len(rows)
        want = int(max(1, min(_CHUNK_ROWS, (max_bytes - size) / per_row / 2 + 1)))
    return rows[:max_rows], len(rows) > max_rows


def _timeout(limits: SqlLimits) -> SqlTimeout:
    return SqlTimeout(f"the query ran longer than {limits.timeout_s:g} s, the limit per query, and was stopped: "
                      "filter it (WHERE), add a LIMIT, or aggregate")


def _size(n: int) -> str:
    return f"{n / (1 << 20):g} MiB" if n >= 1 << 20 else f"{n:,} bytes"


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
