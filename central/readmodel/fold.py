"""Folding one batch in Python: each message checked against an index of what the
projection has committed, and turned into typed Arrow tables of rows and deltas that
the statements of ``central.readmodel.schema`` insert and merge (see ``central.readmodel.projection``).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Sequence

import duckdb
import msgspec
import pyarrow as pa

from bus import StoredMessage
from central.readmodel import schema as q
from central.readmodel.schema import TELEMETRY_STREAM
from events import InvalidEvent, subject_for
from events.codec import decode_json
from events.catalog import TELEMETRY_TYPES, JobEvent

_REFUSED = (duckdb.Error, pa.ArrowException, OverflowError)

_JOB_STATE = {
    "JobSubmitted": "queued", "JobAssigned": "assigned", "JobRejected": "queued", "JobStarted": "running",
    "JobCompleted": "completed", "JobFailed": "failed", "JobRequeued": "queued",
    "JobCancelRequested": "cancelling", "JobCancelled": "cancelled",
}
_TERMINAL = frozenset({"JobCompleted", "JobFailed", "JobCancelled"})
_OUTCOME = {"JobCompleted": "completed", "JobFailed": "failed", "JobRequeued": "requeued", "JobCancelled": "cancelled"}
_NODE_STATE = {"NodeRegistered": "online", "NodeLost": "lost", "NodeDeregistered": "deregistered"}

_S, _I, _F, _B, _T = pa.string(), pa.int64(), pa.float64(), pa.bool_(), pa.timestamp("us")
_FINISH = [("finished_at", _T), ("final_loss", _F), ("final_accuracy", _F), ("final_val_accuracy", _F),
           ("artifact_uri", _S), ("sha256", _S), ("size_bytes", _I), ("compute_seconds", _F), ("error", _S)]
_SCHEMAS = {
    "b_events": pa.schema([("seq", _I), ("subject", _S), ("type", _S), ("event_id", _S), ("occurred_at", _T),
                           ("stored_at", _T), ("aggregate_id", _S), ("raw", _S)]),
    "b_anomalies": pa.schema([("stream", _S), ("seq", _I), ("subject", _S), ("reason", _S), ("raw", _S)]),
    "b_jobs": pa.schema([
        ("job_id", _S), ("name", _S), ("state", _S), ("job_type", _S), ("dataset_uri", _S), ("epochs", _I),
        ("batch_size", _I), ("priority", _I), ("model_definition", _S), ("hyperparameters", _S),
        ("required_device", _S), ("min_memory_bytes", _I), ("submitted_by", _S), ("node_id", _S),
        ("attempt", _I), ("current_epoch", _I), ("submitted_at", _T), ("started_at", _T), *_FINISH,
        ("updated_seq", _I)]),
    "b_job_deltas": pa.schema([
        ("job_id", _S), ("state", _S), ("node_changed", _B), ("node_id", _S), ("attempt", _I),
        ("current_epoch", _I), ("started_at", _T), ("finished", _B), *_FINISH, ("updated_seq", _I)]),
    "b_epochs": pa.schema([
        ("job_id", _S), ("attempt", _I), ("epoch", _I), ("node_id", _S), ("loss", _F), ("accuracy", _F),
        ("val_loss", _F), ("val_accuracy", _F), ("seconds", _F), ("samples_per_s", _F),
        ("checkpoint_uri", _S), ("occurred_at", _T), ("seq", _I)]),
    "b_assignments": pa.schema([("job_id", _S), ("attempt", _I), ("node_id", _S), ("assigned_at", _T),
                                ("outcome", _S), ("seq", _I), ("closed_seq", _I)]),
    "b_assignment_deltas": pa.schema([("job_id", _S), ("seq", _I), ("outcome", _S), ("closed_seq", _I)]),
    "b_nodes": pa.schema([
        ("node_id", _S), ("name", _S), ("endpoint", _S), ("devices", _S), ("cpu_cores", _I), ("ram_bytes", _I),
        ("slots", _I), ("version", _S), ("state", _S), ("registered_at", _T), ("last_seen", _T),
        ("updated_seq", _I)]),
    "b_node_deltas": pa.schema([
        ("node_id", _S), ("registered", _B), ("name", _S), ("endpoint", _S), ("devices", _S), ("cpu_cores", _I),
        ("ram_bytes", _I), ("slots", _I), ("version", _S), ("registered_at", _T), ("state", _S),
        ("last_seen", _T), ("updated_seq", _I)]),
    "b_metrics": pa.schema([
        ("node_id", _S), ("observed_at", _T), ("cpu_percent", _F), ("ram_used_bytes", _I),
        ("ram_total_bytes", _I), ("gpu_percent", _F), ("gpu_memory_used_bytes", _I),
        ("gpu_memory_total_bytes", _I), ("active_jobs", _I), ("seq", _I)]),
    "b_seen": pa.schema([("node_id", _S), ("seen", _T)]),
}
_JOB_COLUMNS = _SCHEMAS["b_jobs"].names
_DELTA_COLUMNS = _SCHEMAS["b_job_deltas"].names
_NODE_COLUMNS = _SCHEMAS["b_nodes"].names
_NODE_DELTA_COLUMNS = _SCHEMAS["b_node_deltas"].names


class _OpenJob:
    """What the checks need of a job that has not ended: the (attempt, epoch) pairs it
    has recorded, and its latest assignment (stream seq) and whether that one is closed."""

    __slots__ = ("epochs", "aseq", "closed")

    def __init__(self, epochs: set | None = None, aseq: int | None = None, closed: bool = False) -> None:
        self.epochs = epochs if epochs is not None else set()
        self.aseq = aseq
        self.closed = closed

    def copy(self) -> "_OpenJob":
        return _OpenJob(set(self.epochs), self.aseq, self.closed)


class _Index:
    """The committed state the checks read: job id -> ``_OpenJob`` (None once ended), and
    the registered node ids. Kept by ``Projection``; changed only after a commit."""

    def __init__(self) -> None:
        self.jobs: dict[str, _OpenJob | None] = {}
        self.nodes: set[str] = set()

    @classmethod
    def load(cls, con: duckdb.DuckDBPyConnection) -> "_Index":
        index, cur = cls(), con.cursor()
        index.jobs = {job_id: None if ended else _OpenJob() for job_id, ended in cur.execute(q.LOAD_JOBS).fetchall()}
        for job_id, attempt, epoch in cur.execute(q.LOAD_EPOCHS).fetchall():
            index.jobs[job_id].epochs.add((attempt, epoch))
        for job_id, aseq, closed in cur.execute(q.LOAD_ASSIGNMENTS).fetchall():
            index.jobs[job_id].aseq, index.jobs[job_id].closed = aseq, bool(closed)
        index.nodes = {node_id for (node_id,) in cur.execute(q.LOAD_NODES).fetchall()}
        return index


class _Batch:
    """One batch checked and folded, message by message in stream order, against the
    index plus what the batch itself did before: rows for new jobs, nodes, epochs and
    assignments, and one delta per job, node or assignment of an earlier batch."""

    def __init__(self, stream: str, index: _Index) -> None:
        self.stream, self.index = stream, index
        self.jobs: dict[str, _OpenJob | None] = {}  # touched jobs, as the batch leaves them
        self.nodes: set[str] = set()  # nodes the batch registered first
        self.events: tuple[list, ...] = tuple([] for _ in _SCHEMAS["b_events"])  # by column: the bulk of a batch
        self.anomalies: list[tuple] = []
        self.new_jobs: dict[str, dict[str, Any]] = {}
        self.job_deltas: dict[str, dict[str, Any]] = {}
        self.epochs: list[tuple] = []
        self.assignments: dict[int, list] = {}
        self.assignment_deltas: dict[int, tuple] = {}
        self.new_nodes: dict[str, dict[str, Any]] = {}
        self.node_deltas: dict[str, dict[str, Any]] = {}
        self.metrics: list[tuple] = []
        self.seen: dict[str, int] = {}

    def bad(self, m: StoredMessage, reason: str, raw: str | None = None) -> None:
        if raw is None:
            raw = m.data.decode("utf-8", errors="replace")
        self.anomalies.append((self.stream, m.seq, m.subject, reason, raw))

    def add(self, m: StoredMessage) -> None:
        try:
            event, raw = decode_json(m.data)
            if not _on_its_subject(event, m.subject):
                expected = subject_for(event)  # the slow, exact check; raises for a bad id
                if expected != m.subject:
                    return self.bad(m, f"{type(event).__name__} belongs on subject {expected}, not {m.subject}")
        except InvalidEvent as exc:
            return self.bad(m, str(exc))
        name = type(event).__name__
        occurred = _micros(event.occurred_at)
        if self.stream == TELEMETRY_STREAM:
            return self._heartbeat(m.seq, event, occurred)
        is_job = isinstance(event, JobEvent)
        aggregate = event.job_id if is_job else event.node_id
        for column, value in zip(self.events, (m.seq, m.subject, name, event.event_id, occurred, m.time_ns // 1000, aggregate, raw)):
            column.append(value)
        reason = (self._job if is_job else self._node)(m.seq, name, event, occurred)
        if reason is not None:
            self.bad(m, reason, raw)

    # --- job events ----------------------------------------------------------------------

    def _job(self, seq: int, name: str, ev: Any, occurred: int) -> str | None:
        """Check one job event and fold it in; returns why it is refused, or None."""
        job_id = ev.job_id
        if job_id in self.jobs:
            entry, known = self.jobs[job_id], True
        elif job_id in self.index.jobs:
            entry, known = self.index.jobs[job_id], True
            self.jobs[job_id] = entry = entry and entry.copy()
        else:
            entry, known = None, False
        if name == "JobSubmitted":
            if known:
                return f"JobSubmitted for job {job_id}, which was already submitted"
            self.jobs[job_id] = _OpenJob()
            self.new_jobs[job_id] = _new_job(job_id, ev.spec, occurred, seq)
            return None
        if not known:
            return f"{name} for unknown job {job_id} (no JobSubmitted before it)"
        if entry is None:
            return f"{name} for job {job_id}, which has already ended"
        if name == "EpochCompleted":
            key = (ev.attempt, ev.epoch)
            if key in entry.epochs:
                return f"duplicate EpochCompleted: job {job_id} attempt {ev.attempt} epoch {ev.epoch} is already recorded"
            entry.epochs.add(key)
            self.epochs.append((job_id, ev.attempt, ev.epoch, ev.node_id, ev.loss, ev.accuracy, ev.val_loss,
                                ev.val_accuracy, ev.seconds, ev.samples_per_s, ev.checkpoint_uri, occurred, seq))
        elif name == "JobAssigned":
            entry.aseq, entry.closed = seq, False
            self.assignments[seq] = [job_id, ev.attempt, ev.node_id, occurred, "assigned", seq, None]
        elif name == "JobStarted" or name == "JobRejected" or name in _OUTCOME:
            self._assignment_outcome(entry, job_id, seq, name, ev)
        fold = self.new_jobs.get(job_id)
        if fold is None:
            fold = self.job_deltas.get(job_id) or self.job_deltas.setdefault(job_id, _job_delta(job_id))
        _fold_job(fold, name, ev, seq, occurred)
        if name in _TERMINAL:
            self.jobs[job_id] = None
        return None

    def _assignment_outcome(self, entry: _OpenJob, job_id: str, seq: int, name: str, ev: Any) -> None:
        """The job's latest assignment: JobStarted marks it running, the first closing
        event after it decides its outcome; a closed one no longer changes."""
        if entry.aseq is None or entry.closed:
            return
        if name == "JobStarted":
            outcome, closed_seq = "running", None
        else:
            outcome = _OUTCOME.get(name) or ("rejected: " + ev.reason if ev.reason else "rejected")
            closed_seq, entry.closed = seq, True
        row = self.assignments.get(entry.aseq)
        if row is not None:
            row[4], row[6] = outcome, closed_seq
        else:
            self.assignment_deltas[entry.aseq] = (job_id, entry.aseq, outcome, closed_seq)

    # --- node events and telemetry -------------------------------------------------------

    def _node(self, seq: int, name: str, ev: Any, occurred: int) -> str | None:
        node_id = ev.node_id
        if node_id in self.index.nodes:
            fold = self.node_deltas.get(node_id) or self.node_deltas.setdefault(node_id, _node_delta(node_id))
        elif node_id in self.new_nodes:
            fold = self.new_nodes[node_id]
        elif name == "NodeRegistered":
            self.nodes.add(node_id)
            fold = self.new_nodes[node_id] = dict.fromkeys(_NODE_COLUMNS)
            fold["node_id"] = node_id
        else:
            return f"{name} for unknown node {node_id} (no NodeRegistered before it)"
        fold["state"], fold["updated_seq"] = _NODE_STATE[name], seq
        seen = None
        if name == "NodeRegistered":
            fold.update(registered=True, name=ev.name, endpoint=ev.endpoint, devices=msgspec.json.encode(ev.devices).decode(),
                        cpu_cores=ev.cpu_cores, ram_bytes=ev.ram_bytes, slots=ev.slots, version=ev.version,
                        registered_at=occurred)
            seen = occurred
        elif name == "NodeLost":
            seen = _micros(ev.last_seen)
        if seen is not None and (fold["last_seen"] is None or seen > fold["last_seen"]):
            fold["last_seen"] = seen
        return None

    def _heartbeat(self, seq: int, ev: Any, occurred: int) -> None:
        self.metrics.append((ev.node_id, occurred, ev.cpu_percent, ev.ram_used_bytes, ev.ram_total_bytes,
                             ev.gpu_percent, ev.gpu_memory_used_bytes, ev.gpu_memory_total_bytes,
                             len(ev.active_jobs), seq))
        if occurred > self.seen.get(ev.node_id, occurred - 1):
            self.seen[ev.node_id] = occurred

    # --- the result ----------------------------------------------------------------------

    def tables(self) -> dict[str, pa.Table]:
        """The batch as Arrow tables, by the name the statements read (empty ones left out)."""
        tables = {"b_events": _arrow(_SCHEMAS["b_events"], self.events, by_column=True)} if self.events[0] else {}
        rows: dict[str, list] = {
            "b_anomalies": sorted(self.anomalies, key=lambda r: r[1]),
            "b_jobs": [tuple(d[c] for c in _JOB_COLUMNS) for d in self.new_jobs.values()],
            "b_job_deltas": [tuple(d[c] for c in _DELTA_COLUMNS) for d in self.job_deltas.values()],
            "b_epochs": self.epochs,
            "b_assignments": list(self.assignments.values()),
            "b_assignment_deltas": list(self.assignment_deltas.values()),
            "b_nodes": [tuple(d[c] for c in _NODE_COLUMNS) for d in self.new_nodes.values()],
            "b_node_deltas": [tuple(d[c] for c in _NODE_DELTA_COLUMNS) for d in self.node_deltas.values()],
            "b_metrics": self.metrics,
            "b_seen": list(self.seen.items()),
        }
        return tables | {name: _arrow(_SCHEMAS[name], r) for name, r in rows.items() if r}

    def commit_index(self) -> None:
        """After the commit: the index takes what the batch did."""
        self.index.jobs.update(self.jobs)
        self.index.nodes |= self.nodes


def _on_its_subject(event: Any, subject: str) -> bool:
    """The common case of ``subject_for(event) == subject``, cheaply: the subject is the
    aggregate's and the id has no character a subject token forbids (a subject from
    NATS holds no whitespace)."""
    if isinstance(event, JobEvent):
        aggregate, prefix = event.job_id, "events.job."
    else:
        aggregate = event.node_id
        prefix = "telemetry.node." if type(event).__name__ in TELEMETRY_TYPES else "events.node."
    return (subject.startswith(prefix) and subject[len(prefix):] == aggregate and aggregate != ""
            and "." not in aggregate and "*" not in aggregate and ">" not in aggregate)


def _arrow(schema: pa.Schema, rows: Sequence, by_column: bool = False) -> pa.Table:
    columns = rows if by_column else list(zip(*rows))
    return pa.Table.from_arrays([pa.array(col, type=f.type) for col, f in zip(columns, schema)], schema=schema)


def _new_job(job_id: str, spec: Any, occurred: int, seq: int) -> dict[str, Any]:
    job = dict.fromkeys(_JOB_COLUMNS)
    job.update(
        job_id=job_id, name=spec.name, state="queued", job_type=spec.job_type, dataset_uri=spec.dataset_uri,
        epochs=spec.epochs, batch_size=spec.batch_size, priority=spec.priority,
        model_definition=spec.model_definition, hyperparameters=msgspec.json.encode(spec.hyperparameters).decode(),
        required_device=spec.requirements.device, min_memory_bytes=spec.requirements.min_memory_bytes,
        submitted_by=spec.submitted_by, attempt=0, current_epoch=0, submitted_at=occurred, updated_seq=seq,
        node_changed=False, finished=False,
    )
    return job


def _job_delta(job_id: str) -> dict[str, Any]:
    delta = dict.fromkeys(_DELTA_COLUMNS)
    delta.update(job_id=job_id, node_changed=False, finished=False)
    return delta


def _node_delta(node_id: str) -> dict[str, Any]:
    delta = dict.fromkeys(_NODE_DELTA_COLUMNS)
    delta.update(node_id=node_id, registered=False)
    return delta


def _fold_job(d: dict[str, Any], name: str, ev: Any, seq: int, occurred: int) -> None:
    """One accepted job event into a job row (new this batch) or a delta (NULL: unchanged)."""
    d["updated_seq"] = seq
    if name != "EpochCompleted":
        d["state"] = _JOB_STATE[name]
    attempt = None
    if name == "JobAssigned" or name == "JobStarted":
        d["node_changed"], d["node_id"], attempt = True, ev.node_id, ev.attempt
        if name == "JobStarted" and d["started_at"] is None:
            d["started_at"] = occurred
    elif name == "JobRejected":
        d["node_changed"], d["node_id"] = True, None
    elif name == "JobRequeued":
        d["node_changed"], d["node_id"], attempt, d["current_epoch"] = True, None, ev.next_attempt, ev.resume_epoch
    elif name == "EpochCompleted":
        d["current_epoch"] = ev.epoch
    elif name in _TERMINAL:
        metrics = getattr(ev, "metrics", None)
        d.update(
            finished=True, finished_at=occurred,
            final_loss=metrics.get("loss") if metrics is not None else None,
            final_accuracy=metrics.get("accuracy") if metrics is not None else None,
            final_val_accuracy=metrics.get("val_accuracy") if metrics is not None else None,
            artifact_uri=getattr(ev, "artifact_uri", None), sha256=getattr(ev, "sha256", None),
            size_bytes=getattr(ev, "size_bytes", None), compute_seconds=getattr(ev, "compute_seconds", None),
            error=getattr(ev, "error", None),
        )
    if attempt is not None and (d["attempt"] is None or attempt > d["attempt"]):
        d["attempt"] = attempt


def _micros(moment: datetime) -> int:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return round(moment.timestamp() * 1_000_000)


# --- the projector: stream -> projection ------------------------------------------------------
