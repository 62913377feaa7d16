"""Pipelined JetStream appends: many publishes in flight, their acks on one subscription.

nats-py's ``publish_async`` pays, per message, an asyncio semaphore behind ``wait_for``,
a future with a done-callback, and a ``PubAck`` built through dataclass reflection; on
2 cores that is most of an append's cost. Here a batch is plain publishes whose replies
go to ``<inbox>.<batch>.<index>``; one subscription decodes each ack with msgspec into
the batch's list of results, and the batch has one future to wait on. Every ack is still
checked: an error (a refused expected sequence, a missing stream) is that append's result.
"""

from __future__ import annotations

import asyncio
from typing import Sequence

import msgspec
import nats.errors

from bus.errors import AppendFailed, BusError, BusForbidden, BusUnavailable, ConcurrencyConflict
from bus.loop import wait_for_future
from bus.names import EVENTS_STREAM
from events import Event, InvalidEvent, decode, encode, headers_for, subject_for

# nats-server's err_codes for an expected-version check that failed: 10071 names the subject's
# last sequence; 10164 (replicated streams) says another message to the subject is still in
# flight, so the check cannot pass either. Both are a lost race, not a failure.
WRONG_LAST_SEQUENCE = frozenset({10071, 10164})
NO_RESPONDERS = "503"
NO_LEADER_HINT = ("the stream has no leader (a NATS cluster accepts writes while a majority of its servers is up) "
                  "or JetStream is not running; retry once it is back")


class _ApiError(msgspec.Struct):
    code: int = 0
    err_code: int = 0
    description: str = ""


class _PubAck(msgspec.Struct):
    seq: int = 0
    duplicate: bool = False
    error: _ApiError | None = None


_ack_decoder = msgspec.json.Decoder(_PubAck)


class _Batch:
    __slots__ = ("duplicates", "expected", "in_flight", "low_water", "remaining", "results", "subjects", "timeout",
                 "waiter", "waiting_for_all")

    def __init__(self, subjects: list[str], expected: Sequence[int | None] | None, window: int, timeout: float) -> None:
        self.subjects = subjects
        self.timeout = timeout
        self.expected = expected
        self.results: list[int | BusError | None] = [None] * len(subjects)
        self.duplicates: list[int] = []  # appends the server answered as a duplicate id
        self.remaining = len(subjects)
        self.in_flight = 0
        self.low_water = window // 2
        self.waiter: asyncio.Future | None = None  # the append waiting for acks, if it is
        self.waiting_for_all = False  # True: for every ack; False: for room in the window

    def satisfied(self) -> bool:
        return self.remaining == 0 if self.waiting_for_all else self.in_flight <= self.low_water


