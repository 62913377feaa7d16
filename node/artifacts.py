"""The node's side of the object store: checkpoints, final models, uploaded data sets.

Names in the buckets (every node and central share one NATS, so a requeued job can
resume on any node):

- ``cyxwiz-checkpoints``: ``<job_id>/attempt-<n>/epoch-<k>``
- ``cyxwiz-models``: ``<job_id>``
- ``cyxwiz-datasets``: the name in ``nats://<name>`` data set URIs

Objects are referred to by ``nats://<bucket>/<name>`` URIs, except data sets, whose
URI names only the object. Job telemetry (``JobPhase``) goes out on the same
connection, on ``telemetry.job.<job_id>``. The connection is made on first use and again after a
failure, so a node starts (and registers) while NATS is still coming up. Worker
threads call the ``*_blocking`` methods; everything else runs on the node's loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from bus import BusUnavailable, EventBus, ObjectNotFound, ObjectRef, parse_object_uri
from events import Event
from node.datasets import DatasetError

__all__ = [
    "CHECKPOINTS", "DATASETS", "MODELS", "ArtifactStore", "checkpoint_name", "model_uri",
]

log = logging.getLogger(__name__)
T = TypeVar("T")

CHECKPOINTS = "cyxwiz-checkpoints"
MODELS = "cyxwiz-models"
DATASETS = "cyxwiz-datasets"


def checkpoint_name(job_id: str, attempt: int, epoch: int) -> str:
    return f"{job_id}/attempt-{attempt}/epoch-{epoch}"


def model_uri(job_id: str) -> str:
    return f"nats://{MODELS}/{job_id}"


class ArtifactStore:
    """Puts and gets objects in the shared NATS object store at ``url``."""

    def __init__(self, url: str, *, connect_timeout: float = 5.0, credentials: Path | None = None) -> None:
        self.url = url
        self.credentials = credentials  # None: $CYXWIZ_NATS_CREDS (the node role's seed)
        self.connect_timeout = connect_timeout
        self._bus: EventBus | None = None
        self._lock = asyncio.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        """Remember the loop that worker threads hand their requests to."""
        self._loop = asyncio.get_running_loop()

    async def _connected(self) -> EventBus:
        async with self._lock:
            if self._bus is None or self._bus.nc.is_closed:
                self._bus = await EventBus.connect(
                    self.url, timeout=self.connect_timeout, name="cyxwiz-node", setup=False,
                    credentials=self.credentials,
                )
            return self._bus

    async def _call(self, op: Callable[[EventBus], Awaitable[T]]) -> T:
        """``op`` on the connected bus; EventBus raises only our errors (``BusError``)."""
        return await op(await self._connected())

    async def put_checkpoint(self, job_id: str, attempt: int, epoch: int, data: bytes) -> ObjectRef:
        name = checkpoint_name(job_id, attempt, epoch)
        return await self._call(lambda bus: bus.put_object(CHECKPOINTS, name, data))

    async def put_model(self, job_id: str, data: bytes) -> ObjectRef:
        return await self._call(lambda bus: bus.put_object(MODELS, job_id, data))

    async def publish_telemetry(self, event: Event) -> None:
        """Job telemetry (``JobPhase``) on ``telemetry.job.<job_id>``: best effort, one try."""
        await self._call(lambda bus: bus.publish_telemetry(event))

    async def get_uri(self, uri: str) -> bytes:
        """The object a ``nats://<bucket>/<name>`` URI names (``ObjectNotFound`` if none)."""
        bucket, name = parse_object_uri(uri)
        return await self._call(lambda bus: bus.get_object(bucket, name))

    async def get_dataset(self, name: str) -> bytes:
        """An uploaded data set; a missing one is a ``DatasetError`` saying how to upload it."""
        try:
            return await self._call(lambda bus: bus.get_object(DATASETS, name))
        except ObjectNotFound:
            raise DatasetError(
                f"nats://{name}",
                f"no object {name!r} in bucket {DATASETS}: upload it with `cyxwiz datasets put FILE`",
            ) from None

    async def dataset_sha256(self, name: str) -> str:
        """The SHA-256 (hex) the store holds for an uploaded data set, without reading it."""
        try:
            return await self._call(lambda bus: bus.object_sha256(DATASETS, name))
        except ObjectNotFound:
            raise DatasetError(
                f"nats://{name}",
                f"no object {name!r} in bucket {DATASETS}: upload it with `cyxwiz datasets put FILE`",
            ) from None

    # --- for worker threads ---------------------------------------------------------

    def _blocking(self, coro: Awaitable[T], timeout: float) -> T:
        if self._loop is None:
            raise RuntimeError("ArtifactStore.start() was not awaited on the node's loop")
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)  # type: ignore[arg-type]
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise BusUnavailable(self.url, f"no answer within {timeout:.0f}s") from None

    def get_dataset_blocking(self, name: str, timeout: float = 300.0) -> bytes:
        return self._blocking(self.get_dataset(name), timeout)

    def dataset_sha256_blocking(self, name: str, timeout: float = 30.0) -> str:
        return self._blocking(self.dataset_sha256(name), timeout)

    def get_uri_blocking(self, uri: str, timeout: float = 300.0) -> bytes:
        return self._blocking(self.get_uri(uri), timeout)

    async def close(self) -> None:
        async with self._lock:
            if self._bus is not None:
                await self._bus.close()
                self._bus = None
