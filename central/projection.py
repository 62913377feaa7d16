"""The read model: a DuckDB file folded from the event stream, exactly once.

    projection = Projection(home / "cyxwiz.duckdb")     # opens or creates file and schema
    projector = Projector(projection, bus)
    task = asyncio.create_task(projector.run())          # catch up, then follow live
    await projector.wait_for_seq(seq, timeout=5)          # read-your-writes for a caller
    columns, rows = projection.query("SELECT state, count(*) FROM jobs GROUP BY 1")

Each batch of messages is staged as one Arrow table and folded into the tables by the
set-based statements of ``central.projection_sql``; the batch and the stream sequence
it ends at are committed in one DuckDB transaction, so after a crash the projector
resumes from exactly that sequence. A message that does not decode, or makes no sense
for its aggregate, becomes a row of ``anomalies``; nothing on the stream can stop it.
"""

from __future__ import annotations

import asyncio
import os
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

import duckdb
import msgspec
import pyarrow as pa

from bus import EventBus, StoredMessage
from central import projection_sql as q
from central.sql import MAX_ROWS, QueryResult, run_read_query
from events import Device, InvalidEvent, decode, encode, subject_for

EVENTS_STREAM = q.EVENTS_STREAM
TELEMETRY_STREAM = q.TELEMETRY_STREAM
_SUBJECTS = {EVENTS_STREAM: "events.>", TELEMETRY_STREAM: "telemetry.>"}
_CONFIG = {
    "enable_external_access": False,  # user SQL runs on this database: no files
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
}
_STAGE_SCHEMA = pa.schema(
    [
        ("seq", pa.int64()),
        ("subject", pa.string()),
        ("type", pa.string()),
        ("event_id", pa.string()),
        ("occurred_at", pa.timestamp("us")),
        ("stored_at", pa.timestamp("us")),
        ("aggregate_id", pa.string()),
        ("raw", pa.string()),
    ]
)
_ANOMALY_SCHEMA = pa.schema(
    [("stream", pa.string()), ("seq", pa.int64()), ("subject", pa.string()), ("reason", pa.string()), ("raw", pa.string())]
)


class ProjectionError(Exception):
    """The projection file cannot be used."""


class ProjectionBusy(ProjectionError):
    """Another process (a running central) holds the DuckDB file."""


# --- rows as the REST API returns them (also its OpenAPI schemas) -----------------------


class JobRow(msgspec.Struct, kw_only=True):
    job_id: str
    name: str | None = None
    state: str
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
    updated_seq: int = 0


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
        try:
            self.con = duckdb.connect(str(self.path), read_only=read_only, config=dict(_CONFIG))
        except duckdb.IOException as exc:
            if "lock" in str(exc).lower():
                raise ProjectionBusy(
                    f"{self.path} is in use by another process (a running central?); "
                    "query it through central's REST API (--central) or stop it first"
                ) from exc
            raise ProjectionError(f"cannot open {self.path}: {str(exc).splitlines()[0]}") from exc
        if not read_only:
            self.con.execute(q.SCHEMA)
        self.con.execute("SET TimeZone = 'UTC'; SET lock_configuration = true")
        self._write_lock = threading.Lock()
        self._last = {s: self._stored_checkpoint(s) for s in (EVENTS_STREAM, TELEMETRY_STREAM)}

    def close(self) -> None:
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
            try:
                self._commit(stream, fresh)
            except duckdb.Error:
                for message in fresh:
                    try:
                        self._commit(stream, [message])
                    except duckdb.Error as exc:
                        bad = [(message, f"the projection could not apply it: {str(exc).splitlines()[0]}")]
                        self._commit(stream, [message], force_bad=bad)
        return self._last[stream]

    def _commit(self, stream: str, messages: Sequence[StoredMessage], force_bad: list | None = None) -> None:
        if force_bad is None:
            stage, types, bad = _stage(stream, messages)
        else:
            (stage, types, _), bad = _stage(stream, []), force_bad
        con = self.con
        con.begin()
        try:
            if stage.num_rows:
                con.register("stage_arrow", stage)
                for statement, needs in q.EVENTS_BATCH if stream == EVENTS_STREAM else q.TELEMETRY_BATCH:
                    if needs is None or not needs.isdisjoint(types):
                        con.execute(statement)
            if bad:
                con.register("bad_arrow", _anomaly_table(stream, bad))
                con.execute(q.ANOMALIES_FROM_ARROW)
            con.execute(q.SET_CHECKPOINT, {"seq": messages[-1].seq, "stream": stream})
            con.commit()
        except BaseException:
            con.rollback()
            raise
        finally:
            for name in ("stage_arrow", "bad_arrow"):
                try:
                    con.unregister(name)
                except duckdb.Error:
                    pass
        self._last[stream] = messages[-1].seq

    # --- reading ---------------------------------------------------------------------------

    def query(self, sql: str, *, max_rows: int = MAX_ROWS) -> QueryResult:
        """Run a user's read-only SQL; raises ``SqlRefused`` or ``SqlError``."""
        return run_read_query(self.cursor(), sql, max_rows=max_rows)

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


# --- staging: messages -> one Arrow table --------------------------------------------------


