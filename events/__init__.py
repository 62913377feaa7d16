"""The event catalog and its encoding. Pure: no I/O.

    from events import JobSubmitted, JobSpec, encode, decode
"""

from events.catalog import (
    DEPLOYMENT_TYPES,
    EVENT_TYPES,
    SCHEMA_VERSIONS,
    TERMINAL_JOB_TYPES,
    DeploymentDeleted,
    DeploymentEvent,
    DeploymentFailed,
    DeploymentPlaced,
    DeploymentRequested,
    DeploymentRunning,
    DeploymentStats,
    DeploymentStopped,
    Device,
    EpochCompleted,
    Event,
    EventBase,
    JobAssigned,
    JobCancelled,
    JobCancelRequested,
    JobCompleted,
    JobEvent,
    JobFailed,
    JobRejected,
    JobRequeued,
    JobSpec,
    JobStarted,
    JobSubmitted,
    NodeDeregistered,
    NodeEvent,
    NodeHeartbeat,
    NodeLost,
    NodeRegistered,
    Requirements,
    new_event_id,
    utc_now,
)
from events.errors import CODES, ConfigError, CyxwizError, answer_for
from events.codec import (
    InvalidEvent,
    aggregate_id,
    build,
    decode,
    decode_json,
    encode,
    from_dict,
    headers_for,
    job_subject,
    misplaced,
    node_subject,
    register_upcaster,
    subject_for,
    to_builtins,
    upcast,
)

__all__ = [name for name in dir() if not name.startswith("_")]
