"""Shared fixtures: a real nats-server per test on a free port, with its own store and
its nkey users (``bus.credentials``). The test, and every process it starts, connects
as central (``CYXWIZ_NATS_CREDS``) unless it picks another role's seed."""

from __future__ import annotations

import os

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")  # before gRPC is imported (why: protos/__init__.py)

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# the servers of most tests fsync lazily (nats-server's default): no test cuts the power, and
# an fsync per write on a shared 2-core VM's disk slows every test; the cluster tests
# (test_cluster*.py) run ours, sync_interval: always (bus.server.SYNC_INTERVAL)
os.environ.setdefault("CYXWIZ_NATS_SYNC", "default")

from bus import CREDS_ENV, EventBus, start_server  # noqa: E402


@pytest.fixture
def nats_server(tmp_path, monkeypatch):
    server = start_server(tmp_path / "nats", port=0)
    monkeypatch.setenv(CREDS_ENV, str(server.seed("central")))
    yield server
    server.kill()


@pytest.fixture
async def bus(nats_server):
    event_bus = await EventBus.connect(nats_server.url)
    yield event_bus
    await event_bus.close()


def pytest_collection_modifyitems(items):
    """The long end-to-end tests (marked slow) first: two workers then end together
    instead of one running the README's test alone at the end of the suite."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
