"""The SQL of the read model: its schema, and the set-based statements that fold one
staged batch of events into the tables.

Every batch statement reads the staged batch (``stage``: one row per event that decoded,
with its canonical JSON in ``raw``) and the tables as they stand, never Python rows, so a
batch of any size is a fixed number of statements. The rules only look at what came
before an event in stream order, so the tables do not depend on where batches are cut:
replaying in one batch or in a thousand gives the same result.

Job events are checked before they change anything (the checks become ``anomalies``):
an event for a job never submitted, a second JobSubmitted, anything after the job's
terminal event, and an epoch already recorded for that attempt.
"""

from __future__ import annotations

import json

EVENTS_STREAM = "CYXWIZ_EVENTS"
TELEMETRY_STREAM = "CYXWIZ_TELEMETRY"

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS events (
    seq BIGINT, subject VARCHAR, type VARCHAR, event_id VARCHAR,
    occurred_at TIMESTAMP, stored_at TIMESTAMP, aggregate_id VARCHAR, raw JSON);
CREATE TABLE IF NOT EXISTS jobs (
    job_id VARCHAR, name VARCHAR, state VARCHAR, job_type VARCHAR, dataset_uri VARCHAR,
    epochs INTEGER, batch_size INTEGER, priority INTEGER, model_definition VARCHAR,
    hyperparameters JSON, required_device VARCHAR, min_memory_bytes BIGINT,
    submitted_by VARCHAR, node_id VARCHAR, attempt INTEGER, current_epoch INTEGER,
    submitted_at TIMESTAMP, started_at TIMESTAMP, finished_at TIMESTAMP,
    final_loss DOUBLE, final_accuracy DOUBLE, final_val_accuracy DOUBLE,
    artifact_uri VARCHAR, sha256 VARCHAR, size_bytes BIGINT, compute_seconds DOUBLE,
    error VARCHAR, updated_seq BIGINT);
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
"""

# Every field the statements read, parsed once per event into the struct column ``f``
# (one JSON parse per event instead of one per field read).
_FIELDS = {
    "job_id": "VARCHAR", "node_id": "VARCHAR", "attempt": "BIGINT", "epoch": "BIGINT",
    "next_attempt": "BIGINT", "resume_epoch": "BIGINT", "reason": "VARCHAR", "error": "VARCHAR",
    "artifact_uri": "VARCHAR", "sha256": "VARCHAR", "size_bytes": "BIGINT", "compute_seconds": "DOUBLE",
    "loss": "DOUBLE", "accuracy": "DOUBLE", "val_loss": "DOUBLE", "val_accuracy": "DOUBLE",
    "seconds": "DOUBLE", "samples_per_s": "DOUBLE", "checkpoint_uri": "VARCHAR",
    "metrics": "MAP(VARCHAR, DOUBLE)",
    "spec": {
        "name": "VARCHAR", "job_type": "VARCHAR", "dataset_uri": "VARCHAR", "epochs": "BIGINT",
        "batch_size": "BIGINT", "priority": "BIGINT", "model_definition": "VARCHAR",
        "hyperparameters": "JSON", "submitted_by": "VARCHAR",
        "requirements": {"device": "VARCHAR", "min_memory_bytes": "BIGINT"},
    },
    "name": "VARCHAR", "endpoint": "VARCHAR", "devices": "JSON", "cpu_cores": "BIGINT",
    "ram_bytes": "BIGINT", "slots": "BIGINT", "version": "VARCHAR", "last_seen": "TIMESTAMPTZ",
    "cpu_percent": "DOUBLE", "ram_used_bytes": "BIGINT", "ram_total_bytes": "BIGINT",
    "gpu_percent": "DOUBLE", "gpu_memory_used_bytes": "BIGINT", "gpu_memory_total_bytes": "BIGINT",
    "active_jobs": "VARCHAR[]",
}
STAGE = f"""
CREATE OR REPLACE TEMP TABLE stage AS
SELECT *, json_transform(raw, '{json.dumps(_FIELDS)}') AS f FROM stage_arrow;
"""

TERMINAL = "('JobCompleted', 'JobFailed', 'JobCancelled')"
TERMINAL_STATES = "('completed', 'failed', 'cancelled')"

# Job events of the batch with the reason each is refused (NULL: applied).
CHECK_JOB_EVENTS = f"""
CREATE OR REPLACE TEMP TABLE jv AS
WITH je AS (
    SELECT s.seq, s.type, s.aggregate_id AS job_id, s.f.attempt AS e_attempt, s.f.epoch AS e_epoch,
           j.job_id IS NOT NULL AS known, j.state AS prior_state
    FROM stage s LEFT JOIN jobs j ON j.job_id = s.aggregate_id
    WHERE s.subject LIKE 'events.job.%'
), firsts AS (
    SELECT *, min(seq) FILTER (WHERE type = 'JobSubmitted') OVER (PARTITION BY job_id) AS first_submit
    FROM je
), lived AS (
    SELECT *, min(seq) FILTER (WHERE type IN {TERMINAL} AND (known OR first_submit < seq))
               OVER (PARTITION BY job_id) AS first_terminal
    FROM firsts
), reasoned AS (
    SELECT *, CASE
        WHEN type = 'JobSubmitted' AND (known OR seq > first_submit)
            THEN 'JobSubmitted for job ' || job_id || ', which was already submitted'
        WHEN type <> 'JobSubmitted' AND NOT (known OR COALESCE(first_submit < seq, false))
            THEN type || ' for unknown job ' || job_id || ' (no JobSubmitted before it)'
        WHEN prior_state IN {TERMINAL_STATES} OR seq > first_terminal
            THEN type || ' for job ' || job_id || ', which has already ended'
    END AS reason
    FROM lived
), epochs_in AS (  -- epochs already recorded: the batch is the build side, epochs is probed
    SELECT r.*, p.seq IS NOT NULL AS recorded
    FROM reasoned r LEFT JOIN epochs p
        ON p.job_id = r.job_id AND p.attempt = r.e_attempt AND p.epoch = r.e_epoch
)
SELECT seq, CASE
    WHEN reason IS NOT NULL THEN reason
    WHEN type = 'EpochCompleted' AND (recorded
        OR row_number() OVER (PARTITION BY job_id, e_attempt, e_epoch, type = 'EpochCompleted' AND reason IS NULL ORDER BY seq) > 1)
        THEN 'duplicate EpochCompleted: job ' || job_id || ' attempt ' || e_attempt || ' epoch ' || e_epoch || ' is already recorded'
    END AS reason
