"""The read-only SQL guard: reads run, writes, settings and file access are refused."""

from __future__ import annotations

import time

import duckdb
import pytest
from hypothesis import given, strategies as st

from central.readmodel.projection import Projection
from central.readmodel.sql import SqlError, SqlLimits, SqlRefused, SqlTimeout, SqlTooLarge, check_read_only, run_read_query


@pytest.fixture(scope="module")
def projection(tmp_path_factory):
    projection = Projection(tmp_path_factory.mktemp("sql") / "p.duckdb")
    yield projection
    projection.close()


@pytest.mark.parametrize(
    "sql, verb",
    [
        ("DROP TABLE jobs", "DROP"),
        ("INSERT INTO jobs (job_id) VALUES ('x')", "INSERT"),
        ("UPDATE jobs SET state = 'x'", "UPDATE"),
        ("DELETE FROM jobs", "DELETE"),
        ("COPY jobs TO '/tmp/out.csv'", "COPY"),
        ("ATTACH '/tmp/other.duckdb' AS other", "ATTACH"),
        ("DETACH other", "DETACH"),
        ("INSTALL httpfs", "INSTALL"),
        ("LOAD httpfs", "LOAD"),
        ("SET threads = 1", "SET"),
        ("RESET threads", "RESET"),
        ("CREATE TABLE x (a INT)", "CREATE"),
        ("CREATE VIEW v AS SELECT 1", "CREATE"),
        ("ALTER TABLE jobs ADD COLUMN x INT", "ALTER"),
        ("EXPORT DATABASE '/tmp/dump'", "EXPORT"),
        ("CHECKPOINT", "CHECKPOINT"),
        ("VACUUM", "VACUUM"),
        ("BEGIN", "BEGIN"),
        ("CALL pragma_version()", "CALL"),
        ("PRAGMA threads = 1", "PRAGMA"),
        ("WITH d AS (SELECT 1) DELETE FROM jobs", "DELETE"),
        ("EXPLAIN ANALYZE DELETE FROM jobs", "DELETE"),
    ],
)
def test_writes_and_settings_are_refused_naming_the_statement(projection, sql, verb):
    with pytest.raises(SqlRefused, match=rf"^only read statements are allowed: got {verb} \(statement 1\)"):
        projection.query(sql)


def test_a_write_after_a_read_is_refused_before_anything_runs(projection):
    with pytest.raises(SqlRefused, match=r"got DROP \(statement 2\)"):
        projection.query("SELECT 1; DROP TABLE jobs")
    assert projection.query("SELECT count(*) FROM jobs").rows == [[0]]


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM read_csv('/etc/passwd')",
        "SELECT * FROM read_csv_auto('/etc/passwd')",
        "SELECT * FROM read_parquet('x.parquet')",
        "SELECT * FROM read_json('x.json')",
        "SELECT * FROM read_text('/etc/hostname')",
        "SELECT * FROM glob('/etc/*')",
        "SELECT * FROM parquet_scan('x.parquet')",
        "SELECT * FROM '/etc/passwd'",
        "SELECT * FROM jobs JOIN 'data.csv' USING (job_id)",
    ],
)
def test_reading_files_is_refused(projection, sql):
    with pytest.raises(SqlRefused, match="^reading files is not allowed"):
        projection.query(sql)


def test_external_access_is_off_even_past_the_text_checks(projection):
    """A file read the patterns miss still fails: the connection itself has no file access."""
    with pytest.raises(SqlRefused, match="not allowed"):
        run_read_query(projection.cursor(), "SELECT * FROM sniff_csv ('/etc/passwd')")
    with pytest.raises(duckdb.Error, match="locked"):
        projection.cursor().execute("SET enable_external_access = true")


@pytest.mark.parametrize(
    "sql, columns",
    [
        ("SELECT state, count(*) AS n FROM jobs GROUP BY state", ["state", "n"]),
        ("FROM nodes", None),
        ("WITH x AS (SELECT 1 AS a) SELECT a FROM x", ["a"]),
        ("DESCRIBE jobs", None),
        ("SHOW TABLES", ["name"]),
        ("PRAGMA table_info('epochs')", None),
        ("EXPLAIN SELECT * FROM jobs", None),
        ("SUMMARIZE epochs", None),
    ],
)
def test_reads_run(projection, sql, columns):
    result = projection.query(sql)
    if columns is not None:
        assert result.columns == columns


def test_bad_queries_give_duckdbs_message_in_one_line(projection):
    with pytest.raises(SqlError, match=r'^Binder Error: Referenced column "nope" not found') as info:
        projection.query("SELECT nope FROM jobs")
    assert "\n" not in str(info.value)
    with pytest.raises(SqlError, match="^Parser Error: syntax error"):
        projection.query("SELEC 1")
    with pytest.raises(SqlError, match="empty query"):
        projection.query("  ")


def test_rows_are_capped(projection):
    result = projection.query("SELECT * FROM range(25)", max_rows=10)
    assert len(result.rows) == 10 and result.truncated


@given(st.text(max_size=60))
def test_the_guard_never_crashes_on_arbitrary_text(text):
    try:
        check_read_only(text)
    except (SqlRefused, SqlError):
        pass


# --- limits ---------------------------------------------------------------------------------

SLOW = "SELECT sum(a.range * b.range) FROM range(1000000) a, range(1000000) b"


def test_a_huge_value_is_refused_inside_duckdb_naming_the_column(projection):
    with pytest.raises(SqlTooLarge) as info:
        projection.query("SELECT 1 AS n, repeat('x', 5000000) AS big")
    assert str(info.value) == ("a value of column 'big' is over 1 MiB, the limit per value: "
                               "select part of it (left(big, 1000)) or its length instead")
    nested = SqlLimits(max_value_bytes=100)
    with pytest.raises(SqlTooLarge, match="column 'l'"):
        projection.query("SELECT [repeat('x', 200)] AS l", limits=nested)
    with pytest.raises(SqlTooLarge, match="column 'b'"):
        projection.query("SELECT repeat('x', 200)::BLOB AS b", limits=nested)


def test_values_under_the_limit_keep_names_order_and_types(projection):
    result = projection.query(
        "SELECT range AS \"it's\", range::VARCHAR AS \"it's\", [range] AS l FROM range(5) ORDER BY range DESC -- note",
        limits=SqlLimits(max_value_bytes=100))
    assert result.columns == ["it's", "it's", "l"]
    assert result.rows == [[i, str(i), [i]] for i in range(4, -1, -1)]


def test_an_answer_over_the_size_limit_stops_fetching(projection):
    with pytest.raises(SqlTooLarge) as info:
        projection.query("SELECT repeat('y', 1000) FROM range(100000)", limits=SqlLimits(max_bytes=1 << 20))
    assert str(info.value).startswith("the answer is over 1 MiB after ")
    assert str(info.value).endswith("rows, the limit per query: select fewer columns, add a LIMIT, or aggregate")


def test_a_long_query_is_stopped_at_the_timeout(projection):
    started = time.monotonic()
    with pytest.raises(SqlTimeout) as info:
        projection.query(SLOW, limits=SqlLimits(timeout_s=0.5))
    assert time.monotonic() - started < 10
    assert str(info.value) == ("the query ran longer than 0.5 s, the limit per query, and was stopped: "
                               "filter it (WHERE), add a LIMIT, or aggregate")
    assert projection.query("SELECT 42").rows == [[42]]  # the next query is not interrupted
