"""JSON encoding of events, subjects and headers, and upcasting of old schema versions.

Pure functions, no I/O. ``decode`` never guesses: bytes that are not a valid event raise
``InvalidEvent`` with a one-line reason that names the field and the problem.
"""

from __future__ import annotations

import re
from typing import Any, Callable

import msgspec

from events.errors import CyxwizError

from events.catalog import (
    EVENT_TYPES,
    SCHEMA_VERSIONS,
    TELEMETRY_TYPES,
    Event,
    DeploymentEvent,
    JobEvent,
    NodeEvent,
)

EVENT_TYPE_HEADER = "Cyxwiz-Event-Type"
MSG_ID_HEADER = "Nats-Msg-Id"
EXPECTED_SEQ_HEADER = "Nats-Expected-Last-Subject-Sequence"


class InvalidEvent(CyxwizError, ValueError):
    """Bytes or data that do not form a valid event of the catalog."""

    code = 400


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Event)

# (type name, version it upgrades from) -> function rewriting the raw dict to version+1
Upcaster = Callable[[dict[str, Any]], dict[str, Any]]
UPCASTERS: dict[tuple[str, int], Upcaster] = {}


def register_upcaster(type_name: str, from_version: int) -> Callable[[Upcaster], Upcaster]:
    def wrap(fn: Upcaster) -> Upcaster:
        UPCASTERS[(type_name, from_version)] = fn
        return fn

    return wrap


def encode(event: Event) -> bytes:
    return _encoder.encode(event)


def decode(data: bytes) -> Event:
    """Decode one event, upcasting it first when it was written by an older schema."""
    try:
        event = _decoder.decode(data)
    except msgspec.ValidationError as exc:
        raw = _raw_or_none(data)
        if raw is not None and _needs_upcast(raw):
            return from_dict(upcast(raw))
        raise InvalidEvent(_explain(exc, raw)) from exc
    except msgspec.DecodeError as exc:
        raise InvalidEvent(f"not valid JSON: {exc}") from exc
    if event.schema_version < SCHEMA_VERSIONS[type(event).__name__]:
        return from_dict(upcast(msgspec.json.decode(data)))
    return event


def decode_json(data: bytes) -> tuple[Event, str]:
    """``decode``, and the event's JSON at the current schema: the bytes as they are for
    a type still at schema version 1 (nothing to upcast; no second encoding), else the
    event encoded again after any upcast."""
    event = decode(data)
    if SCHEMA_VERSIONS[type(event).__name__] == 1:
        try:
            return event, data.decode()
        except UnicodeDecodeError:
            pass
    return event, encode(event).decode()


def from_dict(data: dict[str, Any]) -> Event:
    """Build an event from plain data (a script's JSON), checking every field."""
    if not isinstance(data, dict):
        raise InvalidEvent(f"an event must be a JSON object, got {type(data).__name__}")
    try:
        return msgspec.convert(data, Event, strict=False)
    except msgspec.ValidationError as exc:
        raise InvalidEvent(_explain(exc, data)) from exc


def build(type_name: str, data: dict[str, Any]) -> Event:
    """Build an event of a named type from plain data, e.g. for ``cyxwiz events publish``."""
    if type_name not in EVENT_TYPES:
        known = ", ".join(sorted(EVENT_TYPES))
        raise InvalidEvent(f"unknown event type {type_name!r}; known types: {known}")
    if not isinstance(data, dict):
        raise InvalidEvent(f"event data must be a JSON object, got {type(data).__name__}")
    return from_dict({**data, "type": type_name})


def to_builtins(event: Event) -> dict[str, Any]:
    return msgspec.to_builtins(event)


def upcast(raw: dict[str, Any]) -> dict[str, Any]:
    type_name = raw.get("type")
    version = int(raw.get("schema_version", 1))
    current = SCHEMA_VERSIONS.get(type_name, 1)
    while version < current:
        step = UPCASTERS.get((type_name, version))
        if step is None:
            raise InvalidEvent(f"{type_name} schema_version {version} has no upcaster to {version + 1}")
        raw = step(dict(raw))
        version += 1
        raw["schema_version"] = version
    return raw


