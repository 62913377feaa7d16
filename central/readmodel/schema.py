"""The SQL of the read model: its schema, and the few statements that write one batch.

``SCHEMA_VERSION`` changes whenever a table changes shape; a file written with another
version is emptied and replayed from the stream (the stream is the store of record).

``central.readmodel.projection`` checks and folds a batch in Python (against its index of the
jobs and nodes committed so far) into Arrow tables that already hold final rows: new
rows to insert, and for rows of earlier batches one delta per row. The statements here
only insert those tables and merge the deltas by key, so a batch costs a handful of
plain statements whatever its size, and none of them scans history beyond the keyed
rows it updates.
"""

from __future__ import annotations

from central.lifecycle.jobs import TERMINAL
from central.readmodel import terminal

EVENTS_STREAM = "CYXWIZ_EVENTS"
TELEMETRY_STREAM = "CYXWIZ_TELEMETRY"

SCHEMA_VERSION = 4

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS projection_schema (version INTEGER);
CREATE TABLE IF NOT EXISTS events (
    seq BIGINT, subject VARCHAR, type VARCHAR, event_id VARCHAR,
    occurred_at TIMESTAMP, stored_at TIMESTAMP, aggregate_id VARCHAR, raw JSON);
CREATE TABLE IF NOT EXISTS jobs (
    job_id VARCHAR, name VARCHAR, state VARCHAR, cancel_requested BOOLEAN, job_type VARCHAR, dataset_uri VARCHAR,
    epochs INTEGER, batch_size INTEGER, priority INTEGER, model_definition VARCHAR,
    hyperparameters JSON, required_device VARCHAR, min_memory_bytes BIGINT,
    submitted_by VARCHAR, node_id VARCHAR, attempt INTEGER, current_epoch INTEGER,
    submitted_at TIMESTAMP, started_at TIMESTAMP, finished_at TIMESTAMP,
    final_loss DOUBLE, final_accuracy DOUBLE, final_val_accuracy DOUBLE,
    artifact_uri VARCHAR, sha256 VARCHAR, size_bytes BIGINT, compute_seconds DOUBLE,
    error VARCHAR, error_code INTEGER, updated_seq BIGINT,
    retryable BOOLEAN, waiting_reason VARCHAR, phase VARCHAR, phase_at TIMESTAMP, phase_epoch INTEGER,
    phase_step INTEGER, phase_steps INTEGER);
CREATE TABLE IF NOT EXISTS nodes (
    node_id VARCHAR, name VARCHAR, endpoint VARCHAR, devices JSON, cpu_cores INTEGER,
    ram_bytes BIGINT, slots INTEGER, version VARCHAR, state VARCHAR,
    registered_at TIMESTAMP, last_seen TIMESTAMP, updated_seq BIGINT);
CREATE TABLE IF NOT EXISTS epochs (
    job_id VARCHAR, attempt INTEGER, epoch INTEGER, node_id VARCHAR, loss DOUBLE,
    accuracy DOUBLE, val_loss DOUBLE, val_accuracy DOUBLE, seconds DOUBLE,
    samples_per_s DOUBLE, checkpoint_uri VARCHAR, occurred_at TIMESTAMP, seq BIGINT);
CREATE TABLE IF NOT EXISTS assignments (
    job_id VARCHAR, attempt INTEGER, node_id VARCHAR, assigned_at TIMESTAMP,
    outcome VARCHAR, seq BIGINT, closed_seq BIGINT);
CREATE TABLE IF NOT EXISTS node_metrics (
    node_id VARCHAR, observed_at TIMESTAMP, cpu_percent DOUBLE, ram_used_bytes BIGINT,
    ram_total_bytes BIGINT, gpu_percent DOUBLE, gpu_memory_used_bytes BIGINT,
    gpu_memory_total_bytes BIGINT, active_jobs INTEGER, seq BIGINT);
CREATE TABLE IF NOT EXISTS anomalies (
    stream VARCHAR, seq BIGINT, subject VARCHAR, reason VARCHAR, raw VARCHAR);
CREATE TABLE IF NOT EXISTS projection_checkpoint (stream VARCHAR, last_seq BIGINT);
INSERT INTO projection_checkpoint
    SELECT s, 0 FROM (VALUES ('{EVENTS_STREAM}'), ('{TELEMETRY_STREAM}')) v(s)
    WHERE s NOT IN (SELECT stream FROM projection_checkpoint);
