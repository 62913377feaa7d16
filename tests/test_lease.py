"""The KV lease (bus.lease) against a real nats-server: one holder at a time, compare and
set on renewal, expiry after the bucket's TTL, release."""

from __future__ import annotations

import time

from bus.lease import Lease
from waiting import eventually


async def test_one_holder_at_a_time_renewed_by_revision_taken_over_after_the_ttl(bus):
    a = Lease(bus, "test-leases", "work", "a", ttl_s=1.0)
    b = Lease(bus, "test-leases", "work", "b", ttl_s=5.0)
    assert await a.acquire()
    assert not await b.acquire(), "held: nobody else may create it"
    assert b.ttl_s == 1.0, "the bucket's TTL, whoever opened it"
    assert await a.renew() and await a.current_holder() == "a"
    assert not await b.renew(), "b holds no revision"
    stopped = time.monotonic()
    await eventually(b.acquire, timeout=10, interval=0.1, message="b takes it once a's value expired")
    assert 0.9 <= time.monotonic() - stopped < 5.0
    assert not await a.renew(), "a's revision is stale: the compare and set fails"
    assert a.revision == 0 and await a.current_holder() == "b"
    await b.release()
    assert await a.current_holder() is None
    assert await a.acquire(), "a released lease is free at once"