def _stage(
    stream: str, messages: Sequence[StoredMessage]
) -> tuple[pa.Table, set[str], list[tuple[StoredMessage, str]]]:
    """Decode each message: the good ones become columns (and their set of types), the
    rest (message, reason) pairs."""
    cols: list[list[Any]] = [[] for _ in range(8)]
    seqs, subjects, types, ids, occurred, stored, aggregates, raws = cols
    bad: list[tuple[StoredMessage, str]] = []
    for m in messages:
        try:
            event = decode(m.data)
            expected = subject_for(event)
        except InvalidEvent as exc:
            bad.append((m, str(exc)))
            continue
        name = type(event).__name__
        if expected != m.subject:
            bad.append((m, f"{name} belongs on subject {expected}, not {m.subject}"))
            continue
        seqs.append(m.seq)
        subjects.append(m.subject)
        types.append(name)
        ids.append(event.event_id)
        occurred.append(_micros(event.occurred_at))
        stored.append(m.time_ns // 1000)
        aggregates.append(getattr(event, "job_id", None) or event.node_id)
        raws.append(encode(event).decode())
    arrays = [pa.array(col, type=field.type) for col, field in zip(cols, _STAGE_SCHEMA)]
    return pa.Table.from_arrays(arrays, schema=_STAGE_SCHEMA), set(types), bad


def _anomaly_table(stream: str, bad: list[tuple[StoredMessage, str]]) -> pa.Table:
    return pa.Table.from_pylist(
        [
            {"stream": stream, "seq": m.seq, "subject": m.subject, "reason": reason,
             "raw": m.data.decode("utf-8", errors="replace")}
            for m, reason in bad
        ],
        schema=_ANOMALY_SCHEMA,
    )


def _micros(moment: datetime) -> int:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return round(moment.timestamp() * 1_000_000)


# --- the projector: stream -> projection ------------------------------------------------------


class Projector:
    """Keeps a ``Projection`` up to date with the bus.

    ``run()`` follows both streams (events, and telemetry with its own checkpoint) until
    cancelled; whatever arrived while a batch was being written is the next batch, so a
    backlog is applied in large batches and a trickle with little delay.
    """

    def __init__(
        self,
        projection: Projection,
        bus: EventBus,
        *,
        max_batch: int = 20_000,
        telemetry: bool = True,
        on_applied: Callable[[str, int], None] | None = None,
    ) -> None:
        """``on_applied(stream, seq)`` is called on the event loop after each commit."""
        self.projection = projection
        self.on_applied = on_applied
        self.bus = bus
        self.max_batch = max_batch
        self.streams = (EVENTS_STREAM, TELEMETRY_STREAM) if telemetry else (EVENTS_STREAM,)
        self._applied = asyncio.Condition()

    async def run(self) -> None:
        """Catch up, then apply live batches forever (cancel the task to stop)."""
        await asyncio.gather(*(self._follow(stream) for stream in self.streams))

    async def catch_up(self) -> int:
        """Apply everything the streams hold now; returns the events stream's checkpoint."""
        for stream in self.streams:
            start = self.projection.checkpoint(stream) + 1
            async for batch in self.bus.read_batches(start, subjects=_SUBJECTS[stream], max_batch=self.max_batch):
                await self._apply(stream, batch)
        return self.projection.checkpoint(EVENTS_STREAM)

    async def wait_for_seq(self, seq: int, timeout: float = 10.0, stream: str = EVENTS_STREAM) -> bool:
        """Wait until the projection has applied ``seq``; False if ``timeout`` passes first."""
        async with self._applied:
            try:
                await asyncio.wait_for(
                    self._applied.wait_for(lambda: self.projection.checkpoint(stream) >= seq), timeout
                )
            except asyncio.TimeoutError:
                return False
        return True

    async def _follow(self, stream: str) -> None:
        start = self.projection.checkpoint(stream) + 1
        async for batch in self.bus.subscribe_batches(start, subjects=_SUBJECTS[stream], max_batch=self.max_batch):
            await self._apply(stream, batch)

    async def _apply(self, stream: str, batch: list[StoredMessage]) -> None:
        seq = await asyncio.to_thread(self.projection.apply, stream, batch)
        if self.on_applied is not None:
            self.on_applied(stream, seq)
        async with self._applied:
            self._applied.notify_all()


async def rebuild(path: str | os.PathLike, bus: EventBus, *, max_batch: int = 20_000) -> int:
    """Replay the whole stream into a fresh projection at ``path``; returns its checkpoint.

    Written to a temporary file beside it and renamed over it at the end, so a failed
    rebuild leaves the old file as it was. Raises ``ProjectionBusy`` if a process holds it.
    """
    path = Path(path)
    _refuse_if_in_use(path)
    tmp = path.with_name(f"{path.name}.rebuild-{os.getpid()}")
    _remove_db(tmp)
    projection = Projection(tmp)
    try:
        last = await Projector(projection, bus, max_batch=max_batch).catch_up()
    except BaseException:
        projection.close()
        _remove_db(tmp)
        raise
    projection.close()  # checkpoints: the file is complete, no WAL left
    Path(f"{path}.wal").unlink(missing_ok=True)  # an old WAL must never meet the new file
    os.replace(tmp, path)
    return last


def _refuse_if_in_use(path: Path) -> None:
    if not path.exists():
        return
    try:
        duckdb.connect(str(path), read_only=True, config=dict(_CONFIG)).close()
    except duckdb.IOException as exc:
        if "lock" in str(exc).lower():
            raise ProjectionBusy(f"{path} is in use by another process (a running central?); stop it first") from exc
    except duckdb.Error:
        pass  # not a DuckDB file (or damaged): it gets replaced


def _remove_db(path: Path) -> None:
    path.unlink(missing_ok=True)
    Path(f"{path}.wal").unlink(missing_ok=True)