FROM epochs_in;
CREATE OR REPLACE TEMP TABLE jok AS
SELECT s.*, s.aggregate_id AS job_id FROM stage s JOIN jv USING (seq) WHERE jv.reason IS NULL;
"""

INSERT_JOBS = """
INSERT INTO jobs (job_id, name, state, job_type, dataset_uri, epochs, batch_size, priority,
                  model_definition, hyperparameters, required_device, min_memory_bytes,
                  submitted_by, attempt, current_epoch, submitted_at, updated_seq)
SELECT job_id, f.spec.name, 'queued', f.spec.job_type, f.spec.dataset_uri,
       f.spec.epochs, f.spec.batch_size,
       f.spec.priority, f.spec.model_definition,
       f.spec.hyperparameters, f.spec.requirements.device,
       f.spec.requirements.min_memory_bytes, f.spec.submitted_by,
       0, 0, occurred_at, seq
FROM jok WHERE type = 'JobSubmitted';
"""

UPDATE_JOBS = """
WITH a AS (
    SELECT job_id, max(seq) AS max_seq,
        arg_max(CASE type
            WHEN 'JobSubmitted' THEN 'queued' WHEN 'JobAssigned' THEN 'assigned'
            WHEN 'JobRejected' THEN 'queued' WHEN 'JobStarted' THEN 'running'
            WHEN 'JobCompleted' THEN 'completed' WHEN 'JobFailed' THEN 'failed'
            WHEN 'JobRequeued' THEN 'queued' WHEN 'JobCancelRequested' THEN 'cancelling'
            WHEN 'JobCancelled' THEN 'cancelled' END, seq) AS state,
        bool_or(type IN ('JobAssigned', 'JobStarted', 'JobRejected', 'JobRequeued')) AS node_changed,
        arg_max_null(CASE WHEN type IN ('JobAssigned', 'JobStarted') THEN f.node_id END,
                     CASE WHEN type IN ('JobAssigned', 'JobStarted', 'JobRejected', 'JobRequeued') THEN seq END) AS node_id,
        max(CASE WHEN type = 'JobRequeued' THEN f.next_attempt
                 WHEN type IN ('JobAssigned', 'JobStarted') THEN f.attempt END) AS attempt,
        arg_max(CASE WHEN type = 'EpochCompleted' THEN f.epoch ELSE f.resume_epoch END,
                CASE WHEN type IN ('EpochCompleted', 'JobRequeued') THEN seq END) AS current_epoch,
        min(CASE WHEN type = 'JobStarted' THEN occurred_at END) AS started_at
    FROM jok GROUP BY job_id
)
UPDATE jobs SET
    state = COALESCE(a.state, jobs.state),
    node_id = CASE WHEN a.node_changed THEN a.node_id ELSE jobs.node_id END,
    attempt = GREATEST(jobs.attempt, a.attempt),
    current_epoch = COALESCE(a.current_epoch, jobs.current_epoch),
    started_at = COALESCE(jobs.started_at, a.started_at),
    updated_seq = a.max_seq
