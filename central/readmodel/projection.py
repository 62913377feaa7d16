"""The read model: a DuckDB file folded from the event stream, exactly once.

    projection = Projection(home / "cyxwiz.duckdb")     # opens or creates file and schema
    projector = Projector(projection, bus)               # central.readmodel.projector
    task = asyncio.create_task(projector.run())          # catch up, then follow live
    await projector.wait_for_seq(seq, timeout=5)          # read-your-writes for a caller
    columns, rows = projection.query("SELECT state, count(*) FROM jobs GROUP BY 1")

Each batch of messages is checked and folded in Python through the lifecycle's own
rules (``central.lifecycle``: the ones central's state folds with), against an index of
what is committed (the lifecycle state of every job and node), into Arrow tables of
final rows and per-row deltas; the statements of ``central.readmodel.schema`` insert and merge them. The batch
and the stream sequence it ends at are committed in one DuckDB transaction, so after a
crash the projector resumes from exactly that sequence; the index changes only after
that commit. A message that does not decode, or makes no sense for its aggregate,
becomes a row of ``anomalies``; nothing on the stream can stop it. The rules look only
at what came before an event in stream order, so the tables do not depend on where the
batches are cut.
"""

from __future__ import annotations

import fcntl
import os
import threading
from datetime import datetime
from pathlib import Path
from typing import Any, Sequence

import duckdb
import msgspec

from bus import StoredMessage
from central.readmodel import schema as q
from central.readmodel.deployments import DEPLOYMENT_SCHEMA, DEPLOYMENT_STATEMENTS, DEPLOYMENT_TABLES
from central.readmodel.fold import REFUSED, Batch, Index
from central.readmodel.sql import MAX_ROWS, QueryResult, SqlLimits, run_read_query
from events import CyxwizError, Device

