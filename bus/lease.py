"""A lease in a NATS KV bucket: at most one holder at a time, that must renew it.

The bucket keeps one value per key (history 1) for at most ``ttl_s`` seconds (the
bucket's max age), so a holder that stops renewing loses the lease ``ttl_s`` after its
last renewal, and nothing has to clean up after a crashed one.

- ``acquire()``: KV ``create``, which the server refuses while a value is there (the
  expected last sequence of the key is 0): the first to create it holds it.
- ``renew()``: KV ``update`` at the revision this holder wrote last (compare and set):
  if anyone else wrote since, or the value expired, the update is refused and the
  lease is lost.
- ``release()``: delete at our revision, so another takes over at once.

NATS errors stay here: a server that cannot be reached is ``BusUnavailable``.
"""

from __future__ import annotations

import asyncio
import contextlib

import nats.errors
import nats.js.errors
from nats.js import api

from bus.errors import BusUnavailable

__all__ = ["Lease"]


class Lease:
    """One key of a lease bucket, seen by one would-be holder named ``holder``.

    ``ttl_s`` is the bucket's max age once it is open: the TTL of whoever created it."""

    def __init__(self, bus, bucket: str, key: str, holder: str, *, ttl_s: float) -> None:
        self.bus = bus
        self.bucket = bucket
        self.key = key
        self.holder = holder
        self.ttl_s = ttl_s
        self.revision = 0  # of our last write; 0: we do not hold it
        self._kv = None

    async def _store(self):
        if self._kv is None:
            js = self.bus.js
            try:
                self._kv = await js.key_value(self.bucket)
            except nats.js.errors.BucketNotFoundError:
                config = api.KeyValueConfig(bucket=self.bucket, history=1, ttl=self.ttl_s,
                                            replicas=self.bus.replicas, storage=api.StorageType.FILE)
                try:
                    self._kv = await js.create_key_value(config=config)
                except nats.js.errors.BadRequestError:  # created meanwhile by another central
                    self._kv = await js.key_value(self.bucket)
            self.ttl_s = (await self._kv.status()).ttl or self.ttl_s  # the bucket's, whoever made it
        return self._kv

    async def acquire(self) -> bool:
        """Take the lease if nobody holds it; True when we hold it now."""
        with self._errors("acquire"):
            kv = await self._store()
            try:
                self.revision = await kv.create(self.key, self.holder.encode())
            except nats.js.errors.KeyWrongLastSequenceError:
                self.revision = 0
            except nats.js.errors.KeyNotFoundError:
                # nats-py's create, finding the key there, reads it to see whether it was
                # deleted; the TTL took it in between: nobody holds it, take it now
                try:
                    self.revision = await kv.create(self.key, self.holder.encode())
                except (nats.js.errors.KeyWrongLastSequenceError, nats.js.errors.KeyNotFoundError):
                    self.revision = 0  # another central was quicker: not ours this round
            return self.revision > 0

    async def renew(self) -> bool:
        """Write the lease again at our revision; False when it is no longer ours."""
        if not self.revision:
            return False
        with self._errors("renew"):
            kv = await self._store()
            try:
                self.revision = await kv.update(self.key, self.holder.encode(), last=self.revision)
            except nats.js.errors.KeyWrongLastSequenceError:
                self.revision = 0
            return self.revision > 0

    async def release(self) -> None:
        """Give the lease up now (if still ours), so another need not wait for the TTL."""
        if not self.revision:
            return
        revision, self.revision = self.revision, 0
        with self._errors("release"):
            kv = await self._store()
            try:
                await kv.delete(self.key, last=revision)
            except nats.js.errors.KeyWrongLastSequenceError:
                pass  # it was not ours any more

    async def current_holder(self) -> str | None:
        """Who holds the lease now (None: nobody)."""
        with self._errors("read"):
            kv = await self._store()
            try:
                entry = await kv.get(self.key)
            except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
                return None
            return entry.value.decode() if entry.value else None

    def _errors(self, what: str):
        return _translated(self.bus.url, f"lease {self.bucket}/{self.key}: {what}")


@contextlib.contextmanager
def _translated(url: str, what: str):
    """NATS's errors of ``what`` as ``BusUnavailable``."""
    try:
        yield
    except (nats.errors.Error, asyncio.TimeoutError) as exc:
        raise BusUnavailable(url, f"{what}: {type(exc).__name__}") from exc
