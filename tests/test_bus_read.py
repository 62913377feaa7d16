"""Replay and subscription: ordered, complete, and ending when they should."""

from __future__ import annotations

import asyncio

from events import JobSpec, JobSubmitted, NodeDeregistered, job_subject


async def test_read_returns_everything_in_order(bus):
    events = [JobSubmitted(job_id=f"j{i}", spec=JobSpec()) for i in range(2500)]
    seqs = await bus.append_many(events)
    assert seqs == list(range(1, 2501))
    read = [m async for m in bus.read(1)]
    assert [m.seq for m in read] == seqs
    assert [m.decode() for m in read] == events
    assert [m.seq async for m in bus.read(2400)] == list(range(2400, 2501))


async def test_read_of_one_subject_ends_when_later_messages_are_elsewhere(bus):
    await bus.append(JobSubmitted(job_id="a", spec=JobSpec()))
    await bus.append_many([JobSubmitted(job_id=f"b{i}", spec=JobSpec()) for i in range(10)])
    got = await asyncio.wait_for(_collect(bus.read(1, subjects=job_subject("a"))), 5)
    assert [m.subject for m in got] == ["events.job.a"]
    assert await asyncio.wait_for(_collect(bus.read(1, subjects=job_subject("nobody"))), 5) == []
    assert await asyncio.wait_for(_collect(bus.read(5, subjects=job_subject("a"))), 5) == []


async def test_read_of_an_empty_stream_ends(bus):
    assert await asyncio.wait_for(_collect(bus.read(1)), 5) == []


async def test_subscribe_sees_history_then_live(bus):
    await bus.append(JobSubmitted(job_id="old", spec=JobSpec()))
    seen = []

    async def consume():
        async for msg in bus.subscribe(1):
            seen.append(msg.decode())
            if len(seen) == 2:
                return

    task = asyncio.create_task(consume())
    await bus.append(NodeDeregistered(node_id="n1", reason="gone"))
    await asyncio.wait_for(task, 5)
    assert [type(e).__name__ for e in seen] == ["JobSubmitted", "NodeDeregistered"]


async def _collect(iterator):
    return [m async for m in iterator]
