"""Keeping a projection up to date with the bus, and rebuilding one from the stream."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Callable

from bus import EventBus, StoredMessage
from central.metrics import observe_projection_lag
from central.readmodel.projection import (
    EVENTS_STREAM,
    TELEMETRY_STREAM,
    Projection,
    ProjectionBusy,
    held_by_another_process,
)

_SUBJECTS = {EVENTS_STREAM: "events.>", TELEMETRY_STREAM: "telemetry.>"}


class Projector:
    """Keeps a ``Projection`` up to date with the bus.

    ``run()`` follows both streams (events, and telemetry with its own checkpoint) until
    cancelled; whatever arrived while a batch was being written is the next batch, so a
    backlog is applied in large batches and a trickle with little delay. Telemetry waits
    ``telemetry_linger_s`` between its batches: node metrics need no millisecond
    freshness, and one commit per heartbeat of hundreds of nodes would cost a core.
    Under load, event commits start at least ``min_commit_interval_s`` apart: a commit
    costs about a millisecond however small its batch, so a busy central would otherwise
    spend its core committing one event at a time. A quiet stream is applied at once.
    """

    def __init__(
        self,
        projection: Projection,
        bus: EventBus,
        *,
        max_batch: int = 20_000,
        telemetry: bool = True,
        on_applied: Callable[[str, int], None] | None = None,
        telemetry_linger_s: float = 0.5,
        min_commit_interval_s: float = 0.02,
    ) -> None:
        """``on_applied(stream, seq)`` is called on the event loop after each commit."""
        self.telemetry_linger_s = telemetry_linger_s
        self.min_commit_interval_s = min_commit_interval_s
        self.projection = projection
        self.on_applied = on_applied
        self.bus = bus
        self.max_batch = max_batch
        self.streams = (EVENTS_STREAM, TELEMETRY_STREAM) if telemetry else (EVENTS_STREAM,)
        self._applied = asyncio.Condition()
        self._fed: list[list[StoredMessage]] | None = None  # batches handed in by feed(), once live
        self._fed_count = 0
        self._fed_arrived: asyncio.Event | None = None
        self._events_caught_up = asyncio.Event()

    # --- a shared subscription ----------------------------------------------------------------

    MAX_FED = 200_000  # messages held for the projector; past that it drops them and reads the bus

    def use_feed(self) -> Callable[[list[StoredMessage]], None]:
        """Take the events stream's batches from the caller instead of a subscription of
        its own (central folds the same stream already: one delivery of each event, not
        two). Call before ``run()``; call the returned function with each batch, in order.

        Batches handed in before the projector has caught up on its own are dropped, and
        any gap between its checkpoint and a handed-in batch is read from the bus first,
        so a late start, a slow commit or a dropped backlog never loses an event.
        """
        self._fed_arrived = asyncio.Event()
        return self._feed

    def _feed(self, batch: list[StoredMessage]) -> None:
        if self._fed is None or not batch:
            return  # not caught up yet: the gap check reads these from the bus later
        if self._fed_count > self.MAX_FED:
            self._fed.clear()  # far behind: hold nothing, read the bus instead
            self._fed_count = 0
        self._fed.append(batch)
        self._fed_count += len(batch)
        self._fed_arrived.set()

    async def _follow_fed(self) -> None:
        await self._catch_up(EVENTS_STREAM)
        self._events_caught_up.set()
        self._fed = []
        while True:
            await self._fed_arrived.wait()
            self._fed_arrived.clear()
            while self._fed:
                batch = [m for b in self._fed for m in b]
                self._fed.clear()
                self._fed_count = 0
                if batch[0].seq > self.projection.checkpoint(EVENTS_STREAM) + 1:
                    await self._catch_up(EVENTS_STREAM, until_seq=batch[0].seq - 1)  # never handed in, or dropped
                await self._apply_paced(EVENTS_STREAM, batch, self.min_commit_interval_s)

    async def run(self) -> None:
        """Catch up, then apply live batches forever (cancel the task to stop). Telemetry
        starts once the events stream has caught up: a heartbeat moves the last_seen of a
        node row, which must be there (a rebuilt file would otherwise lose them)."""
        if TELEMETRY_STREAM not in self.streams:
            return await self._follow(EVENTS_STREAM)
        events = asyncio.create_task(self._follow(EVENTS_STREAM))
        caught_up = asyncio.create_task(self._events_caught_up.wait())
        try:
            await asyncio.wait([events, caught_up], return_when=asyncio.FIRST_COMPLETED)
            await asyncio.gather(events, self._follow(TELEMETRY_STREAM))
        finally:
            events.cancel()
            caught_up.cancel()

    async def catch_up(self) -> int:
        """Apply everything the streams hold now; returns the events stream's checkpoint."""
        for stream in self.streams:
            await self._catch_up(stream)
        return self.projection.checkpoint(EVENTS_STREAM)

    async def _catch_up(self, stream: str, until_seq: int | None = None) -> None:
        """Apply what ``stream`` holds after the checkpoint, up to ``until_seq`` (default: its end now)."""
        start = self.projection.checkpoint(stream) + 1
        async for batch in self.bus.read_batches(start, until_seq=until_seq, subjects=_SUBJECTS[stream],
                                                 max_batch=self.max_batch):
            await self._apply(stream, batch)

    async def wait_for_seq(self, seq: int, timeout: float = 10.0, stream: str = EVENTS_STREAM) -> bool:
        """Wait until the projection has applied ``seq``; False if ``timeout`` passes first."""
        async with self._applied:
            try:
                await asyncio.wait_for(
                    self._applied.wait_for(lambda: self.projection.checkpoint(stream) >= seq), timeout
                )
            except asyncio.TimeoutError:
                return False
        return True

    async def _follow(self, stream: str) -> None:
        if stream == EVENTS_STREAM and self._fed_arrived is not None:
            return await self._follow_fed()
        if stream == EVENTS_STREAM:
            await self._catch_up(EVENTS_STREAM)
            self._events_caught_up.set()
        start = self.projection.checkpoint(stream) + 1
        pause = self.telemetry_linger_s if stream == TELEMETRY_STREAM else self.min_commit_interval_s
        async for batch in self.bus.subscribe_batches(start, subjects=_SUBJECTS[stream], max_batch=self.max_batch):
            await self._apply_paced(stream, batch, pause)

    async def _apply_paced(self, stream: str, batch: list[StoredMessage], pause: float) -> None:
        """Apply, then wait out the rest of ``pause`` since the apply began."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        await self._apply(stream, batch)
        rest = pause - (loop.time() - started)
        if rest > 0:
            await asyncio.sleep(rest)

    async def _apply(self, stream: str, batch: list[StoredMessage]) -> None:
        seq = await asyncio.to_thread(self.projection.apply, stream, batch)
        if batch and stream == EVENTS_STREAM and self._events_caught_up.is_set():  # replayed history is not lag
            observe_projection_lag(batch[0].time_ns)  # in stream order: the oldest
        if self.on_applied is not None:
            self.on_applied(stream, seq)
        async with self._applied:
            self._applied.notify_all()


async def rebuild(path: str | os.PathLike, bus: EventBus, *, max_batch: int = 20_000) -> int:
    """Replay the whole stream into a fresh projection at ``path``; returns its checkpoint.

    Written to a temporary file beside it and renamed over it at the end, so a failed
    rebuild leaves the old file as it was. Raises ``ProjectionBusy`` if a process holds it.
    """
    path = Path(path)
    _refuse_if_in_use(path)
    tmp = path.with_name(f"{path.name}.rebuild-{os.getpid()}")
    _remove_db(tmp)
    projection = Projection(tmp)
    try:
        last = await Projector(projection, bus, max_batch=max_batch).catch_up()
    except BaseException:
        projection.close()
        _remove_db(tmp)
        raise
    projection.close()  # checkpoints: the file is complete, no WAL left
    Path(f"{path}.wal").unlink(missing_ok=True)  # an old WAL must never meet the new file
    os.replace(tmp, path)
    return last


def _refuse_if_in_use(path: Path) -> None:
    if not path.exists():
        return
    if held_by_another_process(path):
        raise ProjectionBusy(f"{path} is in use by another process (a running central?); stop it first")


def _remove_db(path: Path) -> None:
    path.unlink(missing_ok=True)
    Path(f"{path}.wal").unlink(missing_ok=True)
