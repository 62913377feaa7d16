"""The event store on NATS JetStream: append, replay, subscribe, object store.

Appends carry the event id as ``Nats-Msg-Id`` (a retried publish is stored once) and,
when the caller read the aggregate first, ``Nats-Expected-Last-Subject-Sequence``
(a stale read raises ``ConcurrencyConflict``). An aggregate's version is the stream
sequence of its last event (0 when it has none).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import AsyncIterator, Iterable, Sequence

import msgspec
import nats
import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js import api

from bus.appender import Appender
from bus.connection import Violations, cluster_size, first_refusal, open_connection
from bus.credentials import Credentials, resolve_credentials
from bus.errors import AppendFailed, BusError, BusForbidden, BusUnavailable, ObjectNotFound
from bus.names import BUCKETS, CLUSTER_REPLICAS, EVENTS_STREAM, REPLICAS_ENV, TELEMETRY_STREAM
from bus.server import NatsServer, ensure_server
from events import ConfigError, Event, decode, encode, headers_for, subject_for
from events.catalog import TELEMETRY_TYPES

__all__ = [
    "EventBus", "Listening", "ObjectRef", "StoredMessage", "choose_replicas", "default_home", "open_bus",
    "parse_object_uri",
]

SETUP_TIMEOUT_S = 30.0  # a cluster that is electing its JetStream leader answers 503 meanwhile
NO_SUITABLE_PEERS = 10005  # a cluster that has not met all its servers yet cannot place R3


class _NotYet(Exception):
    """The cluster cannot place the stream yet (its servers are still meeting)."""


def choose_replicas(servers: int, env: dict[str, str] | None = None) -> int:
    """The replicas of our streams and buckets: ``CYXWIZ_REPLICAS``, else 3 on a cluster
    (at most its size), else 1. Raises ``ConfigError`` for a value that cannot be used."""
    text = (os.environ if env is None else env).get(REPLICAS_ENV, "").strip()
    if not text:
        return min(CLUSTER_REPLICAS, servers) if servers > 1 else 1
    try:
        replicas = int(text)
    except ValueError:
        replicas = 0
    if not 1 <= replicas <= 5:
        raise ConfigError(f"{REPLICAS_ENV} must be an integer 1..5 (JetStream's limit), got {text!r}")
    if replicas > 1 and servers == 1:
        raise ConfigError(f"{REPLICAS_ENV}={replicas}, but NATS is a lone server (it names no other servers): "
                          f"it can keep 1 replica; set {REPLICAS_ENV}=1 or point CYXWIZ_NATS_URL at a cluster")
    return replicas



class StoredMessage(msgspec.Struct, frozen=True):
    """One message as the stream holds it; ``decode()`` raises ``events.InvalidEvent``."""

    seq: int
    subject: str
    data: bytes
    headers: dict[str, str] = msgspec.field(default_factory=dict)
    time_ns: int = 0  # when the stream stored it, nanoseconds since the epoch
    pending: int = 0  # messages of the consumer's filter still after this one when it was sent

    @property
    def time(self) -> datetime:
        return datetime.fromtimestamp(self.time_ns / 1e9, timezone.utc)

    def decode(self) -> Event:
        return decode(self.data)


@dataclass(frozen=True, slots=True)
class ObjectRef:
    bucket: str
    name: str
    sha256: str
    size: int

    @property
    def uri(self) -> str:
        return f"nats://{self.bucket}/{self.name}"


PUT_ONCE_WAIT_S = 15.0  # how long put_once tries a bucket that has no leader yet

class EventBus:
    def __init__(
        self, nc: nats.NATS, url: str, replicas: int = 1, telemetry_max_age_s: float = 86400.0,
        violations: Violations | None = None,
    ):
        self.nc = nc
        self.js = nc.jetstream()
        self.url = url
        self.replicas = replicas
        self.telemetry_max_age_s = telemetry_max_age_s
        self._buckets: dict[str, object] = {}
        self._appender = Appender(nc, url)
        self.violations = violations or Violations(None)
        self.violations.listeners.append(self._appender.refused)

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        timeout: float = 5.0,
        name: str = "cyxwiz",
        replicas: int | None = None,
        setup: bool = True,
        flush_linger_s: float = 0.0,
        credentials: Credentials | str | Path | None = None,
    ) -> "EventBus":
        """Connect within ``timeout`` seconds or raise ``BusUnavailable`` naming the URL
        (``BusUnauthorized`` when the server refuses the credentials).

        ``credentials``: a seed or ``.creds`` file, else ``$CYXWIZ_NATS_CREDS``, else none.
        ``replicas``: of the streams and buckets it creates; None: ``choose_replicas``.
        ``flush_linger_s``: let socket writes wait that long for more publishes (a busy
        server's appends share write syscalls; each round trip pays it)."""
        reason = await asyncio.to_thread(first_refusal, url, min(2.0, timeout))
        if reason:
            raise BusUnavailable(url, reason)  # nothing listens: say so now, not after the timeout
        creds = resolve_credentials(credentials)
        nc, violations = await open_connection(
            url, credentials=creds, name=name, timeout=timeout, flush_linger_s=flush_linger_s
        )
        try:
            replicas = choose_replicas(cluster_size(nc)) if replicas is None else replicas
        except ConfigError:
            await nc.close()
            raise
        bus = cls(nc, url, replicas=replicas, violations=violations)
        if setup:
            await bus.setup()
        return bus

    async def setup(self) -> None:
        """Create or update the streams and object store buckets (idempotent).

        Credentials whose role may not manage streams (a node, a publisher, a reader)
        skip it: central's own connection sets them up."""
        try:
            await self.violations.guard(self._setup())
        except BusForbidden:
            pass

    async def _setup(self) -> None:
        await self._ensure_stream(
            api.StreamConfig(
                name=EVENTS_STREAM,
                subjects=["events.>"],
                storage=api.StorageType.FILE,
                duplicate_window=120.0,
                num_replicas=self.replicas,
            )
        )
        await self._ensure_stream(
            api.StreamConfig(
                name=TELEMETRY_STREAM,
                subjects=["telemetry.>"],
                storage=api.StorageType.FILE,
                max_age=self.telemetry_max_age_s,
                duplicate_window=120.0,
                num_replicas=self.replicas,
            )
        )
        for bucket in BUCKETS:
            await self._bucket(bucket)

    async def _ensure_stream(self, config: api.StreamConfig) -> None:
        """Create or update the stream; a cluster without a JetStream leader for now
        (just started, or a server lost) answers 503, so ask again for a while."""
        deadline = asyncio.get_running_loop().time() + SETUP_TIMEOUT_S
        while True:
            try:
                try:
                    await self.js.add_stream(config)
                except nats.js.errors.BadRequestError as exc:
                    if exc.err_code == NO_SUITABLE_PEERS:
                        raise _NotYet() from exc
                    await self.js.update_stream(config)
                return
            except (_NotYet, nats.js.errors.ServiceUnavailableError, nats.errors.TimeoutError,
                    nats.errors.NoRespondersError) as exc:
                if asyncio.get_running_loop().time() > deadline:
                    why = (f"the cluster cannot place {config.num_replicas} replicas: fewer servers with JetStream "
                           f"are up than {REPLICAS_ENV}" if isinstance(exc, _NotYet)
                           else f"JetStream not available ({type(exc).__name__})")
                    raise BusUnavailable(self.url, f"stream {config.name}: {why}") from exc
                await asyncio.sleep(0.2)

    async def stream_replicas(self, stream: str = EVENTS_STREAM) -> tuple[int, str | None]:
        """The stream's configured replicas and the name of the server that leads it."""
        with self._nats_errors('stream info'):
            info = await self.violations.guard(self.js.stream_info(stream))
            return info.config.num_replicas or 1, info.cluster.leader if info.cluster else None

    async def close(self) -> None:
        if not self.nc.is_closed:
            try:
                await self.nc.drain()
            except (nats.errors.Error, asyncio.TimeoutError):
                await self.nc.close()

    # --- appending ---------------------------------------------------------------------

    async def append(self, event: Event, expected_version: int | None = None) -> int:
        """Append one event; returns its stream sequence (the original's if a duplicate).

        Raises ``ConcurrencyConflict`` when ``expected_version`` is stale."""
        (result,) = await self._appender.append([event], [expected_version], timeout=5.0)
        if isinstance(result, BusError):
            raise result
        return result

    async def append_many(self, events: Iterable[Event]) -> list[int]:
        """Append many events pipelined, every ack checked; their sequences in order.

        Raises ``AppendFailed`` if any append failed; appends are idempotent by event id,
        so the caller may retry the whole batch. ``BusForbidden`` if the credentials may
        not append (a retry cannot help).
        """
        results = await self._appender.append(list(events))
        failed = [r for r in results if isinstance(r, BusError)]
        for error in failed:
            if isinstance(error, BusForbidden):
                raise error
        if failed:
            raise AppendFailed(f"{len(failed)} of {len(results)} appends failed: {failed[0]}")
        return results  # type: ignore[return-value]

    async def append_each(
        self, events: Sequence[Event], expected_versions: Sequence[int | None] | None = None
    ) -> list[int | BusError]:
        """Append pipelined, each at its own expected version; per event its sequence or
        the error that refused it (``ConcurrencyConflict``, ``AppendFailed``)."""
        return await self._appender.append(events, expected_versions)

    async def publish_telemetry(self, event: Event) -> None:
        """Fire-and-forget telemetry (heartbeats); loss of one sample is acceptable."""
        if type(event).__name__ not in TELEMETRY_TYPES:
            raise ValueError(f"{type(event).__name__} is not telemetry")
        with self._nats_errors("telemetry publish"):
            await self.nc.publish(subject_for(event), encode(event), headers=headers_for(event))

    # --- reading -----------------------------------------------------------------------

    @contextlib.contextmanager
    def _nats_errors(self, what: str):
        """NATS's own errors of ``what`` as ours (``BusUnavailable``), at this edge, so no
        caller meets a nats-py error (the ones a method expects are handled inside it)."""
        try:
            yield
        except (nats.errors.Error, asyncio.TimeoutError) as exc:
            raise BusUnavailable(self.url, f"{what}: {type(exc).__name__}") from exc

    async def last_sequence(self, stream: str = EVENTS_STREAM) -> int:
        with self._nats_errors('stream info'):
            info = await self.violations.guard(self.js.stream_info(stream))
            return info.state.last_seq

    async def subject_version(self, subject: str) -> int:
        """The stream sequence of the last message on ``subject`` (0 if none)."""
        with self._nats_errors('last message of a subject'):
            try:
                msg = await self.violations.guard(self.js.get_last_msg(EVENTS_STREAM, subject))
            except nats.js.errors.NotFoundError:
                return 0
            return msg.seq

    async def subjects(self, pattern: str, stream: str = EVENTS_STREAM) -> list[str]:
        """The subjects matching ``pattern`` (NATS wildcards) that hold messages in ``stream``."""
        with self._nats_errors('subjects of a stream'):
            info = await self.violations.guard(self.js.stream_info(stream, subjects_filter=pattern))
            return sorted((info.state.subjects or {}).keys())

    async def read(
        self, start_seq: int = 1, *, until_seq: int | None = None, subjects: str = "events.>"
    ) -> AsyncIterator[StoredMessage]:
        """Every message from ``start_seq`` up to the end of the stream as it is now."""
        async for batch in self.read_batches(start_seq, until_seq=until_seq, subjects=subjects):
            for msg in batch:
                yield msg

    async def read_batches(
        self, start_seq: int = 1, *, until_seq: int | None = None, subjects: str = "events.>", max_batch: int = 5000
    ) -> AsyncIterator[list[StoredMessage]]:
        """Like ``read``, in lists of up to ``max_batch`` messages as they arrive.

        Ends at ``until_seq`` (default: the stream's last sequence now), or as soon as
        the consumer has nothing pending, so a filter that matches no later message
        ends too instead of waiting for one.
        """
        end = until_seq if until_seq is not None else await self.last_sequence(_stream_of(subjects))
        if end < start_seq:
            return
        async for batch in self._consume(start_seq, subjects, max_batch, until_caught_up=True):
            if batch[-1].seq >= end:
                yield [m for m in batch if m.seq <= end]
                return
            yield batch
            if batch[-1].pending == 0:
                return

    async def subscribe(self, start_seq: int = 1, *, subjects: str = "events.>") -> AsyncIterator[StoredMessage]:
        """Every message from ``start_seq`` on, then live, forever (cancel to stop)."""
        async for batch in self.subscribe_batches(start_seq, subjects=subjects):
            for msg in batch:
                yield msg

    async def subscribe_batches(
        self, start_seq: int = 1, *, subjects: str = "events.>", max_batch: int = 5000
    ) -> AsyncIterator[list[StoredMessage]]:
        """Every message from ``start_seq`` on, then live, in lists of what has arrived."""
        async for batch in self._consume(start_seq, subjects, max_batch, until_caught_up=False):
            yield batch

    async def _consume(
        self, start_seq: int, subjects: str, max_batch: int, *, until_caught_up: bool
    ) -> AsyncIterator[list[StoredMessage]]:
        """An ordered push consumer delivers into a buffer from a callback; the iterator
        hands out what has accumulated, so a fast replay costs one wake-up per batch."""
        buffer: list[StoredMessage] = []
        arrived = asyncio.Event()

        async def on_message(msg) -> None:
            seq, time_ns, pending = _reply_fields(msg.reply)
            buffer.append(StoredMessage(seq, msg.subject, msg.data, msg.headers or {}, time_ns, pending))
            arrived.set()

        with self._nats_errors('read the stream'):
            sub = await self.violations.guard(self.js.subscribe(
                subjects,
                stream=_stream_of(subjects),
                cb=on_message,
                ordered_consumer=True,
                deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE,
                config=api.ConsumerConfig(opt_start_seq=max(1, start_seq)),
                pending_msgs_limit=1_000_000,
                pending_bytes_limit=1024 * 1024 * 1024,
            ))
        try:
            if until_caught_up:
                with self._nats_errors('read the stream'):
                    info = await self.violations.guard(sub.consumer_info())
                if info.num_pending == 0 and not info.delivered.consumer_seq and not buffer:
                    return  # nothing matches from start_seq on
            while True:
                await arrived.wait()
                arrived.clear()
                while buffer:
                    batch, buffer[:] = buffer[:max_batch], buffer[max_batch:]
                    yield batch
        finally:
            try:
                await sub.unsubscribe()
            except nats.errors.Error:
                pass

    # --- live subjects and the key-value store ------------------------------------------

    async def listen(self, subject: str, on_message) -> "Listening":
        """Call ``on_message(subject)`` for every live message on ``subject`` (no replay;
        for telemetry that only needs to be seen). Raises ``BusError``."""

        async def deliver(msg) -> None:
            on_message(msg.subject)

        try:
            return Listening(await self.nc.subscribe(subject, cb=deliver))
        except nats.errors.Error as exc:
            raise BusUnavailable(self.url, f"cannot listen on {subject}: {exc}") from exc

    async def put_once(self, bucket: str, key: str, value: bytes) -> bytes:
        """Store ``value`` under ``key`` unless a value is there already; return the one
        that is (every caller sees the first value ever stored). Raises ``BusError``.

        A bucket just made on a cluster has no stream leader for a moment (its writes get
        no answer): those are tried again for up to ``PUT_ONCE_WAIT_S``."""
        deadline = asyncio.get_running_loop().time() + PUT_ONCE_WAIT_S
        while True:
            try:
                return await self._put_once(bucket, key, value)
            except (nats.js.errors.NoStreamResponseError, nats.errors.NoRespondersError, nats.errors.TimeoutError,
                    asyncio.TimeoutError) as exc:
                if asyncio.get_running_loop().time() > deadline:
                    raise BusUnavailable(self.url, f"key {key!r} in {bucket}: {type(exc).__name__}") from exc
                await asyncio.sleep(0.2)
            except nats.errors.Error as exc:
                raise BusUnavailable(self.url, f"key {key!r} in {bucket}: {type(exc).__name__}") from exc

    async def _put_once(self, bucket: str, key: str, value: bytes) -> bytes:
        try:
            kv = await self.js.key_value(bucket)
        except nats.js.errors.BucketNotFoundError:
            try:
                kv = await self.js.create_key_value(bucket=bucket, history=1, replicas=self.replicas)
            except nats.js.errors.BadRequestError:  # created meanwhile by another process
                kv = await self.js.key_value(bucket)
        try:
            await kv.create(key, value)  # a retry after a lost answer finds our own value: the same result
            return value
        except nats.js.errors.KeyWrongLastSequenceError:
            return (await kv.get(key)).value

    # --- object store ------------------------------------------------------------------

    async def _bucket(self, bucket: str):
        store = self._buckets.get(bucket)
        if store is None:
            try:
                store = await self.violations.guard(self.js.object_store(bucket))
            except nats.js.errors.BucketNotFoundError:
                store = await self.violations.guard(self.js.create_object_store(
                    bucket, config=api.ObjectStoreConfig(bucket=bucket, storage=api.StorageType.FILE, replicas=self.replicas)
                ))
            self._buckets[bucket] = store
        return store

    async def put_object(self, bucket: str, name: str, data: bytes) -> ObjectRef:
        with self._nats_errors('object put'):
            store = await self._bucket(bucket)
            await self.violations.guard(store.put(name, data))
            return ObjectRef(bucket=bucket, name=name, sha256=hashlib.sha256(data).hexdigest(), size=len(data))

    async def get_object(self, bucket: str, name: str) -> bytes:
        with self._nats_errors('object get'):
            store = await self._bucket(bucket)
            try:
                result = await self.violations.guard(store.get(name))
            except (nats.js.errors.ObjectNotFoundError, nats.js.errors.NotFoundError, nats.js.errors.ObjectDeletedError) as exc:
                raise ObjectNotFound(bucket, name) from exc
            return result.data

    async def object_sha256(self, bucket: str, name: str) -> str:
        """The SHA-256 (hex) the object store holds for an object, read without its
        contents: a re-uploaded object has a new one. Raises ``ObjectNotFound``, ``BusError``."""
        with self._nats_errors('object info'):
            store = await self._bucket(bucket)
            try:
                info = await self.violations.guard(store.get_info(name))
            except (nats.js.errors.ObjectNotFoundError, nats.js.errors.NotFoundError, nats.js.errors.ObjectDeletedError) as exc:
                raise ObjectNotFound(bucket, name) from exc
            return base64.urlsafe_b64decode(info.digest.partition("=")[2]).hex()  # "SHA-256=<base64url>"

    async def list_objects(self, bucket: str) -> list[str]:
        with self._nats_errors('object list'):
            store = await self._bucket(bucket)
            try:
                infos = await self.violations.guard(store.list())
            except nats.js.errors.NotFoundError:
                return []
            return [info.name for info in infos if not info.deleted]


class Listening:
    """A live subscription of ``EventBus.listen``; ``stop()`` ends it (never raises)."""

    def __init__(self, sub) -> None:
        self._sub = sub

    async def stop(self) -> None:
        try:
            await self._sub.unsubscribe()
        except nats.errors.Error:
            pass  # the connection is gone already: so is the subscription


def _reply_fields(reply: str) -> tuple[int, int, int]:
    """Stream sequence, store time and pending count from a JetStream reply subject.

    v1: $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ns>.<pending>
    v2: $JS.ACK.<domain>.<account>.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ns>.<pending>[.<token>]
    """
    tokens = reply.split(".")
    if len(tokens) == 9:
        return int(tokens[5]), int(tokens[7]), int(tokens[8])
    return int(tokens[Msg.Ack.StreamSeq]), int(tokens[Msg.Ack.Timestamp]), int(tokens[Msg.Ack.NumPending])


def _stream_of(subjects: str) -> str:
    return EVENTS_STREAM if subjects.startswith("events") else TELEMETRY_STREAM


def parse_object_uri(uri: str) -> tuple[str, str]:
    """``nats://bucket/name`` -> (bucket, name)."""
    if not uri.startswith("nats://") or "/" not in uri[7:]:
        raise ValueError(f"not an object URI: {uri!r} (expected nats://<bucket>/<name>)")
    bucket, _, name = uri[7:].partition("/")
    return bucket, name


def default_home() -> Path:
    return Path(os.environ.get("CYXWIZ_HOME", ".cyxwiz"))


async def open_bus(
    url: str | None = None,
    *,
    home: Path | None = None,
    embedded: bool = True,
    timeout: float = 5.0,
    flush_linger_s: float = 0.0,
    credentials: str | Path | None = None,
    role: str = "central",
) -> tuple[EventBus, NatsServer | None]:
    """Connect to ``url``, else ``$CYXWIZ_NATS_URL``, else the embedded server of ``home``.

    Credentials: ``credentials``, else ``$CYXWIZ_NATS_CREDS``, else ``role``'s seed of
    the home's embedded server (our own processes on central's machine). Returns the bus
    and the embedded server (None when an external URL was used).
    """
    url = url or os.environ.get("CYXWIZ_NATS_URL") or None
    home = home or default_home()
    server = None
    if url is None:
        if not embedded:
            raise BusUnavailable("(none)", "no NATS URL given: set CYXWIZ_NATS_URL or --nats")
        server = await asyncio.to_thread(ensure_server, home)
        url = server.url
    creds = resolve_credentials(credentials, store_dir=Path(home) / "nats", role=role)
    bus = await EventBus.connect(url, timeout=timeout, flush_linger_s=flush_linger_s, credentials=creds)
    return bus, server