FROM a WHERE jobs.job_id = a.job_id;
"""

# The checks let at most one terminal event per job through, so no aggregate is needed.
FINISH_JOBS = f"""
UPDATE jobs SET
    finished_at = t.occurred_at,
    final_loss = t.f.metrics['loss'],
    final_accuracy = t.f.metrics['accuracy'],
    final_val_accuracy = t.f.metrics['val_accuracy'],
    artifact_uri = t.f.artifact_uri,
    sha256 = t.f.sha256,
    size_bytes = t.f.size_bytes,
    compute_seconds = t.f.compute_seconds,
    error = t.f.error
FROM jok t WHERE jobs.job_id = t.job_id AND t.type IN {TERMINAL};
"""

INSERT_EPOCHS = """
INSERT INTO epochs
SELECT job_id, f.attempt, f.epoch, f.node_id,
       f.loss, f.accuracy, f.val_loss,
       f.val_accuracy, f.seconds, f.samples_per_s,
       f.checkpoint_uri, occurred_at, seq
FROM jok WHERE type = 'EpochCompleted';
"""

INSERT_ASSIGNMENTS = """
INSERT INTO assignments
SELECT job_id, f.attempt, f.node_id, occurred_at, 'assigned', seq, NULL
FROM jok WHERE type = 'JobAssigned';
"""

# An outcome event belongs to the job's latest assignment before it (ASOF); the first
# closing event after an assignment decides its outcome, JobStarted only marks it running.
CLOSE_ASSIGNMENTS = """
WITH oc AS (
    SELECT job_id, seq, type = 'JobStarted' AS opening, CASE type
        WHEN 'JobStarted' THEN 'running' WHEN 'JobRejected' THEN 'rejected' || CASE WHEN COALESCE(f.reason, '') <> ''
            THEN ': ' || (f.reason) ELSE '' END
        WHEN 'JobCompleted' THEN 'completed' WHEN 'JobFailed' THEN 'failed'
        WHEN 'JobRequeued' THEN 'requeued' WHEN 'JobCancelled' THEN 'cancelled' END AS outcome
    FROM jok WHERE type IN
        ('JobStarted', 'JobRejected', 'JobCompleted', 'JobFailed', 'JobRequeued', 'JobCancelled')
), owned AS (
    SELECT oc.*, a.seq AS aseq
    FROM oc ASOF JOIN (SELECT job_id, seq FROM assignments WHERE job_id IN (SELECT job_id FROM oc)) a
        ON oc.job_id = a.job_id AND oc.seq > a.seq
), res AS (
    SELECT job_id, aseq, arg_min(outcome, seq) FILTER (WHERE NOT opening) AS closed,
           min(seq) FILTER (WHERE NOT opening) AS closed_seq, bool_or(opening) AS started
    FROM owned GROUP BY job_id, aseq
)
UPDATE assignments SET
    outcome = COALESCE(res.closed, CASE WHEN res.started THEN 'running' ELSE assignments.outcome END),
    closed_seq = res.closed_seq
