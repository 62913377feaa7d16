"""Folding one batch in Python, through the lifecycle's own rules: each message checked
with ``anomaly`` and applied with ``evolve`` (``central.lifecycle``), exactly as
central's state folds it, then turned into typed Arrow tables of rows and deltas that
the statements of ``central.readmodel.schema`` insert and merge (see
``central.readmodel.projection``).

The index is what the rules need of what is committed: the lifecycle state of every job
that has not ended (re-folded from the ``events`` table at open), the end state of the
others, each open job's current assignment, and every node's state.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Sequence

import duckdb
import msgspec
import pyarrow as pa

from bus import StoredMessage
from central.lifecycle.jobs import ACTIVE, JobState, JobStatus, fold
from central.lifecycle.nodes import NodeState, evolve_node, node_anomaly
from central.readmodel import schema as q
from central.readmodel.schema import TELEMETRY_STREAM
from central.readmodel.terminal import TERMINAL_SESSION_TYPES, TerminalFold
from events import InvalidEvent, misplaced
from events.catalog import JobEvent
from events.codec import decode_json
from central.readmodel.deployments import DeploymentBatch
from events import DeploymentEvent

__all__ = ["REFUSED", "Batch", "Index"]

REFUSED = (duckdb.Error, pa.ArrowException, OverflowError)

_OUTCOME = {"JobCompleted": "completed", "JobFailed": "failed", "JobRequeued": "requeued", "JobCancelled": "cancelled"}

_S, _I, _F, _B, _T = pa.string(), pa.int64(), pa.float64(), pa.bool_(), pa.timestamp("us")
_LIFECYCLE = [("state", _S), ("cancel_requested", _B), ("node_id", _S), ("attempt", _I), ("current_epoch", _I),
              ("started_at", _T), ("finished_at", _T), ("final_loss", _F), ("final_accuracy", _F),
              ("final_val_accuracy", _F), ("artifact_uri", _S), ("sha256", _S), ("size_bytes", _I),
              ("compute_seconds", _F), ("error", _S), ("error_code", _I), ("retryable", _B), ("waiting_reason", _S),
              ("updated_seq", _I)]
_SCHEMAS = {
    "b_events": pa.schema([("seq", _I), ("subject", _S), ("type", _S), ("event_id", _S), ("occurred_at", _T),
                           ("stored_at", _T), ("aggregate_id", _S), ("raw", _S)]),
    "b_anomalies": pa.schema([("stream", _S), ("seq", _I), ("subject", _S), ("reason", _S), ("raw", _S)]),
    "b_jobs": pa.schema([
        ("job_id", _S), ("name", _S), ("job_type", _S), ("dataset_uri", _S), ("epochs", _I),
        ("batch_size", _I), ("priority", _I), ("model_definition", _S), ("hyperparameters", _S),
        ("required_device", _S), ("min_memory_bytes", _I), ("submitted_by", _S), ("submitted_at", _T),
        *_LIFECYCLE]),
    "b_job_deltas": pa.schema([("job_id", _S), *_LIFECYCLE]),
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
    "b_phases": pa.schema([("job_id", _S), ("attempt", _I), ("phase", _S), ("phase_at", _T), ("epoch", _I),
                           ("step", _I), ("steps", _I)]),
}
_NODE_COLUMNS = _SCHEMAS["b_nodes"].names
_NODE_DELTA_COLUMNS = _SCHEMAS["b_node_deltas"].names


class Index:
    """The committed state the rules read. Kept by ``Projection``; changed only after a
    commit. ``jobs``: job id -> its ``JobState`` (an ended job: a bare one with its end
    state); ``assignments``: open job -> stream seq of its current JobAssigned."""

    def __init__(self) -> None:
        self.jobs: dict[str, JobState] = {}
        self.assignments: dict[str, int] = {}
        self.nodes: dict[str, NodeState] = {}

    @classmethod
    def load(cls, con: duckdb.DuckDBPyConnection) -> "Index":
        """Ended jobs and nodes from their tables; open jobs re-folded from their events
        through the same rules, so the index is what an unbroken fold would hold."""
        index, cur = cls(), con.cursor()
        for job_id, state in cur.execute(q.LOAD_ENDED_JOBS).fetchall():
            index.jobs[job_id] = JobState(job_id=job_id, status=JobStatus(state))
        for node_id, state in cur.execute(q.LOAD_NODES).fetchall():
            index.nodes[node_id] = NodeState(node_id=node_id, status=state)
        for seq, raw in cur.execute(q.LOAD_OPEN_JOB_EVENTS).fetchall():
            event, _ = decode_json(raw.encode())
            old = index.jobs.get(event.job_id)
            new, reason = fold(old, event)
            if reason is None:
                index.jobs[event.job_id] = new
                _track_assignment(index.assignments, event.job_id, seq, old, new, type(event).__name__)
        return index


def _track_assignment(open_: dict[str, int], job_id: str, seq: int, old: JobState | None, new: JobState,
                      name: str) -> tuple[int, str, int | None] | None:
    """Keep ``open_`` (job -> seq of its current assignment) up to date; returns the
    change to that assignment's row: (its seq, outcome, closed seq or None)."""
    if name == "JobAssigned":
        open_[job_id] = seq
        return None
    aseq = open_.get(job_id)
    if aseq is None or old is None or old.status not in ACTIVE:
        return None
    if new.status in ACTIVE and new.attempt == old.attempt:
        if old.status == JobStatus.ASSIGNED and new.status == JobStatus.RUNNING:
            return aseq, "running", None
        return None
    del open_[job_id]
    if name == "JobRejected":
        return aseq, "rejected", seq
    return aseq, _OUTCOME.get(name, "ended"), seq


