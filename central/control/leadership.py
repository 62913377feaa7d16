"""Which central does the time-driven work: the holder of a lease in a NATS KV bucket.

Several central processes can serve one stream; each serves gRPC and REST and folds the
stream into its own state, but only the holder of the lease runs the scheduler and
liveness (they act on time and on the whole cluster, so one at a time is enough, and
two would do each thing twice before the expected versions stopped the second).

Every ``ttl_s / 3`` a central that holds the lease renews it (compare and set at its
last revision) and one that does not tries to take it. A holder that cannot renew for
``ttl_s * SAFETY`` seconds steps down by itself before its value expires in the bucket,
so two holders never act at once by the lease alone (and the expected versions on
every append stop a second assignment anyway). A holder killed with SIGKILL stops
renewing; its value expires ``ttl_s`` after its last renewal and another central takes
over within ``ttl_s + ttl_s / 3``: well within two TTLs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from bus import BusError
from bus.lease import Lease

__all__ = ["LEASE_BUCKET", "LEASE_KEY", "Leadership", "SAFETY"]

log = logging.getLogger("cyxwiz.central.leadership")

LEASE_BUCKET = "cyxwiz-leases"
LEASE_KEY = "scheduler"
SAFETY = 0.8  # a holder trusts its lease for this share of the TTL after a renewal was sent


class Leadership:
    def __init__(
        self,
        lease: Lease,
        *,
        on_gain: Callable[[], Awaitable[None]],
        on_loss: Callable[[], Awaitable[None]],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.lease = lease
        self.on_gain = on_gain
        self.on_loss = on_loss
        self.clock = clock
        self.holding = False
        self.gained_total = 0
        self._valid_until = 0.0

    @property
    def interval_s(self) -> float:
        return self.lease.ttl_s / 3

    async def run(self) -> None:
        """Renew or try to take the lease, forever; on every change call ``on_gain`` or
        ``on_loss``. Cancel to stop (``stop()`` also gives the lease up)."""
        while True:
            await self.step()
            await asyncio.sleep(self.interval_s)

    async def step(self) -> None:
        sent = self.clock()
        try:  # a value of ours still stored (we stepped down while NATS was away) is renewed
            held = await (self.lease.renew() if self.lease.revision else self.lease.acquire())
            if held:
                self._valid_until = sent + self.lease.ttl_s * SAFETY
        except BusError as exc:
            held = self.holding and self.clock() < self._valid_until
            if self.holding:
                log.warning("lease not renewed (%s); %s", exc,
                            "still ours for now" if held else "stepping down: it may have expired")
        if held:
            if not self.holding:
                self.holding = True
                self.gained_total += 1
                log.info("central %s holds the lease: scheduling and liveness run here", self.lease.holder)
                await self.on_gain()
        elif self.holding:
            self.holding = False
            log.warning("central %s lost the lease: scheduling and liveness stop here", self.lease.holder)
            await self.on_loss()

    async def stop(self) -> None:
        """Step down (if holding) and give the lease up, so another takes over at once."""
        if self.holding:
            self.holding = False
            await self.on_loss()
        try:
            await self.lease.release()
        except BusError:
            pass  # it expires by itself

    def status(self) -> dict:
        return {"holder": self.holding, "central_id": self.lease.holder, "ttl_s": self.lease.ttl_s,
                "gained_total": self.gained_total}