def aggregate_id(event: Event) -> str:
    if isinstance(event, JobEvent):
        return event.job_id
    if isinstance(event, NodeEvent):
        return event.node_id
    if isinstance(event, DeploymentEvent):
        return event.deployment_id
    raise TypeError(f"{type(event).__name__} belongs to no aggregate")


def subject_for(event: Event) -> str:
    """``events.job.<id>``, ``events.node.<id>``, or ``telemetry.node.<id>``."""
    name = type(event).__name__
    if isinstance(event, DeploymentEvent):
        kind = "telemetry" if name in TELEMETRY_TYPES else "events"
        return f"{kind}.deployment.{_token(event.deployment_id)}"
    if name in TELEMETRY_TYPES:
        return f"telemetry.node.{_token(event.node_id)}"
    if isinstance(event, JobEvent):
        return f"events.job.{_token(event.job_id)}"
    return f"events.node.{_token(event.node_id)}"


def misplaced(event: Event, subject: str) -> str | None:
    """Why ``event`` does not belong on ``subject`` (None when it does). An event whose
    payload names another aggregate than its subject is an anomaly for every consumer:
    folding it would change one aggregate while versioning another."""
    if _on_its_subject(event, subject):
        return None
    try:
        expected = subject_for(event)  # the exact check; raises for an id no subject can hold
    except InvalidEvent as exc:
        return str(exc)
    if expected == subject:
        return None
    return f"{type(event).__name__} belongs on subject {expected}, not {subject}"


def _on_its_subject(event: Event, subject: str) -> bool:
    """The common case of ``subject_for(event) == subject``, cheaply (a subject from NATS
    holds no whitespace, so only the characters a token forbids need a look)."""
    if isinstance(event, JobEvent):
        aggregate, prefix = event.job_id, "events.job."
    elif isinstance(event, DeploymentEvent):
        aggregate = event.deployment_id
        prefix = "telemetry.deployment." if type(event).__name__ in TELEMETRY_TYPES else "events.deployment."
    else:
        aggregate = event.node_id
        prefix = "telemetry.node." if type(event).__name__ in TELEMETRY_TYPES else "events.node."
    return (subject.startswith(prefix) and subject[len(prefix):] == aggregate and aggregate != ""
            and "." not in aggregate and "*" not in aggregate and ">" not in aggregate)


def job_subject(job_id: str) -> str:
    return f"events.job.{_token(job_id)}"


def node_subject(node_id: str) -> str:
    return f"events.node.{_token(node_id)}"


def headers_for(event: Event, expected_last_seq: int | None = None) -> dict[str, str]:
    headers = {MSG_ID_HEADER: event.event_id, EVENT_TYPE_HEADER: type(event).__name__}
    if expected_last_seq is not None:
        headers[EXPECTED_SEQ_HEADER] = str(expected_last_seq)
    return headers


_FORBIDDEN_IN_TOKEN = re.compile(r"[.*>\s]")


def _token(aggregate: str) -> str:
    """An id as one subject token: NATS forbids '.', '*', '>' and whitespace in tokens."""
    if _FORBIDDEN_IN_TOKEN.search(aggregate) is None and aggregate:
        return aggregate
    if not aggregate:
        raise InvalidEvent("aggregate id must not be empty")
    bad = "".join(sorted(set(_FORBIDDEN_IN_TOKEN.findall(aggregate))))
    raise InvalidEvent(f"id {aggregate!r} contains {bad!r}; use letters, digits, '-' or '_'")


def _needs_upcast(raw: dict[str, Any]) -> bool:
    type_name = raw.get("type")
    version = raw.get("schema_version", 1)
    return isinstance(version, int) and version < SCHEMA_VERSIONS.get(type_name, 1)


def _raw_or_none(data: bytes) -> dict[str, Any] | None:
    try:
        raw = msgspec.json.decode(data)
    except msgspec.DecodeError:
        return None
    return raw if isinstance(raw, dict) else None


def _explain(exc: msgspec.ValidationError, raw: Any) -> str:
    if isinstance(raw, dict):
        type_name = raw.get("type")
        if type_name is None:
            return "missing field 'type' (the event type, e.g. 'JobSubmitted')"
        if type_name not in EVENT_TYPES:
            return f"unknown event type {type_name!r}"
        return f"{type_name}: {exc}"
    return str(exc)