FROM res
WHERE assignments.job_id = res.job_id AND assignments.seq = res.aseq AND assignments.closed_seq IS NULL;
"""

# Node events: a NodeLost or NodeDeregistered for a node never registered is an anomaly.
CHECK_NODE_EVENTS = """
CREATE OR REPLACE TEMP TABLE nv AS
WITH ne AS (
    SELECT s.seq, s.type, s.aggregate_id AS node_id, n.node_id IS NOT NULL AS known,
           min(s.seq) FILTER (WHERE s.type = 'NodeRegistered') OVER (PARTITION BY s.aggregate_id) AS first_reg
    FROM stage s LEFT JOIN nodes n ON n.node_id = s.aggregate_id
    WHERE s.subject LIKE 'events.node.%'
)
SELECT seq, CASE WHEN type <> 'NodeRegistered' AND NOT (known OR COALESCE(first_reg < seq, false))
    THEN type || ' for unknown node ' || node_id || ' (no NodeRegistered before it)' END AS reason
FROM ne;
CREATE OR REPLACE TEMP TABLE nok AS
SELECT s.*, s.aggregate_id AS node_id, n.node_id IS NOT NULL AS known
FROM stage s JOIN nv USING (seq) LEFT JOIN nodes n ON n.node_id = s.aggregate_id WHERE nv.reason IS NULL;
"""

INSERT_NODES = """
INSERT INTO nodes (node_id, state, updated_seq)
SELECT DISTINCT node_id, 'online', 0 FROM nok WHERE type = 'NodeRegistered' AND NOT known;
"""

UPDATE_NODES = """
WITH a AS (
    SELECT node_id, max(seq) AS max_seq,
        arg_max(f.name, seq) FILTER (WHERE type = 'NodeRegistered') AS name,
        arg_max(f.endpoint, seq) FILTER (WHERE type = 'NodeRegistered') AS endpoint,
        arg_max(f.devices, seq) FILTER (WHERE type = 'NodeRegistered') AS devices,
        arg_max(f.cpu_cores, seq) FILTER (WHERE type = 'NodeRegistered') AS cpu_cores,
        arg_max(f.ram_bytes, seq) FILTER (WHERE type = 'NodeRegistered') AS ram_bytes,
        arg_max(f.slots, seq) FILTER (WHERE type = 'NodeRegistered') AS slots,
        arg_max(f.version, seq) FILTER (WHERE type = 'NodeRegistered') AS version,
        arg_max(occurred_at, seq) FILTER (WHERE type = 'NodeRegistered') AS registered_at,
        arg_max(CASE type WHEN 'NodeRegistered' THEN 'online' WHEN 'NodeLost' THEN 'lost'
                ELSE 'deregistered' END, seq) AS state,
        max(CASE WHEN type = 'NodeLost' THEN (f.last_seen AT TIME ZONE 'UTC')
                 WHEN type = 'NodeRegistered' THEN occurred_at END) AS last_seen
    FROM nok GROUP BY node_id
)
UPDATE nodes SET
    name = COALESCE(a.name, nodes.name), endpoint = COALESCE(a.endpoint, nodes.endpoint),
    devices = COALESCE(a.devices, nodes.devices), cpu_cores = COALESCE(a.cpu_cores, nodes.cpu_cores),
    ram_bytes = COALESCE(a.ram_bytes, nodes.ram_bytes), slots = COALESCE(a.slots, nodes.slots),
    version = COALESCE(a.version, nodes.version),
    registered_at = COALESCE(a.registered_at, nodes.registered_at),
    state = a.state, last_seen = GREATEST(nodes.last_seen, a.last_seen), updated_seq = a.max_seq