EVENTS_STREAM = q.EVENTS_STREAM
TELEMETRY_STREAM = q.TELEMETRY_STREAM
DUCKDB_CONFIG = {
    "enable_external_access": False,  # user SQL runs on this database: no files
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
}
def held_by_another_process(path: Path, *, to_write: bool = True) -> bool:
    """True when another process holds DuckDB's lock on ``path`` in a way that keeps us
    out (a writer keeps everyone out; readers keep out a writer). DuckDB takes an fcntl
    lock on the file, and its own error for a held one is a plain IOException."""
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:
        return False  # no file yet (or not ours to open): nothing holds it
    try:
        fcntl.lockf(fd, (fcntl.LOCK_EX if to_write else fcntl.LOCK_SH) | fcntl.LOCK_NB)
    except OSError:
        return True
    else:
        fcntl.lockf(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


class ProjectionError(CyxwizError):
    """The projection file cannot be used."""

    code = 503


class ProjectionBusy(ProjectionError):
    """Another process (a running central) holds the DuckDB file."""

    code = 409


# --- rows as the REST API returns them (also its OpenAPI schemas) -----------------------


class JobRow(msgspec.Struct, kw_only=True):
    job_id: str
    name: str | None = None
    state: str
    cancel_requested: bool = False
    job_type: str | None = None
    dataset_uri: str | None = None
    epochs: int | None = None
    batch_size: int | None = None
    priority: int | None = None
    model_definition: str | None = None
    hyperparameters: dict[str, str] = {}
    required_device: str | None = None
    min_memory_bytes: int | None = None
    submitted_by: str | None = None
    node_id: str | None = None
    attempt: int = 0
    current_epoch: int = 0
    submitted_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    final_loss: float | None = None
    final_accuracy: float | None = None
    final_val_accuracy: float | None = None
    artifact_uri: str | None = None
    sha256: str | None = None
    size_bytes: int | None = None
    compute_seconds: float | None = None
    error: str | None = None
    error_code: int | None = None
    updated_seq: int = 0
    retryable: bool | None = None  # a failed job: whether a run elsewhere may succeed
    waiting_reason: str | None = None  # a queued job: why no node has taken it
    phase: str | None = None  # the node's latest phase of the current attempt: loading, compiling, ...
    phase_at: datetime | None = None
    phase_epoch: int | None = None
    phase_step: int | None = None
    phase_steps: int | None = None


class EpochRow(msgspec.Struct, kw_only=True):
    job_id: str
    attempt: int
    epoch: int
    node_id: str | None = None
    loss: float | None = None
    accuracy: float | None = None
    val_loss: float | None = None
    val_accuracy: float | None = None
    seconds: float | None = None
    samples_per_s: float | None = None
    checkpoint_uri: str | None = None
    occurred_at: datetime | None = None
    seq: int = 0


class JobDetail(JobRow, kw_only=True):
    epochs_done: list[EpochRow] = []


class NodeRow(msgspec.Struct, kw_only=True):
    node_id: str
    name: str | None = None
    endpoint: str | None = None
    devices: list[Device] = []
    cpu_cores: int | None = None
    ram_bytes: int | None = None
    slots: int | None = None
    version: str | None = None
    state: str
    registered_at: datetime | None = None
    last_seen: datetime | None = None
    updated_seq: int = 0


class NodeMetricRow(msgspec.Struct, kw_only=True):
    node_id: str
    observed_at: datetime
    cpu_percent: float | None = None
    ram_used_bytes: int | None = None
    ram_total_bytes: int | None = None
    gpu_percent: float | None = None
    gpu_memory_used_bytes: int | None = None
    gpu_memory_total_bytes: int | None = None
    active_jobs: int | None = None
    seq: int = 0


# --- the projection file -----------------------------------------------------------------


class Projection:
    """The DuckDB file of the read model, opened by one process.

    ``Projection(path)`` creates the file and its tables if needed. ``read_only=True``
    opens an existing file for queries only (the CLI when central is stopped).
    ``apply`` is the single writer (serialised by a lock); ``query`` and the row readers
    may be called from any thread: each uses its own cursor.
    """

    def __init__(self, path: str | os.PathLike, *, read_only: bool = False) -> None:
        self.path = Path(path)
        self.read_only = read_only
        if read_only and not self.path.exists():
            raise ProjectionError(f"no projection at {self.path}: run `cyxwiz projection rebuild` or start central")
        if not read_only:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        if held_by_another_process(self.path, to_write=not read_only):
            raise ProjectionBusy(
                f"{self.path} is in use by another process (a running central?); "
                "query it through central's REST API (--central) or stop it first")
        try:
            self.con = duckdb.connect(str(self.path), read_only=read_only, config=dict(DUCKDB_CONFIG))
        except duckdb.Error as exc:
            raise ProjectionError(f"cannot open {self.path}: {str(exc).splitlines()[0]}") from exc
        if not read_only:
            self._ensure_schema()
        self.con.execute("SET TimeZone = 'UTC'; SET lock_configuration = true")
        self._write_lock = threading.Lock()
        self._last = {s: self._stored_checkpoint(s) for s in (EVENTS_STREAM, TELEMETRY_STREAM)}
        # what the lifecycle rules need of the committed state: loaded now, so the first live
        # batch pays nothing (a file of a long history re-folds its open jobs here)
        self._index: Index | None = None if read_only else Index.load(self.con)

    def _ensure_schema(self) -> None:
        """Create the tables; a file of another schema version is emptied first, and the
        projector replays the stream into it from its (now zero) checkpoint."""
        stored = None
        if self.con.execute(q.HAS_SCHEMA_TABLE).fetchone()[0]:
            stored = self.con.execute(q.STORED_SCHEMA_VERSION).fetchone()[0]
        has_tables = self.con.execute("SELECT count(*) FROM information_schema.tables").fetchone()[0]
        if stored != q.SCHEMA_VERSION and has_tables:
            for table in (*q.TABLES, *DEPLOYMENT_TABLES):
                self.con.execute(f"DROP TABLE IF EXISTS {table}")
        self.con.execute(q.SCHEMA)
        self.con.execute(DEPLOYMENT_SCHEMA)

    def close(self) -> None:
        """Close once the batch being written (if any) is committed."""
        with self._write_lock:
            self.con.close()

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """A cursor for another thread; it sees committed batches only."""
        return self.con.cursor()

    def checkpoint(self, stream: str = EVENTS_STREAM) -> int:
        """The last stream sequence applied (0: none)."""
        return self._last[stream]

    def _stored_checkpoint(self, stream: str) -> int:
        row = self.cursor().execute(
            "SELECT last_seq FROM projection_checkpoint WHERE stream = ?", [stream]
        ).fetchone()
        return int(row[0]) if row else 0

    # --- writing ---------------------------------------------------------------------------

    def apply(self, stream: str, messages: Sequence[StoredMessage]) -> int:
        """Fold ``messages`` (in stream order) in, with the checkpoint, in one transaction.

        Returns the new checkpoint. If DuckDB refuses the batch, each message is tried on
        its own, and one DuckDB refuses alone is recorded as an anomaly.
        """
        fresh = [m for m in messages if m.seq > self._last[stream]]
        if not fresh:
            return self._last[stream]
        with self._write_lock:
            if self._index is None:
                self._index = Index.load(self.con)
            try:
                self._commit(stream, fresh)
            except REFUSED:
                for message in fresh:
                    try:
                        self._commit(stream, [message])
                    except REFUSED as exc:
                        why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                        self._commit(stream, [message], force_bad=f"the projection could not apply it: {why}")
        return self._last[stream]

    def _commit(self, stream: str, messages: Sequence[StoredMessage], force_bad: str | None = None) -> None:
        """One transaction: the batch's tables, then the checkpoint; then the index."""
        batch = Batch(stream, self._index)
        if force_bad is None:
            for message in messages:
                batch.add(message)
        else:
            batch.bad(messages[0], force_bad)
        tables = batch.deployments.tables(self.con, batch) | batch.tables()
        con = self.con
        con.begin()
        try:
            for name, statement in (*q.BATCH_STATEMENTS, *DEPLOYMENT_STATEMENTS):
                table = tables.get(name)
                if table is not None:
                    con.register(name, table)
                    con.execute(statement)
            con.execute(q.SET_CHECKPOINT, {"seq": messages[-1].seq, "stream": stream})
            con.commit()
        except BaseException:
            try:
                con.rollback()
            finally:
                self._index = Index.load(self.con)  # whatever happened, match the file again
            raise
        finally:
            for name in tables:
                try:
                    con.unregister(name)
                except duckdb.Error:
                    pass
        self._last[stream] = messages[-1].seq
        batch.commit_index()

    # --- reading ---------------------------------------------------------------------------

    def query(self, sql: str, *, max_rows: int = MAX_ROWS, limits: SqlLimits = SqlLimits()) -> QueryResult:
        """Run a user's read-only SQL within ``limits`` on a cursor of its own; raises
        ``SqlRefused`` or ``SqlError`` (``SqlTimeout``, ``SqlTooLarge``)."""
        cursor = self.cursor()
        try:
            return run_read_query(cursor, sql, max_rows=max_rows, limits=limits)
        finally:
            cursor.close()

    def jobs(self, state: str | None = None, limit: int = 100) -> list[JobRow]:
        where, params = ("WHERE state = ?", [state]) if state else ("", [])
        rows = self._dicts(f"SELECT * FROM jobs {where} ORDER BY submitted_at DESC, job_id LIMIT ?", [*params, limit])
        return [_job(row, JobRow) for row in rows]

    def job(self, job_id: str) -> JobDetail | None:
        rows = self._dicts("SELECT * FROM jobs WHERE job_id = ?", [job_id])
        if not rows:
            return None
        epochs = self._dicts("SELECT * FROM epochs WHERE job_id = ? ORDER BY attempt, epoch", [job_id])
        return _job({**rows[0], "epochs_done": epochs}, JobDetail)

    def nodes(self) -> list[NodeRow]:
        rows = self._dicts("SELECT * FROM nodes ORDER BY node_id", [])
        return [msgspec.convert({**r, "devices": msgspec.json.decode(r["devices"] or "[]")}, NodeRow) for r in rows]

    def node_exists(self, node_id: str) -> bool:
        return bool(self._dicts("SELECT node_id FROM nodes WHERE node_id = ?", [node_id]))

    def node_metrics(self, node_id: str, limit: int = 100) -> list[NodeMetricRow]:
        rows = self._dicts("SELECT * FROM node_metrics WHERE node_id = ? ORDER BY observed_at DESC LIMIT ?", [node_id, limit])
        return [msgspec.convert(r, NodeMetricRow) for r in rows]

    def _dicts(self, sql: str, params: list[Any]) -> list[dict[str, Any]]:
        cursor = self.cursor()
        cursor.execute(sql, params)
        columns = [d[0] for d in cursor.description]
        return [dict(zip(columns, row)) for row in cursor.fetchall()]


def _job(row: dict[str, Any], kind: type) -> Any:
    return msgspec.convert({**row, "hyperparameters": msgspec.json.decode(row["hyperparameters"] or "{}")}, kind)


