"""The NATS JetStream adapter: embedded server, streams, append, replay, object store.

    bus, server = await open_bus()          # $CYXWIZ_NATS_URL or the embedded server
                                            # as $CYXWIZ_NATS_CREDS, else the home's central seed
    seq = await bus.append(JobSubmitted(...))
    async for msg in bus.read(1): ...
"""

from bus.credentials import CREDS_ENV, ROLES, Credentials, credentials_from_file, resolve_credentials
from bus.errors import (
    AppendFailed, BusError, BusForbidden, BusUnauthorized, BusUnavailable, ConcurrencyConflict, CredentialsError,
    ObjectNotFound,
)
from bus.eventbus import (
    BUCKETS,
    EVENTS_STREAM,
    TELEMETRY_STREAM,
    EventBus,
    ObjectRef,
    StoredMessage,
    default_home,
    open_bus,
    parse_object_uri,
)
from bus.server import NatsServer, ensure_server, start_server

__all__ = [
    "AppendFailed",
    "BUCKETS",
    "BusError",
    "BusForbidden",
    "BusUnauthorized",
    "BusUnavailable",
    "CREDS_ENV",
    "ConcurrencyConflict",
    "Credentials",
    "CredentialsError",
    "EVENTS_STREAM",
    "EventBus",
    "NatsServer",
    "ObjectNotFound",
    "ObjectRef",
    "ROLES",
    "StoredMessage",
    "TELEMETRY_STREAM",
    "credentials_from_file",
    "default_home",
    "ensure_server",
    "open_bus",
    "parse_object_uri",
    "resolve_credentials",
    "start_server",
]
