"""The event catalog: round trips, clear errors, schema evolution."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given, strategies as st

from events import (
    EVENT_TYPES,
    EpochCompleted,
    InvalidEvent,
    JobSpec,
    JobSubmitted,
    JobPhase,
    NodeHeartbeat,
    build,
    decode,
    encode,
    subject_for,
)
from events import catalog, codec


ids = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=1, max_size=20)


@given(job_id=ids, epochs=st.integers(1, 10_000), batch=st.integers(1, 4096), hp=st.dictionaries(ids, ids, max_size=4))
def test_job_submitted_round_trips(job_id, epochs, batch, hp):
    event = JobSubmitted(job_id=job_id, spec=JobSpec(epochs=epochs, batch_size=batch, hyperparameters=hp))
    assert decode(encode(event)) == event


@given(epoch=st.integers(1, 1000), loss=st.floats(allow_nan=False, allow_infinity=False))
def test_epoch_completed_round_trips(epoch, loss):
    event = EpochCompleted(job_id="j", epoch=epoch, loss=loss)
    assert decode(encode(event)) == event


def test_every_type_is_in_the_union_and_tagged_by_name():
    assert set(EVENT_TYPES) == {
        "NodeRegistered", "NodeLost", "NodeDeregistered", "NodeHeartbeat", "JobSubmitted",
        "JobAssigned", "JobRejected", "JobStarted", "EpochCompleted", "JobCompleted",
        "JobFailed", "JobRequeued", "JobCancelRequested", "JobCancelled",
        "DeploymentRequested", "DeploymentPlaced", "DeploymentRunning", "DeploymentFailed", "DeploymentStopped",
        "DeploymentDeleted", "DeploymentStats",
        "TerminalSessionOpened", "TerminalSessionClosed", "TerminalSessionDenied", "JobPhase", "JobWaiting", "JobLog",
    }
    assert msgspec.json.decode(encode(JobSubmitted(job_id="j", spec=JobSpec())))["type"] == "JobSubmitted"


def test_subjects():
    assert subject_for(JobSubmitted(job_id="j1", spec=JobSpec())) == "events.job.j1"
    assert subject_for(NodeHeartbeat(node_id="n1")) == "telemetry.node.n1"
    assert subject_for(JobPhase(job_id="j1", node_id="n1", phase="compiling")) == "telemetry.job.j1"
    from events import DeploymentRunning, DeploymentStats
    assert subject_for(DeploymentRunning(deployment_id="d1", node_id="n1")) == "events.deployment.d1"
    assert subject_for(DeploymentStats(deployment_id="d1", window_start=catalog.utc_now())) == "telemetry.deployment.d1"
    with pytest.raises(InvalidEvent, match="contains '.'"):
        subject_for(JobSubmitted(job_id="a.b", spec=JobSpec()))


def test_build_names_the_field_and_problem():
    with pytest.raises(InvalidEvent) as info:
        build("JobSubmitted", {"job_id": "j", "spec": {"epochs": "three"}})
    assert str(info.value) == "JobSubmitted: Expected `int`, got `str` - at `$.spec.epochs`"
    with pytest.raises(InvalidEvent, match="unknown event type 'JobExploded'"):
        build("JobExploded", {})
    with pytest.raises(InvalidEvent, match="Object missing required field `job_id`"):
        build("JobSubmitted", {"spec": {}})


def test_garbage_is_invalid_not_a_crash():
    for data in (b"", b"nope", b"[]", b'{"type": "Nope"}', b'{"job_id": 3}'):
        with pytest.raises(InvalidEvent):
            decode(data)


def test_an_old_event_decodes_after_a_field_is_added():
    """Events written before a field existed still decode, with the field's default."""
    old = b'{"type":"EpochCompleted","event_id":"e1","occurred_at":"2026-01-01T00:00:00Z","job_id":"j","epoch":2}'
    event = decode(old)
    assert event.epoch == 2 and event.samples_per_s == 0.0 and event.metrics == {}


def test_an_upcaster_rewrites_an_old_schema_version(monkeypatch):
    """A change a default cannot express bumps the version and registers an upcaster."""
    monkeypatch.setitem(catalog.SCHEMA_VERSIONS, "JobCancelRequested", 2)
    monkeypatch.setattr(codec, "UPCASTERS", {})

    @codec.register_upcaster("JobCancelRequested", 1)
    def rename_why(raw):
        raw["reason"] = raw.pop("why", "")
        return raw

    old = b'{"type":"JobCancelRequested","job_id":"j","schema_version":1,"why":"user asked"}'
    event = decode(old)
    assert event.reason == "user asked" and event.schema_version == 2


def test_the_readme_prints_the_one_error_table():
    from pathlib import Path

    from events.errors import CODES

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    for code, answer in CODES.items():
        assert f"| {code} | {answer.grpc} | {answer.exit} | {answer.meaning} |" in readme, f"README's row for {code}"