INSERT INTO projection_schema SELECT {SCHEMA_VERSION} WHERE NOT EXISTS (SELECT * FROM projection_schema);
""" + terminal.SCHEMA  # a table of its own; no file of an older version holds terminal events

TABLES = ("events", "jobs", "nodes", "epochs", "assignments", "node_metrics", "anomalies", "projection_checkpoint",
          "projection_schema", "terminal_sessions")
HAS_SCHEMA_TABLE = "SELECT count(*) FROM information_schema.tables WHERE table_name = 'projection_schema';"
STORED_SCHEMA_VERSION = "SELECT max(version) FROM projection_schema;"

# Arrow tables registered per batch (see central.readmodel.projection): the name each has.
INSERT_EVENTS = "INSERT INTO events SELECT * FROM b_events;"
INSERT_ANOMALIES = "INSERT INTO anomalies SELECT * FROM b_anomalies;"
INSERT_JOBS = "INSERT INTO jobs BY NAME SELECT * FROM b_jobs;"
INSERT_EPOCHS = "INSERT INTO epochs BY NAME SELECT * FROM b_epochs;"
INSERT_ASSIGNMENTS = "INSERT INTO assignments BY NAME SELECT * FROM b_assignments;"
INSERT_NODES = "INSERT INTO nodes BY NAME SELECT * FROM b_nodes;"
INSERT_METRICS = "INSERT INTO node_metrics BY NAME SELECT * FROM b_metrics;"

_LIFECYCLE = ("state", "cancel_requested", "node_id", "attempt", "current_epoch", "final_loss", "final_accuracy",
              "final_val_accuracy", "artifact_uri", "sha256", "size_bytes", "compute_seconds", "error", "error_code",
              "retryable", "waiting_reason", "updated_seq")

# A job of an earlier batch: its lifecycle columns as the batch leaves it.
UPDATE_JOBS = f"""
UPDATE jobs SET
    {", ".join(f"{c} = d.{c}" for c in _LIFECYCLE)},
    phase = CASE WHEN d.attempt = jobs.attempt THEN jobs.phase END,
    phase_at = CASE WHEN d.attempt = jobs.attempt THEN jobs.phase_at END,
    started_at = COALESCE(jobs.started_at, d.started_at),
    finished_at = COALESCE(jobs.finished_at, d.finished_at)
FROM b_job_deltas d WHERE jobs.job_id = d.job_id;
"""

# An assignment of an earlier batch that the batch started or closed.
UPDATE_ASSIGNMENTS = """
UPDATE assignments SET outcome = d.outcome, closed_seq = d.closed_seq
FROM b_assignment_deltas d WHERE assignments.seq = d.seq AND assignments.job_id = d.job_id;
"""

_REGISTERED = ("name", "endpoint", "devices", "cpu_cores", "ram_bytes", "slots", "version", "registered_at")
UPDATE_NODES = f"""
UPDATE nodes SET
    {", ".join(f"{c} = CASE WHEN d.registered THEN d.{c} ELSE nodes.{c} END" for c in _REGISTERED)},
    state = d.state, last_seen = GREATEST(nodes.last_seen, d.last_seen), updated_seq = d.updated_seq
FROM b_node_deltas d WHERE nodes.node_id = d.node_id;
"""

# Telemetry: a heartbeat moves its node's last_seen forward.
UPDATE_LAST_SEEN = """
UPDATE nodes SET last_seen = GREATEST(nodes.last_seen, d.seen) FROM b_seen d WHERE nodes.node_id = d.node_id;
"""

# Telemetry: the latest phase a job's node reported for its current attempt (an older
# attempt's, or one older than what the row holds, changes nothing).
UPDATE_PHASES = """
UPDATE jobs SET phase = d.phase, phase_at = d.phase_at, phase_epoch = d.epoch, phase_step = d.step,
    phase_steps = d.steps
FROM b_phases d
WHERE jobs.job_id = d.job_id AND jobs.attempt = d.attempt AND (jobs.phase_at IS NULL OR jobs.phase_at <= d.phase_at);
"""

# (Arrow table name, statement): run in this order when the batch has rows for it.
BATCH_STATEMENTS: tuple[tuple[str, str], ...] = (
    ("b_events", INSERT_EVENTS),
    ("b_anomalies", INSERT_ANOMALIES),
    ("b_jobs", INSERT_JOBS),
    ("b_job_deltas", UPDATE_JOBS),
    ("b_epochs", INSERT_EPOCHS),
    ("b_assignments", INSERT_ASSIGNMENTS),
    ("b_assignment_deltas", UPDATE_ASSIGNMENTS),
    ("b_nodes", INSERT_NODES),
    ("b_node_deltas", UPDATE_NODES),
    ("b_metrics", INSERT_METRICS),
    ("b_seen", UPDATE_LAST_SEEN),
    ("b_phases", UPDATE_PHASES),
    *terminal.BATCH_STATEMENTS,
)

SET_CHECKPOINT = "UPDATE projection_checkpoint SET last_seq = $seq WHERE stream = $stream;"

TERMINAL_STATES = tuple(sorted(str(s) for s in TERMINAL))  # the lifecycle's, as SQL wants them

# The index the rules need, loaded at open: every ended job's end state, every node's
# state, and the events of the jobs not ended (re-folded in stream order).
LOAD_ENDED_JOBS = f"SELECT job_id, state FROM jobs WHERE state IN {TERMINAL_STATES};"
LOAD_NODES = "SELECT node_id, state FROM nodes;"
LOAD_OPEN_JOB_EVENTS = f"""
SELECT seq, raw FROM events
WHERE subject LIKE 'events.job.%' AND aggregate_id IN (SELECT job_id FROM jobs WHERE state NOT IN {TERMINAL_STATES})
ORDER BY seq;
"""
