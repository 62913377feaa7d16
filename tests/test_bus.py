"""The event bus against a real nats-server: dedup by event id, optimistic concurrency."""

from __future__ import annotations

import asyncio

import pytest

from bus import EVENTS_STREAM, AppendFailed, BusUnavailable, ConcurrencyConflict
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


async def test_append_each_reports_each_event_at_its_own_expected_version(bus):
    first = await bus.append(JobSubmitted(job_id="a", spec=JobSpec()))
    await bus.append(JobSubmitted(job_id="b", spec=JobSpec()))
    results = await bus.append_each(
        [JobAssigned(job_id="a", node_id="n1"), JobAssigned(job_id="b", node_id="n1"), JobSubmitted(job_id="c", spec=JobSpec())],
        [first, first, 0],  # b is at sequence 2, not 1
    )
    assert isinstance(results[0], int) and isinstance(results[2], int)
    assert isinstance(results[1], ConcurrencyConflict) and results[1].subject == job_subject("b")
    assert await bus.last_sequence() == 4


async def test_more_events_than_the_window_keep_their_order(bus):
    bus._appender.window = 7  # many refills of the in-flight window
    events = [JobSubmitted(job_id=f"w{i}", spec=JobSpec()) for i in range(100)]
    assert await bus.append_many(events) == list(range(1, 101))
    stored = [msg.decode().job_id async for msg in bus.read(1)]
    assert stored == [e.job_id for e in events]


async def test_an_append_no_stream_takes_fails_clearly(bus):
    await bus.js.delete_stream(EVENTS_STREAM)
    with pytest.raises(AppendFailed, match="NATS has no stream that takes this subject now"):
        await bus.append(JobSubmitted(job_id="lost", spec=JobSpec()))
    with pytest.raises(AppendFailed, match="2 of 2 appends failed"):
        await bus.append_many([JobSubmitted(job_id=f"lost{i}", spec=JobSpec()) for i in range(2)])


async def test_concurrent_batches_get_their_own_acks(bus):
    batches = [[JobSubmitted(job_id=f"c{b}-{i}", spec=JobSpec()) for i in range(50)] for b in range(8)]
    results = await asyncio.gather(*(bus.append_many(batch) for batch in batches))
    assert sorted(seq for seqs in results for seq in seqs) == list(range(1, 401))
    for batch, seqs in zip(batches, results):
        for event, seq in zip(batch, seqs):
            assert (await bus.js.get_msg(EVENTS_STREAM, seq)).subject == job_subject(event.job_id)


async def test_appending_on_a_closed_connection_is_bus_unavailable(bus):
    await bus.nc.close()
    with pytest.raises(BusUnavailable):
        await bus.append_many([JobSubmitted(job_id="late", spec=JobSpec())])


async def test_appends_whose_acks_never_come_fail_after_the_timeout(bus):
    bus._appender._prefix = bus.nc.new_inbox() + "."  # acks now go to an inbox nobody reads
    with pytest.raises(AppendFailed, match="1 of 1 appends not acknowledged by NATS within 0.3 s: the stream has no leader"):
        await bus._appender.append([JobSubmitted(job_id="unheard", spec=JobSpec())], timeout=0.3)
    assert bus._appender._batches == {}, "a failed batch leaves nothing behind"


async def test_a_message_put_first_under_our_event_id_is_not_taken_for_our_append(bus):
    """Central's event ids are derived from its decisions, so a publisher could publish
    something else under one first; the duplicate answer is checked against what is stored."""
    ours = JobAssigned(job_id="j", node_id="n1", event_id="00000000-0000-4000-8000-000000000001")
    forged = JobAssigned(job_id="j", node_id="evil", event_id=ours.event_id)
    await bus.append(forged)
    with pytest.raises(ConcurrencyConflict, match="another message holds event id"):
        await bus.append(ours)
    again = JobAssigned(job_id="k", node_id="n1", event_id="00000000-0000-4000-8000-000000000002")
    seq = await bus.append(again)
    assert await bus.append(again) == seq, "a true retry of our own event is still stored once"