class Appender:
    """Appends for one NATS connection; ``window`` bounds the publishes awaiting an ack."""

    def __init__(self, nc, url: str, *, window: int = 4000, timeout: float = 30.0) -> None:
        self.nc = nc
        self.url = url
        self.window = window
        self.timeout = timeout
        self._prefix = ""
        self._batches: dict[str, _Batch] = {}
        self._next_batch = 0
        self._starting: asyncio.Lock | None = None

    async def _start(self) -> None:
        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:
            if not self._prefix:
                prefix = self.nc.new_inbox() + "."
                await self.nc.subscribe(prefix + ">", cb=self._on_ack, pending_msgs_limit=1_000_000,
                                        pending_bytes_limit=256 * 1024 * 1024)
                self._prefix = prefix

    async def append(
        self,
        events: Sequence[Event],
        expected_versions: Sequence[int | None] | None = None,
        timeout: float | None = None,
    ) -> list[int | BusError]:
        """Publish ``events`` pipelined; per event its stream sequence (the original's for
        a duplicate id) or the ``BusError`` that refused it. Raises ``BusUnavailable`` when
        the connection is closed, ``AppendFailed`` when acks stop coming for ``timeout`` s."""
        if not events:
            return []
        if not self._prefix:
            try:
                await self._start()
            except nats.errors.ConnectionClosedError as exc:
                raise BusUnavailable(self.url, "connection closed") from exc
        self._next_batch += 1
        key = str(self._next_batch)
        subjects = [subject_for(event) for event in events]
        batch = _Batch(subjects, expected_versions, self.window, timeout or self.timeout)
        self._batches[key] = batch
        reply = f"{self._prefix}{key}."
        publish = self.nc.publish
        try:
            for index, event in enumerate(events):
                if batch.in_flight >= self.window:
                    await self._wait(batch, waiting_for_all=False)
                batch.in_flight += 1
                expected = expected_versions[index] if expected_versions is not None else None
                await publish(subjects[index], encode(event), reply=f"{reply}{index}",
                              headers=headers_for(event, expected))
            await self._wait(batch, waiting_for_all=True)
            for i in batch.duplicates:
                batch.results[i] = await self._ours(events[i], subjects[i], batch.results[i],
                                                    expected_versions[i] if expected_versions is not None else None)
        except nats.errors.ConnectionClosedError as exc:
            raise BusUnavailable(self.url, "connection closed") from exc
        finally:
            del self._batches[key]
        return batch.results  # type: ignore[return-value]  # every slot is filled when done

    async def _ours(self, event: Event, subject: str, seq: int, expected: int | None) -> int | BusError:
        """A duplicate answer names the message already stored under this event id. Event
        ids are derived from decisions, so anyone who may publish could put another message
        under ours first: it counts as our append only if it is our event (its time aside)."""
        try:
            stored = await self.nc.jetstream().get_msg(EVENTS_STREAM, seq)
            same = stored.subject == subject and msgspec.structs.replace(
                decode(stored.data), occurred_at=event.occurred_at) == event
        except InvalidEvent:
            same = False
        except (nats.errors.Error, asyncio.TimeoutError) as exc:
            return AppendFailed(f"append to {subject}: could not check the stored duplicate ({type(exc).__name__})")
        if same:
            return seq
        return ConcurrencyConflict(subject, expected or 0, f"another message holds event id {event.event_id}")

    def refused(self, action: str, subject: str) -> None:
        """The server refused a publish to ``subject`` (lowercased, as nats-py reports
        it): every append to it still waiting fails with ``BusForbidden`` now, instead
        of waiting out the timeout for an ack that never comes."""
        if action != "publish":
            return
        for batch in self._batches.values():
            hit = False
            for i, name in enumerate(batch.subjects):
                if batch.results[i] is None and name.lower() == subject:
                    batch.results[i] = BusForbidden("publish", name)
                    batch.remaining -= 1
                    batch.in_flight -= 1
                    hit = True
            waiter = batch.waiter
            if hit and waiter is not None and not waiter.done() and batch.satisfied():
                waiter.set_result(True)

    async def _wait(self, batch: _Batch, *, waiting_for_all: bool) -> None:
        """Wait until every ack came (or, not ``waiting_for_all``, until the window has
        room) while acks keep arriving; give up after ``timeout`` s without one. One
        future and one timer per wait: an append of one event costs little more than
        its publish."""
        batch.waiting_for_all = waiting_for_all
        loop = asyncio.get_running_loop()
        while not batch.satisfied():
            before = batch.remaining
            batch.waiter = loop.create_future()
            try:
                acked = await wait_for_future(batch.waiter, batch.timeout, False)
            finally:
                batch.waiter = None
            if acked or batch.satisfied():
                continue
            if self.nc.is_closed:
                raise BusUnavailable(self.url, "connection closed")
            if batch.remaining == before:
                raise AppendFailed(
                    f"{batch.remaining} of {len(batch.subjects)} appends not acknowledged by NATS within "
                    f"{batch.timeout:g} s: {NO_LEADER_HINT}")

    async def _on_ack(self, msg) -> None:
        key, _, index = msg.subject[len(self._prefix):].partition(".")
        batch = self._batches.get(key)
        if batch is None:
            return  # a batch that timed out or was cancelled
        i = int(index)
        if batch.results[i] is not None:
            return
        batch.results[i] = self._result(batch, i, msg)
        batch.remaining -= 1
        batch.in_flight -= 1
        waiter = batch.waiter
        if waiter is not None and not waiter.done() and batch.satisfied():
            waiter.set_result(True)

    @staticmethod
    def _result(batch: _Batch, i: int, msg) -> int | BusError:
        subject = batch.subjects[i]
        if not msg.data and msg.headers and msg.headers.get("Status") == NO_RESPONDERS:
            return AppendFailed(f"append to {subject}: NATS has no stream that takes this subject now; {NO_LEADER_HINT}")
        try:
            ack = _ack_decoder.decode(msg.data)
        except msgspec.DecodeError:
            return AppendFailed(f"append to {subject}: unreadable acknowledgement {msg.data[:80]!r}")
        if ack.error is not None:
            if ack.error.err_code in WRONG_LAST_SEQUENCE:
                expected = batch.expected[i] if batch.expected is not None else None
                return ConcurrencyConflict(subject, expected or 0, ack.error.description)
            return AppendFailed(f"append to {subject} refused: {ack.error.description}")
        if ack.duplicate:
            batch.duplicates.append(i)  # checked once every ack is in: is the stored one ours?
        return ack.seq
