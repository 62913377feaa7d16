"""The event bus against a real nats-server: dedup by event id, optimistic concurrency."""

from __future__ import annotations

import asyncio

import pytest

from bus import ConcurrencyConflict
from events import JobAssigned, JobSpec, JobSubmitted, job_subject


async def test_the_same_event_twice_is_stored_once(bus):
    event = JobSubmitted(job_id="j1", spec=JobSpec())
    assert await bus.append(event) == await bus.append(event) == 1
    assert await bus.append_many([event, event]) == [1, 1]
    assert await bus.last_sequence() == 1


async def test_two_appends_at_one_expected_version_exactly_one_wins(bus):
    version = await bus.append(JobSubmitted(job_id="j1", spec=JobSpec()))
    assert await bus.subject_version(job_subject("j1")) == version
    attempts = [
        bus.append(JobAssigned(job_id="j1", node_id=node), expected_version=version) for node in ("n1", "n2")
    ]
    results = await asyncio.gather(*attempts, return_exceptions=True)
    won = [r for r in results if isinstance(r, int)]
    lost = [r for r in results if isinstance(r, ConcurrencyConflict)]
    assert len(won) == 1 and len(lost) == 1
    assert "events.job.j1 is no longer at sequence 1" in str(lost[0])
    assert await bus.subject_version(job_subject("j1")) == won[0]
    with pytest.raises(ConcurrencyConflict):
        await bus.append(JobAssigned(job_id="j1", node_id="n3"), expected_version=version)


async def test_a_new_aggregate_expects_version_zero(bus):
    await bus.append(JobSubmitted(job_id="j2", spec=JobSpec()), expected_version=0)
    with pytest.raises(ConcurrencyConflict):
        await bus.append(JobSubmitted(job_id="j2", spec=JobSpec()), expected_version=0)