FROM a WHERE nodes.node_id = a.node_id;
"""

INSERT_EVENTS = """
INSERT INTO events
SELECT seq, subject, type, event_id, occurred_at, stored_at, aggregate_id, raw FROM stage;
"""

ANOMALIES_FROM_CHECKS = f"""
INSERT INTO anomalies
SELECT '{EVENTS_STREAM}', s.seq, s.subject, c.reason, s.raw
FROM stage s JOIN {{checks}} c USING (seq) WHERE c.reason IS NOT NULL ORDER BY s.seq;
"""

JOB_TYPES = frozenset({
    "JobSubmitted", "JobAssigned", "JobRejected", "JobStarted", "EpochCompleted", "JobCompleted",
    "JobFailed", "JobRequeued", "JobCancelRequested", "JobCancelled",
})
TERMINAL_TYPES = frozenset({"JobCompleted", "JobFailed", "JobCancelled"})
NODE_TYPES = frozenset({"NodeRegistered", "NodeLost", "NodeDeregistered"})
_CLOSING = frozenset({"JobStarted", "JobRejected", "JobCompleted", "JobFailed", "JobRequeued", "JobCancelled"})

# (statement, the event types that make it needed; None: always). A statement is
# skipped when the batch holds none of its types; the temp tables and views a skipped
# check would create are then never read.
EVENTS_BATCH: tuple[tuple[str, frozenset[str] | None], ...] = (
    (STAGE, None),
    (INSERT_EVENTS, None),
    (CHECK_JOB_EVENTS, JOB_TYPES),
    (ANOMALIES_FROM_CHECKS.format(checks="jv"), JOB_TYPES),
    (INSERT_JOBS, frozenset({"JobSubmitted"})),
    (UPDATE_JOBS, JOB_TYPES),
    (FINISH_JOBS, TERMINAL_TYPES),
    (INSERT_EPOCHS, frozenset({"EpochCompleted"})),
    (INSERT_ASSIGNMENTS, frozenset({"JobAssigned"})),
    (CLOSE_ASSIGNMENTS, _CLOSING),
    (CHECK_NODE_EVENTS, NODE_TYPES),
    (ANOMALIES_FROM_CHECKS.format(checks="nv"), NODE_TYPES),
    (INSERT_NODES, frozenset({"NodeRegistered"})),
    (UPDATE_NODES, NODE_TYPES),
)

TELEMETRY_BATCH: tuple[tuple[str, frozenset[str] | None], ...] = (
    (STAGE, None),
    ("""
    INSERT INTO node_metrics
    SELECT aggregate_id, occurred_at, f.cpu_percent, f.ram_used_bytes,
           f.ram_total_bytes, f.gpu_percent,
           f.gpu_memory_used_bytes, f.gpu_memory_total_bytes,
           len(f.active_jobs), seq
    FROM stage WHERE type = 'NodeHeartbeat';
    """, None),
    ("""
    WITH a AS (SELECT aggregate_id AS node_id, max(occurred_at) AS seen FROM stage GROUP BY aggregate_id)
    UPDATE nodes SET last_seen = GREATEST(nodes.last_seen, a.seen) FROM a WHERE nodes.node_id = a.node_id;
    """, None),
)

ANOMALIES_FROM_ARROW = "INSERT INTO anomalies SELECT * FROM bad_arrow;"
SET_CHECKPOINT = "UPDATE projection_checkpoint SET last_seq = $seq WHERE stream = $stream;"