class Batch:
    """One batch checked and folded, message by message in stream order, against the
    index plus what the batch itself did before: rows for new jobs, nodes, epochs and
    assignments, and one delta per job, node or assignment of an earlier batch."""

    def __init__(self, stream: str, index: Index) -> None:
        self.stream, self.index = stream, index
        self.jobs: dict[str, JobState] = {}  # touched jobs, as the batch leaves them
        self.assignments_open: dict[str, int] = {}  # touched jobs' current assignment (or absent)
        self.closed_assignments: set[str] = set()  # touched jobs whose assignment the batch closed
        self.touched: dict[str, tuple[int, int | None, int | None]] = {}  # job -> (seq, started µs, finished µs)
        self.nodes: dict[str, NodeState] = {}
        self.events: tuple[list, ...] = tuple([] for _ in _SCHEMAS["b_events"])  # by column: the bulk of a batch
        self.anomalies: list[tuple] = []
        self.new_jobs: dict[str, dict[str, Any]] = {}
        self.epochs: list[tuple] = []
        self.assignment_rows: dict[int, list] = {}
        self.assignment_deltas: dict[int, tuple] = {}
        self.new_nodes: dict[str, dict[str, Any]] = {}
        self.node_deltas: dict[str, dict[str, Any]] = {}
        self.metrics: list[tuple] = []
        self.seen: dict[str, int] = {}
        self.phases: dict[tuple[str, int], tuple] = {}  # (job, attempt) -> its latest JobPhase as a row
        self.deployments = DeploymentBatch()  # central.readmodel.deployments
        self.terminal = TerminalFold()  # central.readmodel.terminal

    def bad(self, m: StoredMessage, reason: str, raw: str | None = None) -> None:
        if raw is None:
            raw = m.data.decode("utf-8", errors="replace")
        self.anomalies.append((self.stream, m.seq, m.subject, reason, raw))

    def add(self, m: StoredMessage) -> None:
        try:
            event, raw = decode_json(m.data)
        except InvalidEvent as exc:
            return self.bad(m, str(exc))
        if isinstance(event, DeploymentEvent):  # central.readmodel.deployments
            return self.deployments.add(self, m, event, raw)
        wrong = misplaced(event, m.subject)
        if wrong is not None:
            return self.bad(m, wrong)
        occurred = _micros(event.occurred_at)
        if self.stream == TELEMETRY_STREAM:
            return self._heartbeat(m.seq, event, occurred)
        is_job = isinstance(event, JobEvent)
        aggregate = event.job_id if is_job else event.node_id
        for column, value in zip(self.events, (m.seq, m.subject, type(event).__name__, event.event_id, occurred,
                                               m.time_ns // 1000, aggregate, raw)):
            column.append(value)
        fold = self.terminal.add if type(event).__name__ in TERMINAL_SESSION_TYPES else self._job if is_job else self._node
        reason = fold(m.seq, event, occurred)
        if reason is not None:
            self.bad(m, reason, raw)

    # --- job events ----------------------------------------------------------------------

    def _job(self, seq: int, ev: Any, occurred: int) -> str | None:
        """Check one job event with the lifecycle and fold it in; returns why not, or None."""
        job_id, name = ev.job_id, type(ev).__name__
        old = self.jobs.get(job_id) or self.index.jobs.get(job_id)
        new, reason = fold(old, ev)
        if reason is not None:
            return f"job {job_id}: {reason}"
        self.jobs[job_id] = new
        _, started, finished = self.touched.get(job_id, (0, None, None))
        if new.started_at and (old is None or not old.started_at):
            started = occurred
        if new.done and (old is None or not old.done):
            finished = occurred
        self.touched[job_id] = (seq, started, finished)
        if name == "JobSubmitted":
            self.new_jobs[job_id] = _spec_columns(job_id, ev.spec, occurred)
        elif name == "EpochCompleted":
            self.epochs.append((job_id, ev.attempt, ev.epoch, ev.node_id, ev.loss, ev.accuracy, ev.val_loss,
                                ev.val_accuracy, ev.seconds, ev.samples_per_s, ev.checkpoint_uri, occurred, seq))
        self._assignment(job_id, seq, old, new, name, ev, occurred)
        return None

    def _assignment(self, job_id: str, seq: int, old, new, name: str, ev: Any, occurred: int) -> None:
        if job_id not in self.assignments_open and job_id not in self.closed_assignments:
            if job_id in self.index.assignments:
                self.assignments_open[job_id] = self.index.assignments[job_id]
        change = _track_assignment(self.assignments_open, job_id, seq, old, new, name)
        if name == "JobAssigned":
            self.closed_assignments.discard(job_id)
            self.assignment_rows[seq] = [job_id, ev.attempt, ev.node_id, occurred, "assigned", seq, None]
            return
        if change is None:
            return
        aseq, outcome, closed_seq = change
        if name == "JobRejected" and ev.reason:
            outcome = f"rejected: {ev.reason}"
        if closed_seq is not None:
            self.closed_assignments.add(job_id)
        row = self.assignment_rows.get(aseq)
        if row is not None:
            row[4], row[6] = outcome, closed_seq
        else:
            self.assignment_deltas[aseq] = (job_id, aseq, outcome, closed_seq)

    # --- node events and telemetry -------------------------------------------------------

    def _node(self, seq: int, ev: Any, occurred: int) -> str | None:
        node_id, name = ev.node_id, type(ev).__name__
        old = self.nodes.get(node_id) or self.index.nodes.get(node_id)
        reason = node_anomaly(old, ev)
        if reason is not None:
            return f"node {node_id}: {reason}"
        new = self.nodes[node_id] = evolve_node(old, ev)
        if node_id in self.index.nodes:
            fold = self.node_deltas.get(node_id) or self.node_deltas.setdefault(node_id, _node_delta(node_id))
        else:
            fold = self.new_nodes.get(node_id) or self.new_nodes.setdefault(node_id, _new_node(node_id))
        fold["state"], fold["updated_seq"] = new.status, seq
        seen = None
        if name == "NodeRegistered":
            fold.update(registered=True, name=ev.name, endpoint=ev.endpoint,
                        devices=msgspec.json.encode(ev.devices).decode(), cpu_cores=ev.cpu_cores,
                        ram_bytes=ev.ram_bytes, slots=new.slots, version=ev.version, registered_at=occurred)
            seen = occurred
        elif name == "NodeLost":
            seen = _micros(ev.last_seen)
        if seen is not None and (fold["last_seen"] is None or seen > fold["last_seen"]):
            fold["last_seen"] = seen
        return None

    def _heartbeat(self, seq: int, ev: Any, occurred: int) -> None:
        name = type(ev).__name__
        if name == "JobPhase":  # the latest phase of a job's attempt: columns of jobs
            key = (ev.job_id, ev.attempt)
            if key not in self.phases or occurred >= self.phases[key][3]:
                self.phases[key] = (ev.job_id, ev.attempt, ev.phase, occurred, ev.epoch, ev.step, ev.steps)
            return
        if name != "NodeHeartbeat":
            return  # other telemetry has tables of its own
        self.metrics.append((ev.node_id, occurred, ev.cpu_percent, ev.ram_used_bytes, ev.ram_total_bytes,
                             ev.gpu_percent, ev.gpu_memory_used_bytes, ev.gpu_memory_total_bytes,
                             len(ev.active_jobs), seq))
        if occurred > self.seen.get(ev.node_id, occurred - 1):
            self.seen[ev.node_id] = occurred

    # --- the result ----------------------------------------------------------------------

    def tables(self) -> dict[str, pa.Table]:
        """The batch as Arrow tables, by the name the statements read (empty ones left out)."""
        tables = {"b_events": _arrow(_SCHEMAS["b_events"], self.events, by_column=True)} if self.events[0] else {}
        new_jobs, job_deltas = [], []
        for job_id, (seq, started, finished) in self.touched.items():
            columns = _lifecycle_columns(self.jobs[job_id], seq, started, finished)
            spec = self.new_jobs.get(job_id)
            if spec is not None:
                new_jobs.append((*spec, *columns))
            else:
                job_deltas.append((job_id, *columns))
        rows: dict[str, list] = {
            "b_anomalies": sorted(self.anomalies, key=lambda r: r[1]),
            "b_jobs": new_jobs,
            "b_job_deltas": job_deltas,
            "b_epochs": self.epochs,
            "b_assignments": list(self.assignment_rows.values()),
            "b_assignment_deltas": list(self.assignment_deltas.values()),
            "b_nodes": [tuple(d[c] for c in _NODE_COLUMNS) for d in self.new_nodes.values()],
            "b_node_deltas": [tuple(d[c] for c in _NODE_DELTA_COLUMNS) for d in self.node_deltas.values()],
            "b_metrics": self.metrics,
            "b_seen": list(self.seen.items()),
            "b_phases": list(self.phases.values()),
        }
        return tables | {name: _arrow(_SCHEMAS[name], r) for name, r in rows.items() if r} | self.terminal.tables()

    def commit_index(self) -> None:
        """After the commit: the index takes what the batch did (an ended job keeps only its end)."""
        index = self.index
        for job_id, state in self.jobs.items():
            index.jobs[job_id] = JobState(job_id=job_id, status=state.status) if state.done else state
            if job_id in self.assignments_open:
                index.assignments[job_id] = self.assignments_open[job_id]
            else:
                index.assignments.pop(job_id, None)
        index.nodes.update(self.nodes)


def _arrow(schema: pa.Schema, rows: Sequence, by_column: bool = False) -> pa.Table:
    columns = rows if by_column else list(zip(*rows))
    return pa.Table.from_arrays([pa.array(col, type=f.type) for col, f in zip(columns, schema)], schema=schema)


def _spec_columns(job_id: str, spec: Any, occurred: int) -> tuple:
    """The columns a job's JobSubmitted fixes for good (order of ``b_jobs``)."""
    return (job_id, spec.name, spec.job_type, spec.dataset_uri, spec.epochs, spec.batch_size, spec.priority,
            spec.model_definition, msgspec.json.encode(spec.hyperparameters).decode(), spec.requirements.device,
            spec.requirements.min_memory_bytes, spec.submitted_by, occurred)


def _lifecycle_columns(job: JobState, seq: int, started: int | None, finished: int | None) -> tuple:
    """The columns the lifecycle decides, from the job's state (order of ``_LIFECYCLE``)."""
    completed = job.status == JobStatus.COMPLETED
    metrics = job.metrics if completed else {}
    uri, sha, size = job.artifact if completed and job.artifact else (None, None, None)
    return (str(job.status), job.cancel_requested, job.node_id, job.attempt, job.epochs_done, started, finished,
            metrics.get("loss"), metrics.get("accuracy"), metrics.get("val_accuracy"), uri or None, sha or None,
            size, job.compute_seconds if completed else None,
            (job.error or None) if job.status == JobStatus.FAILED else None,
            (job.error_code or None) if job.status == JobStatus.FAILED else None,
            job.retryable if job.status == JobStatus.FAILED else None,
            (job.waiting_reason or None) if job.status == JobStatus.QUEUED else None, seq)


def _new_node(node_id: str) -> dict[str, Any]:
    node = dict.fromkeys(_NODE_COLUMNS)
    node["node_id"] = node_id
    return node


def _node_delta(node_id: str) -> dict[str, Any]:
    delta = dict.fromkeys(_NODE_DELTA_COLUMNS)
    delta.update(node_id=node_id, registered=False)
    return delta


def _micros(moment: datetime) -> int:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return round(moment.timestamp() * 1_000_000)
